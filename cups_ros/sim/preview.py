"""A montage PNG and a short MP4 of a sequence (left image, depth, flow, semantics, tracks) for people."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from cups_ros.core.files import atomic_path, write_bytes_atomic

# Cityscapes palette by train id.
PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
        (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
        (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)  # fmt: skip


def colour_semantic(semantic: np.ndarray) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(PALETTE)] = PALETTE
    return lut[semantic]


def colour_depth(depth: np.ndarray) -> np.ndarray:
    inverse = np.where(np.isfinite(depth) & (depth > 0), 1.0 / np.maximum(depth, 1e-3), 0.0)
    scaled = np.clip(inverse / 0.25 * 255.0, 0, 255).astype(np.uint8)  # 4 m and closer saturate
    return cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA), cv2.COLOR_BGR2RGB)


def colour_flow(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    magnitude, angle = cv2.cartToPolar(flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32))
    top = max_magnitude or float(np.percentile(magnitude, 99) + 1e-6)
    hsv = np.zeros((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (angle * 90 / np.pi).astype(np.uint8)
    hsv[..., 1] = np.clip(magnitude / top * 255, 0, 255).astype(np.uint8)
    hsv[..., 2] = 255
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def colour_tracks(panoptic: np.ndarray, left: np.ndarray) -> np.ndarray:
    """Each track id its own stable colour over the image, stuff greyed out."""
    track = panoptic % 1000
    rng = np.random.default_rng(0)
    lut = rng.integers(60, 255, (1000, 3)).astype(np.uint8)
    grey = cv2.cvtColor(cv2.cvtColor(left, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB) // 2
    out = np.where((track > 0)[..., None], lut[track], grey)
    edges = cv2.morphologyEx(track.astype(np.uint16), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    out[edges] = 255
    return out


def panel(frame: object) -> np.ndarray:
    """2 x 3 grid: left, right, depth / flow, semantics, tracks."""
    f = frame
    top = np.hstack([f.left, f.right, colour_depth(f.depth)])  # type: ignore[attr-defined]
    bottom = np.hstack(
        [colour_flow(f.flow), colour_semantic(f.semantic), colour_tracks(f.panoptic, f.left)]  # type: ignore[attr-defined]
    )
    return np.vstack([top, bottom])


def write_preview(
    frames: Sequence[object], png_path: str | Path, video_path: str | Path | None = None, fps: float = 5.0
) -> None:
    """Montage of the first frame (PNG) and all frames as an MP4 ('mp4v'), both written atomically."""
    if not frames:
        raise ValueError("no frames to preview")
    montage = panel(frames[0])
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(montage, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError("PNG encoding failed")
    write_bytes_atomic(png_path, encoded.tobytes())
    if video_path is None:
        return
    first = panel(frames[0])
    height, width = first.shape[:2]
    scale = min(1.0, 1536 / width)
    size = (int(width * scale) // 2 * 2, int(height * scale) // 2 * 2)
    with atomic_path(video_path) as temporary:
        writer = cv2.VideoWriter(
            str(temporary.with_suffix(".mp4")), cv2.VideoWriter_fourcc(*"mp4v"), fps, size
        )
        if not writer.isOpened():
            raise OSError(f"cannot open a video writer for {video_path}")
        for frame in frames:
            writer.write(
                cv2.cvtColor(cv2.resize(panel(frame), size, interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
            )
        writer.release()
        if temporary.with_suffix(".mp4") != temporary:
            temporary.with_suffix(".mp4").rename(temporary)
