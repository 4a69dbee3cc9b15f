"""Disparity of a rectified pair: a pluggable matcher (OpenCV SGBM by default) plus the checks
CUPS relies on: left-right consistency and removal of pixels on disparity edges.

Disparity is float32 pixels, 0 where invalid (DESIGN: 0 disparity is infinite depth, never a
measurement). Both checks only remove pixels; they never fill any in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from cups_ros.geometry.config import StereoConfig
from cups_ros.geometry.sampling import pixel_grid, remap_zero_outside
from cups_ros.geometry.timing import timed

_SGBM_MODES = {
    "sgbm": cv2.STEREO_SGBM_MODE_SGBM,
    "sgbm_3way": cv2.STEREO_SGBM_MODE_SGBM_3WAY,
    "hh": cv2.STEREO_SGBM_MODE_HH,
    "hh4": cv2.STEREO_SGBM_MODE_HH4,
}
# SGBM returns fixed-point disparity with 4 fractional bits.
_SGBM_SCALE = 16.0
# px by which a nearer surface must overlap before a pixel counts as hidden; absorbs subpixel noise.
_OCCLUSION_TOLERANCE = 1.0


@runtime_checkable
class DisparityEstimator(Protocol):
    """Left-view disparity of a rectified HxWx3 uint8 RGB pair; float32 px, 0 where no match.

    Anything with this method plugs in (a learned network later); the right view's disparity,
    needed by the left-right check, is obtained by matching the mirrored pair.
    """

    def estimate(self, left: np.ndarray, right: np.ndarray) -> np.ndarray: ...


class SgbmDisparityEstimator:
    """OpenCV semi-global matching; one matcher per image width since the search range scales with it."""

    def __init__(self, config: StereoConfig | None = None) -> None:
        self.config = config or StereoConfig()
        self._matchers: dict[int, cv2.StereoSGBM] = {}

    def _matcher(self, width: int) -> cv2.StereoSGBM:
        if width not in self._matchers:
            config = self.config
            channels = 1 if config.grey else 3
            area = config.block_size**2
            self._matchers[width] = cv2.StereoSGBM.create(
                minDisparity=0,
                numDisparities=config.disparity_range(width),
                blockSize=config.block_size,
                P1=config.p1_per_pixel * channels * area,
                P2=config.p2_per_pixel * channels * area,
                disp12MaxDiff=-1,  # our own left-right check replaces OpenCV's one-sided one
                preFilterCap=config.pre_filter_cap,
                uniquenessRatio=config.uniqueness_ratio,
                speckleWindowSize=config.speckle_window_size,
                speckleRange=config.speckle_range,
                mode=_SGBM_MODES[config.mode],
            )
        return self._matchers[width]

    def estimate(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        if self.config.grey:
            left = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
            right = cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
        width = left.shape[1]
        matcher = self._matcher(width)
        pad = self.config.disparity_range(width) if self.config.pad_left_border else 0
        if pad:
            # SGBM leaves the first num_disparities columns empty; on black padding they get the
            # (shorter) search range that is geometrically possible there.
            left = cv2.copyMakeBorder(left, 0, 0, pad, 0, cv2.BORDER_CONSTANT, value=0)
            right = cv2.copyMakeBorder(right, 0, 0, pad, 0, cv2.BORDER_CONSTANT, value=0)
        fixed_point = matcher.compute(left, right)[:, pad:]
        disparity = fixed_point.astype(np.float32) / np.float32(_SGBM_SCALE)
        disparity[disparity <= 0] = 0.0  # SGBM marks no-match with minDisparity - 1
        return disparity


def right_view_disparity(estimator: DisparityEstimator, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Disparity of the right view (R(x) matches L(x + d_R)): mirroring swaps the roles of the views."""
    mirrored = estimator.estimate(cv2.flip(right, 1), cv2.flip(left, 1))
    return cv2.flip(mirrored, 1)


def left_right_consistent(
    disparity_left: np.ndarray, disparity_right: np.ndarray, max_difference: float
) -> np.ndarray:
    """True where |d_L(x) - d_R(x - d_L(x))| <= max_difference, both valid (nearest sampling).

    Nearest, not linear, sampling: interpolating d_R across an occlusion edge would invent a
    disparity that agrees with neither side.
    """
    grid_x, grid_y = pixel_grid(*disparity_left.shape)
    sampled = remap_zero_outside(disparity_right, grid_x - disparity_left, grid_y, cv2.INTER_NEAREST)
    return (disparity_left > 0) & (sampled > 0) & (np.abs(disparity_left - sampled) <= max_difference)


