"""Mask overlaps shared by the instance stages (motion, depth edges, pseudo-tracks) and their scores."""

from __future__ import annotations

import numpy as np


def mask_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """P x G IoU of two stacks of boolean masks (P x H x W, G x H x W); 0 where both are empty."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    pixels = int(np.prod(a.shape[1:]))
    af = a.reshape(len(a), pixels).astype(np.float32)
    bf = b.reshape(len(b), pixels).astype(np.float32)
    intersection = af @ bf.T
    union = af.sum(1)[:, None] + bf.sum(1)[None, :] - intersection
    return np.where(union > 0, intersection / np.maximum(union, 1), 0.0)
