"""ROS 2 at the edge of the pipeline: bags (rosbags) and message conversions (rosbags and rclpy)."""

from cups_ros.io.bag import (
    BagError,
    BagSummary,
    BagWriter,
    StereoBagReader,
    StereoInputConfig,
    StereoSynchronizer,
    StereoTopics,
    SyncReport,
    TopicSummary,
    bag_summary,
    open_bag,
    read_stereo_bag,
    write_stereo_bag,
)
from cups_ros.io.messages import MessageConversionError, MessageTypes
from cups_ros.io.vision_msgs import typestore

__all__ = [
    "BagError",
    "BagSummary",
    "BagWriter",
    "MessageConversionError",
    "MessageTypes",
    "StereoBagReader",
    "StereoInputConfig",
    "StereoSynchronizer",
    "StereoTopics",
    "SyncReport",
    "TopicSummary",
    "bag_summary",
    "open_bag",
    "read_stereo_bag",
    "typestore",
    "write_stereo_bag",
]
