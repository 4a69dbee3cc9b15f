"""EuRoC MAV (ASL layout) stereo video as rectified StereoFrames.

Layout read (``root`` is the sequence folder holding ``mav0``, or ``mav0`` itself)::

    mav0/cam0/data.csv      "#timestamp [ns],filename" then one "stamp,file.png" per line
    mav0/cam0/data/*.png    grey images, not rectified (radial-tangential distortion)
    mav0/cam0/sensor.yaml   intrinsics [fu fv cu cv], distortion, T_BS (body from sensor), resolution
    mav0/cam1/...           the right camera, same

cam0 is the left camera. Both images are undistorted and rectified with OpenCV (stereoRectify with
alpha 0 and CALIB_ZERO_DISPARITY, so every output pixel is valid and the rectified pair shares one
principal point), and given out as HxWx3 uint8 RGB (grey copied to three channels), as the pipeline
expects. Left and right are paired by exact time stamp; unmatched or unreadable images are skipped
and counted in a SyncReport.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

from cups_ros.core.camera import CameraModel
from cups_ros.core.frame import StereoFrame
from cups_ros.io.bag import SyncReport

logger = logging.getLogger(__name__)

LEFT_CAMERA = "cam0"
RIGHT_CAMERA = "cam1"


class EurocError(ValueError):
    """EuRoC files that cannot be read, with the file and what was wrong."""


@dataclass(frozen=True)
class EurocCamera:
    """One camera's sensor.yaml: pinhole intrinsics, radial-tangential distortion, body-from-sensor pose."""

    intrinsics: tuple[float, float, float, float]  # fu, fv, cu, cv
    distortion: tuple[float, ...]  # k1, k2, p1, p2 (OpenCV order)
    T_BS: np.ndarray  # EuRoC's name: 4x4 pose of the sensor in the body frame
    width: int
    height: int
    rate_hz: float = 0.0
    source: str = ""

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the usual name of the intrinsic matrix
        fu, fv, cu, cv = self.intrinsics
        return np.array([[fu, 0.0, cu], [0.0, fv, cv], [0.0, 0.0, 1.0]])

    @property
    def D(self) -> np.ndarray:  # noqa: N802 - OpenCV's name of the distortion vector
        return np.asarray(self.distortion, dtype=np.float64)

    @property
    def resolution(self) -> tuple[int, int]:
        """(width, height), as sensor.yaml writes it."""
        return self.width, self.height


def _numbers(value: Any, count: int, what: str, path: Path) -> list[float]:
    if not isinstance(value, list) or len(value) != count:
        raise EurocError(f"{path}: {what} must be a list of {count} numbers, got {value!r}")
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError) as error:
        raise EurocError(f"{path}: {what} must hold numbers, got {value!r}") from error
    if not all(np.isfinite(numbers)):
        raise EurocError(f"{path}: {what} has non-finite values: {value!r}")
    return numbers