def disparity_edges(disparity: np.ndarray, valid: np.ndarray, max_range: float, radius: int) -> np.ndarray:
    """Valid pixels whose valid (2r+1)^2 neighbourhood spans more than max_range px of disparity.

    Matchers smear foreground over background at depth discontinuities, and one pixel there
    belongs to neither surface: CUPS drops them. Only valid neighbours count, so holes do not
    make edges.
    """
    kernel = np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)
    far = np.float32(1e6)
    highest = cv2.dilate(np.where(valid, disparity, -far).astype(np.float32), kernel)
    lowest = cv2.erode(np.where(valid, disparity, far).astype(np.float32), kernel)
    return valid & (highest - lowest > max_range)


def _running_along_rows(ufunc: np.ufunc, values: np.ndarray, reverse: bool = False) -> np.ndarray:
    """ufunc.accumulate along each row (right to left if reverse); run over the transposed view,
    which numpy vectorises across rows (several times faster than axis=1)."""
    columns_first = values.T[::-1] if reverse else values.T
    accumulated = ufunc.accumulate(columns_first, axis=0)
    return (accumulated[::-1] if reverse else accumulated).T


def fill_from_background(disparity: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Invalid pixels take the smaller (farther) of the nearest valid disparities left and right on
    their row: holes in stereo are mostly occlusions, which belong to the background surface."""
    height, width = disparity.shape
    columns = np.arange(width, dtype=np.int32)[None, :]
    left_index = _running_along_rows(np.maximum, np.where(valid, columns, -1))
    right_index = _running_along_rows(np.minimum, np.where(valid, columns, width), reverse=True)
    # Flat np.take: several times faster than take_along_axis here.
    row_start = np.arange(0, height * width, width, dtype=np.int64)[:, None]
    flat = disparity.ravel()
    from_left = flat.take(np.clip(left_index, 0, width - 1) + row_start)
    from_right = flat.take(np.clip(right_index, 0, width - 1) + row_start)
    from_left[left_index < 0] = np.inf
    from_right[right_index >= width] = np.inf
    background = np.minimum(from_left, from_right)
    background[~np.isfinite(background)] = 0.0
    return np.where(valid, disparity, background).astype(np.float32)


def occluded_in_right_view(disparity: np.ndarray, tolerance: float) -> np.ndarray:
    """Left pixels the right camera cannot see, from a dense left disparity.

    x is hidden when some x' > x on its row lands left of where x lands by more than tolerance
    (x' - d(x') < x - d(x) - tolerance): a nearer surface covers it in the right view. Landing left
    of the right image's border counts as hidden too.
    """
    target = pixel_grid(*disparity.shape)[0] - disparity
    leftmost_from_here = _running_along_rows(np.minimum, target, reverse=True)
    leftmost_to_the_right = np.full_like(target, np.inf)
    leftmost_to_the_right[:, :-1] = leftmost_from_here[:, 1:]
    return (leftmost_to_the_right < target - tolerance) | (target < 0)


@dataclass
class DisparityResult:
    """Left-view disparity (float32 px, 0 = invalid) with what each check removed."""

    disparity: np.ndarray
    valid: np.ndarray
    matched: np.ndarray  # the matcher gave a value
    left_right_rejected: np.ndarray  # matched but failed the left-right check
    edge_removed: np.ndarray  # passed the left-right check but sits on a disparity edge
    occlusion: np.ndarray  # invalid pixels hidden from the right camera (occluded_in_right_view)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def unconfirmed(self) -> np.ndarray:
        """Pixels the right view does not confirm: no match or left-right inconsistent.

        A superset of the occlusion that also holds textureless and mismatched pixels.
        """
        return ~self.matched | self.left_right_rejected


def compute_disparity(
    left: np.ndarray,
    right: np.ndarray,
    config: StereoConfig | None = None,
    estimator: DisparityEstimator | None = None,
) -> DisparityResult:
    """Disparity of one rectified HxWx3 uint8 RGB pair with the configured checks applied."""
    config = config or StereoConfig()
    estimator = estimator or SgbmDisparityEstimator(config)
    timings: dict[str, float] = {}
    with timed(timings, "disparity_left"):
        disparity = estimator.estimate(left, right).astype(np.float32, copy=True)
    matched = disparity > 0
    valid = matched.copy()
    rejected = np.zeros_like(matched)
    if config.left_right_check:
        with timed(timings, "disparity_right"):
            disparity_right = right_view_disparity(estimator, left, right)
        with timed(timings, "left_right_check"):
            rejected = matched & ~left_right_consistent(
                disparity, disparity_right, config.left_right_max_difference
            )
            valid &= ~rejected
    edges = np.zeros_like(matched)
    if config.remove_edges:
        with timed(timings, "edge_removal"):
            edges = disparity_edges(disparity, valid, config.edge_max_range, config.edge_radius)
            valid &= ~edges
    disparity[~valid] = 0.0
    with timed(timings, "occlusion"):
        background_filled = fill_from_background(disparity, valid)
        occlusion = ~valid & occluded_in_right_view(background_filled, _OCCLUSION_TOLERANCE)
    return DisparityResult(disparity, valid, matched, rejected, edges, occlusion, timings)
