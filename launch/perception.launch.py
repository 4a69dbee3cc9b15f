"""Starts the perception node on a stereo camera: `ros2 launch cups_ros perception.launch.py`.

    ros2 launch cups_ros perception.launch.py namespace:=front model_path:=/models/cups.onnx \
        backend:=onnxruntime left_image:=/stereo/left/image_rect_color use_sim_time:=true

The node reads config_file (default: the package's config/perception.yaml); a topic, model path or
backend argument given here overrides the file, an empty one (the default) leaves the file's value.
online_learning:=true also starts the online pseudo-labelling and self-training nodes (placeholders:
those executables arrive with the online-learning stage and do not exist yet).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.launch_description import LaunchDescription
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "cups_ros"

# Launch argument -> the perception node parameter it sets when not empty.
PARAMETER_ARGUMENTS = {
    "left_image": "topics.left_image",
    "right_image": "topics.right_image",
    "left_info": "topics.left_info",
    "right_info": "topics.right_info",
    "model_path": "perception.model.path",
    "backend": "perception.model.backend",
}

TRUE_WORDS = ("true", "1", "yes", "on")


def perception_node(context, *args, **kwargs):
    """The node with the arguments resolved: empty ones must not override the config file."""
    overrides = {}
    for argument, parameter in PARAMETER_ARGUMENTS.items():
        value = LaunchConfiguration(argument).perform(context)
        if value:
            overrides[parameter] = value
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in TRUE_WORDS
    return [
        Node(
            package=PACKAGE,
            executable="perception_node",
            name="perception",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("config_file"), {**overrides, "use_sim_time": use_sim_time}],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    default_config = os.path.join(get_package_share_directory(PACKAGE), "config", "perception.yaml")
    online_learning = IfCondition(LaunchConfiguration("online_learning"))
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "namespace", default_value="", description="namespace of the nodes and outputs"
            ),
            DeclareLaunchArgument(
                "config_file",
                default_value=default_config,
                description="ROS 2 parameter file of the perception node",
            ),
            DeclareLaunchArgument("left_image", default_value="", description="left rectified image topic"),
            DeclareLaunchArgument("right_image", default_value="", description="right rectified image topic"),
            DeclareLaunchArgument("left_info", default_value="", description="left CameraInfo topic"),
            DeclareLaunchArgument("right_info", default_value="", description="right CameraInfo topic"),
            DeclareLaunchArgument("model_path", default_value="", description=".pt, .onnx or .engine model"),
            DeclareLaunchArgument(
                "backend",
                default_value="",
                description="torch | onnxruntime | tensorrt (empty: the config file's)",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", description="follow /clock (bag replay)"
            ),
            DeclareLaunchArgument(
                "online_learning",
                default_value="false",
                choices=["true", "false"],
                description="also run online pseudo-labelling and self-training (not available yet)",
            ),
            OpaqueFunction(function=perception_node),
            # Placeholders for the online-learning stage: these executables do not exist yet.
            Node(
                package=PACKAGE,
                executable="pseudo_label_node",
                name="pseudo_label",
                namespace=LaunchConfiguration("namespace"),
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                output="screen",
                condition=online_learning,
            ),
            Node(
                package=PACKAGE,
                executable="self_training_node",
                name="self_training",
                namespace=LaunchConfiguration("namespace"),
                parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
                output="screen",
                condition=online_learning,
            ),
        ]
    )