def read_euroc_sensor(path: str | Path) -> EurocCamera:
    """Reads a camera sensor.yaml (the OpenCV "%YAML:1.0" header is dropped before parsing)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise EurocError(f"{path}: cannot read camera sensor file: {error}") from error
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("%YAML")]
    try:
        data = yaml.safe_load("\n".join(lines))
    except yaml.YAMLError as error:
        raise EurocError(f"{path}: not valid YAML: {error}") from error
    if not isinstance(data, dict):
        raise EurocError(f"{path}: expected a YAML mapping of sensor fields, got {type(data).__name__}")
    missing = [
        key for key in ("T_BS", "resolution", "intrinsics", "distortion_coefficients") if key not in data
    ]
    if missing:
        raise EurocError(f"{path}: missing {', '.join(missing)} (not a EuRoC camera sensor.yaml?)")
    model = data.get("camera_model", "pinhole")
    if model != "pinhole":
        raise EurocError(f"{path}: camera_model {model!r} is not supported (only pinhole)")
    distortion_model = data.get("distortion_model", "radial-tangential")
    if distortion_model not in ("radial-tangential", "radtan"):
        raise EurocError(
            f"{path}: distortion_model {distortion_model!r} is not supported (only radial-tangential)"
        )
    t_bs = data["T_BS"]
    if not isinstance(t_bs, dict) or "data" not in t_bs:
        raise EurocError(f"{path}: T_BS must be a mapping with rows, cols and data")
    if (t_bs.get("rows", 4), t_bs.get("cols", 4)) != (4, 4):
        raise EurocError(f"{path}: T_BS must be 4x4, got {t_bs.get('rows')}x{t_bs.get('cols')}")
    pose = np.array(_numbers(t_bs["data"], 16, "T_BS data", path)).reshape(4, 4)
    if not np.allclose(pose[3], [0, 0, 0, 1]) or not np.allclose(
        pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-3
    ):
        raise EurocError(
            f"{path}: T_BS is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)"
        )
    width, height = (int(v) for v in _numbers(data["resolution"], 2, "resolution", path))
    if width <= 0 or height <= 0:
        raise EurocError(f"{path}: resolution must be positive, got {width}x{height}")
    fu, fv, cu, cv = _numbers(data["intrinsics"], 4, "intrinsics", path)
    if fu <= 0 or fv <= 0:
        raise EurocError(f"{path}: focal lengths must be positive, got fu={fu} fv={fv}")
    distortion = data["distortion_coefficients"]
    if not isinstance(distortion, list) or len(distortion) not in (4, 5):
        raise EurocError(f"{path}: distortion_coefficients must hold 4 (k1 k2 p1 p2) or 5 numbers")
    coefficients = _numbers(distortion, len(distortion), "distortion_coefficients", path)
    return EurocCamera(
        intrinsics=(fu, fv, cu, cv),
        distortion=tuple(coefficients),
        T_BS=pose,
        width=width,
        height=height,
        rate_hz=float(data.get("rate_hz", 0.0) or 0.0),
        source=str(path),
    )


class EurocStereoRectifier:
    """Undistortion and rectification maps of the cam0 (left) / cam1 (right) pair, and its CameraModel."""

    def __init__(self, left: EurocCamera, right: EurocCamera, alpha: float = 0.0) -> None:
        if left.resolution != right.resolution:
            raise EurocError(
                f"camera resolutions differ: {left.source} {left.width}x{left.height}, "
                f"{right.source} {right.width}x{right.height}"
            )
        self.left_camera, self.right_camera = left, right
        size = left.resolution
        # Points from the left camera's frame into the right's: cam1 <- body <- cam0.
        right_from_left = np.linalg.inv(right.T_BS) @ left.T_BS
        rotation, translation = right_from_left[:3, :3].copy(), right_from_left[:3, 3:].copy()
        r_left, r_right, p_left, p_right, _, _, _ = cv2.stereoRectify(
            left.K,
            left.D,
            right.K,
            right.D,
            size,
            rotation,
            translation,
            flags=cv2.CALIB_ZERO_DISPARITY,
            alpha=alpha,
        )
        self.right_from_left = right_from_left
        self.rotation_left, self.rotation_right = r_left, r_right
        self.projection_left, self.projection_right = p_left, p_right
        self.camera = CameraModel.from_projection_matrices(
            p_left, p_right, size[0], size[1], source=f"rectified {left.source} / {right.source}"
        )
        self._maps = [
            cv2.initUndistortRectifyMap(camera.K, camera.D, r, p, size, cv2.CV_16SC2)
            for camera, r, p in ((left, r_left, p_left), (right, r_right, p_right))
        ]

    @classmethod
    def from_files(
        cls, left_sensor: str | Path, right_sensor: str | Path, alpha: float = 0.0
    ) -> EurocStereoRectifier:
        return cls(read_euroc_sensor(left_sensor), read_euroc_sensor(right_sensor), alpha)

    @property
    def baseline(self) -> float:
        return self.camera.baseline

    def _remap(self, image: np.ndarray, which: int, name: str) -> np.ndarray:
        expected = (self.camera.height, self.camera.width)
        if image.shape[:2] != expected:
            raise EurocError(
                f"{name} image is {image.shape[1]}x{image.shape[0]}, "
                f"calibration is {expected[1]}x{expected[0]}"
            )
        first, second = self._maps[which]
        return cv2.remap(image, first, second, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def rectify(self, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rectified copies of a raw left/right pair (grey or colour, any dtype OpenCV remaps)."""
        return self._remap(left, 0, "left"), self._remap(right, 1, "right")


def _mav0(root: str | Path) -> Path:
    root = Path(root)
    mav0 = root if root.name == "mav0" or not (root / "mav0").is_dir() else root / "mav0"
    if not (mav0 / LEFT_CAMERA).is_dir() or not (mav0 / RIGHT_CAMERA).is_dir():
        raise EurocError(f"{root}: no EuRoC layout (expected mav0/{LEFT_CAMERA} and mav0/{RIGHT_CAMERA})")
    return mav0


