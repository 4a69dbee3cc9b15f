"""Online multi-object tracker: per-frame instances -> panoptic maps with persistent track ids."""

from cups_ros.tracking.config import TrackerConfig
from cups_ros.tracking.tracker import MultiObjectTracker, TrackCounts, TrackedFrame, box_iou

__all__ = ["MultiObjectTracker", "TrackCounts", "TrackedFrame", "TrackerConfig", "box_iou"]
