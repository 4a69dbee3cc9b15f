"""One synchronized, rectified stereo pair with its calibration and time stamp."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cups_ros.core.camera import CameraModel


class StereoFrameError(ValueError):
    """A stereo pair that the pipeline cannot use, with what was wrong."""


@dataclass(frozen=True)
class StereoFrame:
    """Left/right HxWx3 uint8 RGB images of a rectified pair; stamp in nanoseconds (header stamp)."""

    left: np.ndarray
    right: np.ndarray
    camera: CameraModel
    stamp_ns: int
    frame_id: str = ""
    sequence: str = ""
    index: int = 0
    extras: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name, image in (("left", self.left), ("right", self.right)):
            if not isinstance(image, np.ndarray):
                raise StereoFrameError(f"{name} image is {type(image).__name__}, expected numpy array")
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise StereoFrameError(
                    f"{name} image must be HxWx3 uint8 RGB, got shape {image.shape} dtype {image.dtype}"
                )
        if self.left.shape != self.right.shape:
            raise StereoFrameError(
                f"stereo sizes differ: left {self.left.shape[1]}x{self.left.shape[0]}, "
                f"right {self.right.shape[1]}x{self.right.shape[0]}"
            )
        height, width = self.left.shape[:2]
        if (self.camera.width, self.camera.height) != (width, height):
            raise StereoFrameError(
                f"images are {width}x{height} but the camera model is "
                f"{self.camera.width}x{self.camera.height}"
            )
        if self.stamp_ns < 0:
            raise StereoFrameError(f"negative stamp {self.stamp_ns} ns")

    @property
    def height(self) -> int:
        return int(self.left.shape[0])

    @property
    def width(self) -> int:
        return int(self.left.shape[1])

    @property
    def stamp_s(self) -> float:
        return self.stamp_ns * 1e-9