def read_euroc_image_list(camera_folder: str | Path) -> dict[int, Path]:
    """Stamp (ns) to image path from a camera's data.csv."""
    csv_path = Path(camera_folder) / "data.csv"
    try:
        lines = csv_path.read_text().splitlines()
    except OSError as error:
        raise EurocError(f"{csv_path}: cannot read image list: {error}") from error
    images: dict[int, Path] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        stamp_text, sep, filename = (part.strip() for part in line.partition(","))
        if not sep or not filename:
            raise EurocError(f"{csv_path}:{number}: expected 'timestamp,filename', got {line!r}")
        try:
            stamp = int(stamp_text)
        except ValueError as error:
            raise EurocError(
                f"{csv_path}:{number}: timestamp {stamp_text!r} is not an integer (ns)"
            ) from error
        if stamp in images:
            raise EurocError(f"{csv_path}:{number}: duplicate timestamp {stamp}")
        images[stamp] = csv_path.parent / "data" / filename
    return images


class EurocStereoReader:
    """Iterates the rectified stereo frames of a EuRoC sequence; ``report`` counts what was skipped."""

    def __init__(self, root: str | Path, limit: int | None = None, alpha: float = 0.0) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        self.mav0 = _mav0(root)
        self.root = Path(root)
        self.limit = limit
        self.rectifier = EurocStereoRectifier.from_files(
            self.mav0 / LEFT_CAMERA / "sensor.yaml", self.mav0 / RIGHT_CAMERA / "sensor.yaml", alpha
        )
        self.left_images = read_euroc_image_list(self.mav0 / LEFT_CAMERA)
        self.right_images = read_euroc_image_list(self.mav0 / RIGHT_CAMERA)
        self.stamps = sorted(self.left_images.keys() & self.right_images.keys())
        self.sequence = (self.mav0.parent if self.mav0.name == "mav0" else self.mav0).name
        self.report = SyncReport(source=str(self.root))

    @property
    def camera(self) -> CameraModel:
        return self.rectifier.camera

    def __len__(self) -> int:
        """Stamps present in both cameras' lists (images that fail to read are skipped later)."""
        count = len(self.stamps)
        return count if self.limit is None else min(count, self.limit)

    def __iter__(self) -> Iterator[StereoFrame]:
        report = self.report = SyncReport(source=str(self.root))
        report.received["left images"] = len(self.left_images)
        report.received["right images"] = len(self.right_images)
        left_only = len(self.left_images.keys() - self.right_images.keys())
        right_only = len(self.right_images.keys() - self.left_images.keys())
        if left_only:
            report.skipped["left image without a right image of the same stamp"] = left_only
        if right_only:
            report.skipped["right image without a left image of the same stamp"] = right_only
        if left_only or right_only:
            logger.warning(
                "%s: %d left and %d right images have no partner of the same stamp; skipped",
                self.root,
                left_only,
                right_only,
            )
        for stamp in self.stamps:
            if self.limit is not None and report.frames >= self.limit:
                break
            left_path, right_path = self.left_images[stamp], self.right_images[stamp]
            left = cv2.imread(str(left_path), cv2.IMREAD_GRAYSCALE)
            right = cv2.imread(str(right_path), cv2.IMREAD_GRAYSCALE)
            if left is None or right is None:
                missing = left_path if left is None else right_path
                report.skipped["image file missing or unreadable"] += 1
                logger.warning("%s: cannot read %s; stereo pair %d skipped", self.root, missing, stamp)
                continue
            left, right = self.rectifier.rectify(left, right)
            yield StereoFrame(
                left=cv2.cvtColor(left, cv2.COLOR_GRAY2RGB),
                right=cv2.cvtColor(right, cv2.COLOR_GRAY2RGB),
                camera=self.camera,
                stamp_ns=stamp,
                frame_id=LEFT_CAMERA,
                sequence=self.sequence,
                index=report.frames,
            )
            report.frames += 1
        logger.info("%s: %d stereo frames, %d skipped", self.root, report.frames, report.skipped_total)


def read_euroc_stereo(root: str | Path, limit: int | None = None) -> Iterator[StereoFrame]:
    """Rectified stereo frames of a EuRoC sequence in stamp order (see EurocStereoReader)."""
    return iter(EurocStereoReader(root, limit))
