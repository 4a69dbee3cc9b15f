"""Instances of static objects from depth discontinuities (MBPS style).

Motion only finds objects that move; parked cars and standing people need another cue. Inside the
thing mask (pixels whose pseudo-class is a thing class) neighbouring objects are separated by jumps
in depth. We smooth the log-depth, take its Sobel gradient, call pixels with a large relative depth
change "edges", and cut the thing mask along them into connected components. Working on log-depth
makes the threshold relative (|dZ| / Z per pixel), so a 3 m gap between two cars at 10 m and at 40 m
both count, while the road-like slope along a car's side stays below it.

The edge pixels the cut removed are given back to the adjacent component of the nearest depth
(boundary reclamation), so masks reach the object outline again; masks that are then too small in
pixels or in metric surface (CUPS: 64 px, 0.65 m^2, a pixel covering Z^2 / (fx fy)) are dropped.

``merge_instances`` puts these depth instances behind the motion instances: a depth instance that
mostly repeats a motion instance is dropped, any other loses the pixels motion already took.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

from cups_ros.core.camera import CameraModel
from cups_ros.pseudo.masks import mask_iou

SOURCE_MOTION = "motion"
SOURCE_DEPTH = "depth"

# 3x3 Sobel responds with 8x the per-pixel gradient of a linear ramp; dividing gives d(log Z)/px.
_SOBEL_NORMALISATION = 8.0
_EIGHT_NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass(frozen=True)
class DepthInstanceConfig:
    """How depth cuts the thing mask into instances (plain types: loads from YAML).

    smoothing_sigma: Gaussian sigma in px applied to the log-depth before the gradient
        (0 disables smoothing).
    edge_threshold: an edge is a pixel whose smoothed log-depth changes by more than this per pixel
        (|grad Z| / Z). 0.04 cuts a 3 m gap between two cars 15 m away (log 18/15 = 0.18, spread
        over about two pixels) but not a car side seen at a grazing angle 100 px off-centre (0.01).
    min_area: final masks (after reclamation) below this many pixels are dropped (CUPS: 64);
        seed components below a quarter of it take no part in reclamation.
    min_surface: final masks below this metric surface in m^2 are dropped (CUPS: 0.65), a pixel
        at depth Z covering Z^2 / (fx fy) (pixels without depth count at the mask's mean depth).
    min_depth, max_depth: depth range in metres a pixel must lie in to seed a component
        (CUPS: 5.5..70); depth outside still shapes the edges.
    edge_dilation: edges are grown by this many pixels before cutting, which closes the small gaps
        a noisy (stereo) depth map leaves in an object's outline, through which neighbours would
        leak into one component; reclamation gives the pixels back afterwards.
    reclaim_radius: how many pixels (8-neighbour steps) boundary reclamation grows each kept
        component into the unassigned thing pixels around it (0 disables it).
    connectivity: 4 or 8, for the connected components.
    """

    smoothing_sigma: float = 1.0
    edge_threshold: float = 0.04
    min_area: int = 64
    min_surface: float = 0.65
    min_depth: float = 5.5
    max_depth: float = 70.0
    edge_dilation: int = 1
    reclaim_radius: int = 4
    connectivity: int = 4

    def __post_init__(self) -> None:
        if self.smoothing_sigma < 0 or not math.isfinite(self.smoothing_sigma):
            raise ValueError(f"smoothing_sigma must be finite and >= 0, got {self.smoothing_sigma}")
        if not self.edge_threshold > 0:
            raise ValueError(f"edge_threshold must be > 0, got {self.edge_threshold}")
        if self.min_area < 1 or self.min_surface < 0:
            raise ValueError(
                f"need min_area >= 1 and min_surface >= 0, got {self.min_area}, {self.min_surface}"
            )
        if not 0 <= self.min_depth < self.max_depth:
            raise ValueError(f"need 0 <= min_depth < max_depth, got {self.min_depth}..{self.max_depth}")
        if self.edge_dilation < 0:
            raise ValueError(f"edge_dilation must be >= 0, got {self.edge_dilation}")
        if self.reclaim_radius < 0:
            raise ValueError(f"reclaim_radius must be >= 0, got {self.reclaim_radius}")
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity}")


def _check_depth(depth: np.ndarray) -> np.ndarray:
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be an HxW array, got shape {depth.shape}")
    if not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth must be float metres, got dtype {depth.dtype}")
    if np.isnan(depth).any():
        raise ValueError(
            f"depth contains {int(np.isnan(depth).sum())} NaN values (mark invalid depth with 0 or inf)"
        )
    if (depth < 0).any():
        raise ValueError(f"depth contains {int((depth < 0).sum())} negative values (invalid is 0 or inf)")
    return depth.astype(np.float32, copy=False)


def _check_mask(mask: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name} has shape {mask.shape}, expected {shape} like depth")
    if mask.dtype != np.bool_:
        if not np.isin(np.unique(mask), (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values other than 0 and 1")
        mask = mask.astype(bool)
    return mask


def _check_stack(masks: np.ndarray, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"{name} must be an N x H x W stack, got shape {masks.shape}")
    return masks.astype(bool, copy=False)


def smoothed_log_depth(depth: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Log-depth with invalid pixels filled from their nearest valid pixel, then Gaussian-blurred.

    Returns (log-depth HxW float32, valid HxW bool). With no valid pixel the log-depth is all 0.
    """
    depth = _check_depth(depth)
    valid = np.isfinite(depth) & (depth > 0)
    log_depth = np.zeros(depth.shape, np.float32)
    if not valid.any():
        return log_depth, valid
    log_depth[valid] = np.log(depth[valid])
    if not valid.all():
        _, (rows, cols) = ndimage.distance_transform_edt(~valid, return_indices=True)
        log_depth = log_depth[rows, cols]
    if sigma > 0:
        log_depth = cv2.GaussianBlur(log_depth, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return log_depth, valid


def depth_edges(log_depth: np.ndarray, threshold: float) -> np.ndarray:
    """Pixels whose (smoothed) log-depth changes by more than threshold per pixel (Sobel)."""
    gx = cv2.Sobel(log_depth, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.Sobel(log_depth, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    magnitude = np.sqrt(gx * gx + gy * gy) / _SOBEL_NORMALISATION
    return magnitude > threshold


def _reclaim(labels: np.ndarray, candidates: np.ndarray, log_depth: np.ndarray, radius: int) -> np.ndarray:
    """Grows labelled regions into candidate pixels, each to the adjacent label of nearest depth."""
    labels = labels.copy()
    count = int(labels.max())
    if count == 0 or radius == 0:
        return labels
    sums = np.bincount(labels.ravel(), weights=log_depth.ravel(), minlength=count + 1)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    mean_log_depth = (sums / np.maximum(sizes, 1)).astype(np.float32)
    height, width = labels.shape
    for _ in range(radius):
        open_pixels = candidates & (labels == 0)
        if not open_pixels.any():
            break
        padded = np.pad(labels, 1)
        best_label = np.zeros_like(labels)
        best_cost = np.full(labels.shape, np.inf, np.float32)
        for dy, dx in _EIGHT_NEIGHBOURS:
            neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            cost = np.abs(log_depth - mean_log_depth[neighbour])
            better = open_pixels & (neighbour > 0) & (cost < best_cost)
            best_label[better] = neighbour[better]
            best_cost[better] = cost[better]
        grown = best_label > 0
        if not grown.any():
            break
        labels[grown] = best_label[grown]
    return labels


def depth_edge_instances(
    depth: np.ndarray,
    thing_mask: np.ndarray,
    camera: CameraModel,
    config: DepthInstanceConfig | None = None,
) -> np.ndarray:
    """Instances (N x H x W bool, disjoint, largest first) cut from thing_mask by depth edges.

    depth: HxW float metres, 0 or inf invalid (NaN and negative values are rejected).
    thing_mask: HxW bool, the pixels of thing classes.
    camera: the rectified left camera of depth (its fx, fy give the metric surface).
    """
    config = config or DepthInstanceConfig()
    depth = _check_depth(depth)
    thing_mask = _check_mask(thing_mask, depth.shape, "thing_mask")
    if (camera.height, camera.width) != depth.shape:
        raise ValueError(
            f"depth is {depth.shape[1]}x{depth.shape[0]} but the camera model is "
            f"{camera.width}x{camera.height}"
        )
    height, width = depth.shape
    empty = np.zeros((0, height, width), bool)
    if not thing_mask.any():
        return empty

    log_depth, valid = smoothed_log_depth(depth, config.smoothing_sigma)
    edges = depth_edges(log_depth, config.edge_threshold)
    if config.edge_dilation:
        size = 2 * config.edge_dilation + 1
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
        edges = cv2.dilate(edges.astype(np.uint8), kernel).astype(bool)
    in_range = valid & (depth >= config.min_depth) & (depth <= config.max_depth)
    seeds = thing_mask & ~edges & in_range
    count, labels, stats, _ = cv2.connectedComponentsWithStats(
        seeds.astype(np.uint8), connectivity=config.connectivity, ltype=cv2.CV_32S
    )
    if count <= 1:
        return empty

    # Fragments too small to be an object do not take part in reclamation; the edge band eats the
    # rim of small objects, so their seeds only need a quarter of the final area.
    seeded = stats[:, cv2.CC_STAT_AREA] >= max(1, config.min_area // 4)
    seeded[0] = False
    if not seeded.any():
        return empty
    remap = np.zeros(count, np.int32)
    remap[seeded] = np.arange(1, int(seeded.sum()) + 1, dtype=np.int32)
    labels = _reclaim(remap[labels], thing_mask, log_depth, config.reclaim_radius)

    # Area and metric surface of the final masks; reclaimed pixels without depth in range count
    # at their component's mean depth.
    count = int(seeded.sum()) + 1
    flat = labels.ravel()
    log_z = np.where(in_range, np.log(np.where(in_range, depth, 1.0)), 0.0).ravel()
    in_range_count = np.bincount(flat, weights=in_range.ravel(), minlength=count)
    mean_log_z = np.bincount(flat, weights=log_z, minlength=count) / np.maximum(in_range_count, 1)
    z = np.where(in_range.ravel(), np.exp(log_z), np.exp(mean_log_z)[flat])
    surface = np.bincount(flat, weights=z * z, minlength=count) / (camera.fx * camera.fy)
    areas = np.bincount(flat, minlength=count)
    keep = (areas >= config.min_area) & (surface >= config.min_surface)
    keep[0] = False
    kept = np.flatnonzero(keep)
    order = kept[np.argsort(-areas[kept], kind="stable")]
    return labels[None, :, :] == order[:, None, None]


def merge_instances(
    motion_masks: np.ndarray,
    depth_masks: np.ndarray,
    overlap: float = 0.5,
    min_area: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Motion instances first, then the depth instances that add something; all disjoint.

    A depth instance is dropped when more than ``overlap`` of its area lies in one motion instance
    (it is the same object, already found); otherwise it keeps the pixels no earlier instance took,
    and is dropped if fewer than ``min_area`` remain. Overlapping motion masks are made disjoint the
    same way (earlier ones win). Returns (masks K x H x W bool, sources K strings "motion"/"depth").
    """
    motion_masks = _check_stack(motion_masks, "motion_masks")
    depth_masks = _check_stack(depth_masks, "depth_masks")
    if motion_masks.shape[1:] != depth_masks.shape[1:]:
        raise ValueError(
            f"motion masks are {motion_masks.shape[1:]} but depth masks are {depth_masks.shape[1:]} (H x W)"
        )
    if not 0 <= overlap <= 1:
        raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
    shape = motion_masks.shape[1:]
    taken = np.zeros(shape, bool)
    masks: list[np.ndarray] = []
    sources: list[str] = []
    for mask in motion_masks:
        mask = mask & ~taken
        if not mask.any():
            continue
        masks.append(mask)
        sources.append(SOURCE_MOTION)
        taken |= mask
    motion_flat = (
        np.stack(masks).reshape(len(masks), taken.size) if masks else np.zeros((0, taken.size), bool)
    )
    for mask in depth_masks:
        area = int(mask.sum())
        if area == 0:
            continue
        if len(motion_flat):
            shared = (motion_flat & mask.reshape(1, -1)).sum(axis=1)
            if shared.max() > overlap * area:
                continue
        mask = mask & ~taken
        if int(mask.sum()) < min_area:
            continue
        masks.append(mask)
        sources.append(SOURCE_DEPTH)
        taken |= mask
    stacked = np.stack(masks) if masks else np.zeros((0, *shape), bool)
    return stacked, np.array(sources, dtype="<U6")


def mask_iou_matrix(pred_masks: np.ndarray, gt_masks: np.ndarray) -> np.ndarray:
    """IoU of every predicted mask (rows) with every ground-truth mask (columns)."""
    pred = _check_stack(pred_masks, "pred_masks")
    gt = _check_stack(gt_masks, "gt_masks")
    if pred.shape[1:] != gt.shape[1:]:
        raise ValueError(f"pred masks are {pred.shape[1:]} but gt masks are {gt.shape[1:]} (H x W)")
    return mask_iou(pred, gt)
