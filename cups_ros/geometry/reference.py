"""Ground-truth readers and the standard error measures of stereo and flow benchmarks.

Kept with the geometry stage so tests and the benchmark script measure the same way
(KITTI 2015 D1, Middlebury bad-n, end-point error).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


def read_pfm(path: str | Path) -> np.ndarray:
    """Float32 HxW (or HxWx3) of a Portable Float Map, top row first.

    Parsed here because OpenCV 5's reader rejects FlyingThings3D's headers (a space before the
    line break) and rescales Middlebury's by the header's scale.
    """
    data = Path(path).read_bytes()
    lines = []
    position = 0
    for _ in range(3):  # "Pf"/"PF", "width height", "scale" (negative: little endian)
        end = data.index(b"\n", position)
        lines.append(data[position:end].decode("ascii").strip())
        position = end + 1
    kind, size, scale_text = lines
    if kind not in ("Pf", "PF"):
        raise ValueError(f"{path}: not a PFM file (header {kind!r})")
    width, height = (int(v) for v in size.split())
    channels = 3 if kind == "PF" else 1
    dtype = np.dtype("<f4") if float(scale_text) < 0 else np.dtype(">f4")
    values = np.frombuffer(data, dtype=dtype, count=width * height * channels, offset=position)
    image = values.reshape(height, width, channels)[::-1].astype(np.float32)
    return image[:, :, 0] if channels == 1 else image


def read_kitti_disparity(path: str | Path) -> np.ndarray:
    """KITTI uint16 PNG disparity (value / 256), 0 where there is no ground truth."""
    encoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if encoded is None or encoded.dtype != np.uint16:
        raise ValueError(f"{path}: not a KITTI uint16 disparity PNG")
    return encoded.astype(np.float32) / 256.0


def read_rgb(path: str | Path) -> np.ndarray:
    """HxWx3 uint8 RGB (OpenCV reads BGR; an alpha channel is dropped)."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
    if image is None:
        raise ValueError(f"{path}: not a readable image")
    return image


@dataclass(frozen=True)
class DisparityScore:
    """Error over ground-truth pixels where the estimate has a value, and how many those are."""

    error_rate: float  # share of scored pixels that are outliers
    density: float  # scored pixels / ground-truth pixels
    mean_abs_error: float
    scored_pixels: int


def _scored(estimate: np.ndarray, truth: np.ndarray, truth_valid: np.ndarray) -> np.ndarray:
    return truth_valid & (estimate > 0) & np.isfinite(estimate)


def _score(
    outlier: np.ndarray, error: np.ndarray, scored: np.ndarray, truth_valid: np.ndarray
) -> DisparityScore:
    count = int(scored.sum())
    return DisparityScore(
        error_rate=float(outlier[scored].mean()) if count else float("nan"),
        density=count / max(int(truth_valid.sum()), 1),
        mean_abs_error=float(error[scored].mean()) if count else float("nan"),
        scored_pixels=count,
    )


def kitti_d1(estimate: np.ndarray, truth: np.ndarray, truth_valid: np.ndarray) -> DisparityScore:
    """KITTI 2015 D1: outlier when |d - d_gt| > 3 px and > 5 % of d_gt."""
    scored = _scored(estimate, truth, truth_valid)
    error = np.abs(estimate - truth)
    return _score((error > 3.0) & (error > 0.05 * truth), error, scored, truth_valid)


def bad_pixel_rate(
    estimate: np.ndarray, truth: np.ndarray, truth_valid: np.ndarray, threshold: float
) -> DisparityScore:
    """Middlebury bad-n: outlier when |d - d_gt| > threshold px."""
    scored = _scored(estimate, truth, truth_valid)
    error = np.abs(estimate - truth)
    return _score(error > threshold, error, scored, truth_valid)


def endpoint_error(estimate: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """Mean Euclidean distance between flow (HxWx2) or disparity (HxW) vectors over mask."""
    difference = np.asarray(estimate, np.float64) - np.asarray(truth, np.float64)
    distance = np.sqrt((difference**2).sum(axis=-1)) if difference.ndim == 3 else np.abs(difference)
    return float(distance[mask].mean())
