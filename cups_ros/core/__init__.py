"""Core types shared by every stage: camera model, stereo frame, panoptic map, track, configuration."""

from cups_ros.core.camera import CameraModel, CameraModelError, camera_model_from_kitti_calib
from cups_ros.core.frame import StereoFrame, StereoFrameError
from cups_ros.core.panoptic import (
    IGNORE_CLASS,
    LABEL_DIVISOR,
    PanopticMap,
    Segment,
    decode_panoptic_id,
    encode_panoptic_id,
    panoptic_from_rgb,
    panoptic_to_rgb,
)
from cups_ros.core.track import Track, TrackState

__all__ = [
    "IGNORE_CLASS",
    "LABEL_DIVISOR",
    "CameraModel",
    "CameraModelError",
    "PanopticMap",
    "Segment",
    "StereoFrame",
    "StereoFrameError",
    "Track",
    "TrackState",
    "camera_model_from_kitti_calib",
    "decode_panoptic_id",
    "encode_panoptic_id",
    "panoptic_from_rgb",
    "panoptic_to_rgb",
]
