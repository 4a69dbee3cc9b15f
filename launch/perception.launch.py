"""Starts the perception node on a stereo camera: `ros2 launch cups_ros perception.launch.py`.

    ros2 launch cups_ros perception.launch.py namespace:=front model_path:=/models/cups.onnx \
        backend:=onnxruntime left_image:=/stereo/left/image_rect_color use_sim_time:=true

The node reads config_file (default: the package's config/perception.yaml); a topic, model path or
backend argument given here overrides the file, an empty one (the default) leaves the file's value.

online_learning:=true also starts online learning beside it, in the same namespace: the
pseudo_label_node (live stereo -> pseudo-labels -> replay buffer) and the self_training_node (training
rounds on the buffer -> better models to the model store), both reading online_config_file (default:
the package's config/online_learning.yaml). The perception node then follows the model store the
self-training node publishes to (its model_store parameter is set to that folder):

    ros2 launch cups_ros perception.launch.py online_learning:=true model_path:=/models/cups.pt \
        fit:=/data/pseudo_labels online_dir:=/var/cups_ros/online

fit sets online.labeller.fit (the offline pseudo-label fit); online_dir sets online.buffer_dir to
online_dir/buffer and online.store_dir to online_dir/models; model_path is also the self-training
node's online.initial_model (the model trained from while the store is empty). Empty ones leave the
online config file's values.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import DeclareLaunchArgument, OpaqueFunction
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
# Parameters the launch file sets on the online-learning nodes (both have them all).
FIT_PARAMETER = "online.labeller.fit"
BUFFER_DIR_PARAMETER = "online.buffer_dir"
STORE_DIR_PARAMETER = "online.store_dir"
INITIAL_MODEL_PARAMETER = "online.initial_model"
# The perception node's parameter that follows the self-training node's store.
MODEL_STORE_PARAMETER = "model_store"
# OnlineLearningConfig.store_dir's default, for an online config file that does not set it.
DEFAULT_STORE_DIR = "online/models"
SELF_TRAINING_NAME = "self_training"

TRUE_WORDS = ("true", "1", "yes", "on")


def _file_parameter(path, node_name, namespace, dotted_name):
    """The value an rcl parameter file gives ``namespace/node_name`` for ``dotted_name`` (None if it
    sets none): sections /** first, then the ones naming the node, later ones winning, as rcl reads
    them; keys may be nested or dotted."""
    with open(path) as stream:
        document = yaml.safe_load(stream) or {}
    qualified = f"/{namespace.strip('/')}/{node_name}" if namespace.strip("/") else f"/{node_name}"
    sections = ("/**", f"/**/{node_name}", node_name, qualified.lstrip("/"), qualified)
    found = None
    for section in sections:
        parameters = (document.get(section) or {}).get("ros__parameters") or {}
        if dotted_name in parameters:
            found = parameters[dotted_name]
            continue
        value = parameters
        for part in dotted_name.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None:
            found = value
    return found


def launch_nodes(context, *args, **kwargs):
    """The nodes with the arguments resolved: empty ones must not override the parameter files."""

    namespace = LaunchConfiguration("namespace").perform(context)
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() in TRUE_WORDS
    online_learning = LaunchConfiguration("online_learning").perform(context).lower() in TRUE_WORDS
    overrides = {}
    for name, parameter in PARAMETER_ARGUMENTS.items():
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[parameter] = value

    online_overrides = {}
    if online_learning:
        online_config = LaunchConfiguration("online_config_file").perform(context)
        fit = LaunchConfiguration("fit").perform(context)
        online_dir = LaunchConfiguration("online_dir").perform(context)
        model_path = LaunchConfiguration("model_path").perform(context)
        if fit:
            online_overrides[FIT_PARAMETER] = fit
        if online_dir:
            online_overrides[BUFFER_DIR_PARAMETER] = os.path.join(online_dir, "buffer")
            online_overrides[STORE_DIR_PARAMETER] = os.path.join(online_dir, "models")
        if model_path:
            online_overrides[INITIAL_MODEL_PARAMETER] = model_path
        store_dir = online_overrides.get(STORE_DIR_PARAMETER) or _file_parameter(
            online_config, SELF_TRAINING_NAME, namespace, STORE_DIR_PARAMETER
        )
        overrides[MODEL_STORE_PARAMETER] = str(store_dir or DEFAULT_STORE_DIR)

    nodes = [
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
    if online_learning:
        nodes += [
            Node(
                package=PACKAGE,
                executable="pseudo_label_node",
                name="pseudo_label",
                namespace=LaunchConfiguration("namespace"),
                parameters=[
                    LaunchConfiguration("online_config_file"),
                    {**online_overrides, "use_sim_time": use_sim_time},
                ],
                output="screen",
                emulate_tty=True,
            ),
            Node(
                package=PACKAGE,
                executable="self_training_node",
                name=SELF_TRAINING_NAME,
                namespace=LaunchConfiguration("namespace"),
                parameters=[
                    LaunchConfiguration("online_config_file"),
                    {**online_overrides, "use_sim_time": use_sim_time},
                ],
                output="screen",
                emulate_tty=True,
            ),
        ]
    return nodes


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    default_config = os.path.join(share, "config", "perception.yaml")
    default_online_config = os.path.join(share, "config", "online_learning.yaml")
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
            DeclareLaunchArgument(
                "model_path",
                default_value="",
                description=".pt, .onnx or .engine model (with online learning also the initial model)",
            ),
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
                description="also run online pseudo-labelling and self-training; perception follows "
                "their model store",
            ),
            DeclareLaunchArgument(
                "online_config_file",
                default_value=default_online_config,
                description="ROS 2 parameter file of the pseudo-label and self-training nodes",
            ),
            DeclareLaunchArgument(
                "fit",
                default_value="",
                description="pseudo-label fit folder (online.labeller.fit; empty: the online config file's)",
            ),
            DeclareLaunchArgument(
                "online_dir",
                default_value="",
                description="folder of the replay buffer (buffer/) and model store (models/); "
                "empty: the online config file's",
            ),
            OpaqueFunction(function=launch_nodes),
        ]
    )
