"""vision_msgs 4.x message definitions for rosbags, whose type stores do not ship vision_msgs.

The texts are the field lines of ros-perception/vision_msgs 4.1 (the ROS 2 Humble and Jazzy release)
without the comments; comments do not change the CDR layout nor the RIHS01 type hash, so bags written
with these definitions carry the same types and hashes as bags recorded from real vision_msgs topics.

Base store: ROS 2 Humble. Humble is the LTS release most vehicles run; the message types this project
reads and writes (std_msgs, sensor_msgs, stereo_msgs, geometry_msgs, vision_msgs 4.1) have identical
definitions in Humble and Jazzy, so bags written with this store play on both.
"""

from __future__ import annotations

import functools

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

BASE_STORE = Stores.ROS2_HUMBLE

# Message name -> .msg text; relative type names resolve inside vision_msgs, as in rosidl.
VISION_MSGS_DEFINITIONS: dict[str, str] = {
    "vision_msgs/msg/Point2D": "float64 x\nfloat64 y\n",
    "vision_msgs/msg/Pose2D": "vision_msgs/Point2D position\nfloat64 theta\n",
    "vision_msgs/msg/BoundingBox2D": "vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n",
    "vision_msgs/msg/BoundingBox2DArray": "std_msgs/Header header\nBoundingBox2D[] boxes\n",
    "vision_msgs/msg/BoundingBox3D": "geometry_msgs/Pose center\ngeometry_msgs/Vector3 size\n",
    "vision_msgs/msg/BoundingBox3DArray": "std_msgs/Header header\nBoundingBox3D[] boxes\n",
    "vision_msgs/msg/ObjectHypothesis": "string class_id\nfloat64 score\n",
    "vision_msgs/msg/ObjectHypothesisWithPose": (
        "ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n"
    ),
    "vision_msgs/msg/Classification": "std_msgs/Header header\nObjectHypothesis[] results\n",
    "vision_msgs/msg/Detection2D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox2D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection2DArray": "std_msgs/Header header\nDetection2D[] detections\n",
    "vision_msgs/msg/Detection3D": (
        "std_msgs/Header header\nObjectHypothesisWithPose[] results\nBoundingBox3D bbox\nstring id\n"
    ),
    "vision_msgs/msg/Detection3DArray": "std_msgs/Header header\nDetection3D[] detections\n",
    "vision_msgs/msg/VisionClass": "uint16 class_id\nstring class_name\n",
    "vision_msgs/msg/LabelInfo": "std_msgs/Header header\nVisionClass[] class_map\nfloat32 threshold\n",
    "vision_msgs/msg/VisionInfo": (
        "std_msgs/Header header\nstring method\nstring database_location\nint32 database_version\n"
    ),
}


def register_vision_msgs(store: Typestore) -> None:
    """Adds the vision_msgs types to ``store`` (idempotent: same definitions register again fine)."""
    types = {}
    for name, text in VISION_MSGS_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)


@functools.cache
def typestore() -> Typestore:
    """The project's one type store: ROS 2 Humble plus vision_msgs (built once, then shared)."""
    store = get_typestore(BASE_STORE)
    register_vision_msgs(store)
    return store
