"""Reading images at displaced positions (x + flow(x), x - disparity(x)) with cv2.remap.

Pixel grids are cached per image size: building them is a large share of the cost of a remap
at 1024x512, and every frame of a stream has the same size.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np


@lru_cache(maxsize=8)
def pixel_grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) float32 HxW pixel coordinates, read-only (shared between callers)."""
    grid_x = np.tile(np.arange(width, dtype=np.float32), (height, 1))
    grid_y = np.repeat(np.arange(height, dtype=np.float32)[:, None], width, axis=1)
    grid_x.flags.writeable = False
    grid_y.flags.writeable = False
    return grid_x, grid_y


def sampling_maps(flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps that read another image at x + flow(x) (flow HxWx2 float32)."""
    grid_x, grid_y = pixel_grid(*flow.shape[:2])
    flow_x, flow_y = cv2.split(np.asarray(flow, dtype=np.float32))
    return cv2.add(flow_x, grid_x), cv2.add(flow_y, grid_y)


def inside_image(map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """True where sampling positions lie within the pixel centres (0..W-1, 0..H-1)."""
    height, width = map_x.shape
    return (map_x >= 0) & (map_x <= width - 1) & (map_y >= 0) & (map_y <= height - 1)


def remap_zero_outside(
    image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """image read at (map_x, map_y); 0 beyond the border (never a made-up value)."""
    return cv2.remap(image, map_x, map_y, interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def keep_valid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """values (HxW or HxWxC) with 0 where valid (HxW bool) is False; cv2.copyTo is ~3x faster than
    numpy broadcasting a mask over channels."""
    kept = np.zeros_like(values)
    cv2.copyTo(values, np.ascontiguousarray(valid).view(np.uint8), kept)
    return kept
