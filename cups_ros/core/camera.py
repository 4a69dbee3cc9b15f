"""Pinhole model of a rectified stereo pair, built from ROS CameraInfo or KITTI calibration files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Rectified pairs share fx, fy, cy exactly; calibration files round to ~7 digits.
_RELATIVE_TOLERANCE = 1e-4
# A rectified pair may carry a small vertical/depth offset in P (KITTI's P_rect_02 does: 0.2 px),
# but it must stay negligible against the baseline.
_MAX_OFF_AXIS_FRACTION = 0.05


class CameraModelError(ValueError):
    """Calibration that cannot describe a rectified stereo pair."""


@dataclass(frozen=True)
class CameraModel:
    """Left-camera intrinsics of a rectified pair and its baseline in metres."""

    fx: float
    fy: float
    cx: float
    cy: float
    baseline: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy, self.baseline)
        if not all(np.isfinite(v) for v in values):
            raise CameraModelError(f"camera model has non-finite values: {self}")
        if self.fx <= 0 or self.fy <= 0:
            raise CameraModelError(f"focal lengths must be positive, got fx={self.fx} fy={self.fy}")
        if self.baseline <= 0:
            raise CameraModelError(
                f"baseline must be positive, got {self.baseline} m "
                "(zero: not a stereo pair; negative: left and right swapped)"
            )
        if self.width <= 0 or self.height <= 0:
            raise CameraModelError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the field's name for the intrinsic matrix
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def projection_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """P of the left and right camera, as a ROS CameraInfo of a rectified pair carries them."""
        left = np.hstack([self.K, np.zeros((3, 1))])
        right = left.copy()
        right[0, 3] = -self.fx * self.baseline
        return left, right

    def disparity_to_depth(self, disparity: np.ndarray) -> np.ndarray:
        """Depth in metres; 0 where the disparity is not positive or not finite (invalid)."""
        disparity = np.asarray(disparity, dtype=np.float32)
        depth = np.zeros_like(disparity)
        valid = np.isfinite(disparity) & (disparity > 0)
        depth[valid] = np.float32(self.fx * self.baseline) / disparity[valid]
        return depth

    def depth_to_disparity(self, depth: np.ndarray) -> np.ndarray:
        """Disparity in pixels; 0 where the depth is invalid (0, negative, inf or NaN)."""
        depth = np.asarray(depth, dtype=np.float32)
        disparity = np.zeros_like(depth)
        valid = np.isfinite(depth) & (depth > 0)
        disparity[valid] = np.float32(self.fx * self.baseline) / depth[valid]
        return disparity

    def scaled(self, width: int, height: int) -> CameraModel:
        """The same rig seen at another image size (resizing, not cropping)."""
        sx, sy = width / self.width, height / self.height
        return CameraModel(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            baseline=self.baseline,
            width=width,
            height=height,
        )

    @classmethod
    def from_projection_matrices(
        cls, p_left: Any, p_right: Any, width: int, height: int, source: str = "calibration"
    ) -> CameraModel:
        """Checks that the two 3x4 projection matrices describe a horizontally rectified pair."""
        left = np.asarray(p_left, dtype=np.float64).reshape(3, 4)
        right = np.asarray(p_right, dtype=np.float64).reshape(3, 4)
        for name, p in (("left", left), ("right", right)):
            if not np.any(p):
                raise CameraModelError(f"{source}: {name} P is all zeros (camera not calibrated)")
            if not np.all(np.isfinite(p)):
                raise CameraModelError(f"{source}: {name} P has non-finite values")
            if p[0, 1] != 0 or p[1, 0] != 0 or p[2, 0] != 0 or p[2, 1] != 0 or p[2, 2] != 1:
                raise CameraModelError(
                    f"{source}: {name} P is not of rectified form [[fx,0,cx,Tx],[0,fy,cy,Ty],[0,0,1,0]]"
                )
        fx, fy, cx, cy = left[0, 0], left[1, 1], left[0, 2], left[1, 2]

        def differs(a: float, b: float) -> bool:
            return abs(a - b) > _RELATIVE_TOLERANCE * max(abs(a), abs(b), 1.0)

        for what, a, b in (
            ("fx", fx, right[0, 0]),
            ("fy", fy, right[1, 1]),
            ("cx", cx, right[0, 2]),
            ("cy", cy, right[1, 2]),
        ):
            if differs(a, b):
                raise CameraModelError(
                    f"{source}: not a rectified pair: {what} differs between left ({a}) and right ({b})"
                )
        baseline = -(right[0, 3] - left[0, 3]) / fx
        if abs(baseline) < 1e-9:
            raise CameraModelError(
                f"{source}: zero baseline (right P[0,3] equals left P[0,3]): "
                "the right CameraInfo must carry the rectified right projection, Tx = -fx * baseline"
            )
        off_axis = np.hypot((right[1, 3] - left[1, 3]) / fy, right[2, 3] - left[2, 3])
        if off_axis > _MAX_OFF_AXIS_FRACTION * abs(baseline):
            raise CameraModelError(
                f"{source}: not a horizontally rectified pair: vertical/depth offset {off_axis:.4f} m "
                f"against baseline {baseline:.4f} m"
            )
        return cls(
            fx=float(fx),
            fy=float(fy),
            cx=float(cx),
            cy=float(cy),
            baseline=float(baseline),
            width=int(width),
            height=int(height),
        )

    @classmethod
    def from_camera_info(cls, left_info: Any, right_info: Any) -> CameraModel:
        """From two sensor_msgs/CameraInfo (rosbags or rclpy objects alike: fields p, width, height)."""
        if (left_info.width, left_info.height) != (right_info.width, right_info.height):
            raise CameraModelError(
                "CameraInfo sizes differ: left "
                f"{left_info.width}x{left_info.height}, right {right_info.width}x{right_info.height}"
            )
        return cls.from_projection_matrices(
            left_info.p, right_info.p, left_info.width, left_info.height, source="CameraInfo"
        )


def _read_kitti_calib(path: Path) -> dict[str, np.ndarray]:
    values: dict[str, np.ndarray] = {}
    for line in path.read_text().splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        try:
            values[key.strip()] = np.array([float(v) for v in rest.split()])
        except ValueError:
            continue  # calib_time and other non-numeric entries
    return values


def camera_model_from_kitti_calib(
    path: str | Path, left_camera: str = "02", right_camera: str = "03"
) -> CameraModel:
    """From a KITTI raw calib_cam_to_cam.txt (P_rect_xx, S_rect_xx), default the colour pair 02/03."""
    path = Path(path)
    values = _read_kitti_calib(path)
    needed = [f"P_rect_{left_camera}", f"P_rect_{right_camera}", f"S_rect_{left_camera}"]
    missing = [key for key in needed if key not in values]
    if missing:
        raise CameraModelError(f"{path}: missing {', '.join(missing)}")
    width, height = (round(v) for v in values[f"S_rect_{left_camera}"])
    return CameraModel.from_projection_matrices(
        values[f"P_rect_{left_camera}"],
        values[f"P_rect_{right_camera}"],
        width,
        height,
        source=str(path),
    )
