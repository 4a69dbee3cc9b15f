"""ROS 2 bag export of a simulated sequence: the standard stereo topics plus ground-truth topics."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cups_ros.core.camera import CameraModel

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DISPARITY = "stereo_msgs/msg/DisparityImage"


@dataclass(frozen=True)
class GroundTruthTopics:
    depth: str = "/ground_truth/depth"
    disparity: str = "/ground_truth/disparity"
    semantic: str = "/ground_truth/semantic"
    panoptic: str = "/ground_truth/panoptic"
    flow: str = "/ground_truth/flow"


def export_bag(
    path: str | Path,
    frames: Iterable[object],
    camera: CameraModel,
    *,
    overwrite: bool = False,
    ground_truth: GroundTruthTopics | None = None,
    frame_id_left: str = "stereo_left_optical_frame",
    frame_id_right: str = "stereo_right_optical_frame",
) -> int:
    """Writes SimFrame or GeneratedFrame objects (left, right, depth, disparity, semantic, panoptic,
    flow, stamp_ns); depth is 32FC1 with 0 where invalid (sky). Returns the frame count."""
    from cups_ros.io.bag import BagWriter, StereoTopics
    from cups_ros.io.messages import array_to_image, camera_info_messages, disparity_image_message

    topics = StereoTopics()
    gt = ground_truth or GroundTruthTopics()
    count = 0
    with BagWriter(path, overwrite=overwrite) as bag:
        for side in ("left", "right"):
            bag.add_topic(topics.image(side), IMAGE)  # type: ignore[arg-type]
            bag.add_topic(topics.info(side), CAMERA_INFO)  # type: ignore[arg-type]
        for topic in (gt.depth, gt.semantic, gt.panoptic, gt.flow):
            bag.add_topic(topic, IMAGE)
        bag.add_topic(gt.disparity, DISPARITY)
        for frame in frames:
            stamp = int(frame.stamp_ns)  # type: ignore[attr-defined]
            infos = camera_info_messages(camera, stamp, frame_id_left, frame_id_right)
            for side, rgb, info, frame_id in zip(
                ("left", "right"),
                (frame.left, frame.right),  # type: ignore[attr-defined]
                infos,
                (frame_id_left, frame_id_right),
                strict=True,
            ):
                bag.write(topics.image(side), stamp, array_to_image(rgb, "rgb8", stamp, frame_id))  # type: ignore[arg-type]
                bag.write(topics.info(side), stamp, info)  # type: ignore[arg-type]
            depth = np.where(np.isfinite(frame.depth), frame.depth, 0.0).astype(np.float32)  # type: ignore[attr-defined]
            bag.write(gt.depth, stamp, array_to_image(depth, "32FC1", stamp, frame_id_left))
            bag.write(
                gt.semantic,
                stamp,
                array_to_image(frame.semantic.astype(np.uint8), "mono8", stamp, frame_id_left),
            )  # type: ignore[attr-defined]
            bag.write(
                gt.panoptic,
                stamp,
                array_to_image(frame.panoptic.astype(np.int32), "32SC1", stamp, frame_id_left),
            )  # type: ignore[attr-defined]
            bag.write(
                gt.flow, stamp, array_to_image(frame.flow.astype(np.float32), "32FC2", stamp, frame_id_left)
            )  # type: ignore[attr-defined]
            bag.write(
                gt.disparity, stamp, disparity_image_message(frame.disparity, camera, stamp, frame_id_left)
            )  # type: ignore[attr-defined]
            count += 1
    return count
