"""Mask overlaps shared by the instance stages (motion, depth edges, pseudo-tracks) and their scores."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matching of predicted to ground-truth masks at an IoU threshold."""

    iou: np.ndarray  # P x G
    matches: list[tuple[int, int]]  # (pred, gt) pairs with IoU >= threshold
    true_positives: int  # matches with a counted (not ignored) ground truth
    false_positives: int  # predictions matching nothing
    false_negatives: int  # counted ground truths left unmatched
    ignored_predictions: int  # predictions matching only ignored ground truth


def match_instances(
    pred_masks: np.ndarray,
    gt_masks: np.ndarray,
    iou: float = 0.5,
    gt_ignore: np.ndarray | None = None,
) -> MatchResult:
    """Greedy one-to-one matching by descending IoU (unique anyway for IoU > 0.5).

    gt_ignore marks ground truths that neither count as misses nor make their match a true positive
    (e.g. moving objects under a size limit): a prediction matching one counts neither way.
    """
    pred_masks = np.asarray(pred_masks, dtype=bool)
    gt_masks = np.asarray(gt_masks, dtype=bool)
    if pred_masks.ndim != 3 or gt_masks.ndim != 3:
        raise ValueError(f"masks must be N x H x W, got {pred_masks.shape} and {gt_masks.shape}")
    if len(pred_masks) and len(gt_masks) and pred_masks.shape[1:] != gt_masks.shape[1:]:
        raise ValueError(f"mask sizes differ: {pred_masks.shape[1:]} vs {gt_masks.shape[1:]}")
    ignore = np.zeros(len(gt_masks), bool) if gt_ignore is None else np.asarray(gt_ignore, bool)
    if ignore.shape != (len(gt_masks),):
        raise ValueError(f"gt_ignore must have one flag per ground truth ({len(gt_masks)})")
    ious = mask_iou(pred_masks, gt_masks)
    matches: list[tuple[int, int]] = []
    if ious.size:
        order = np.argsort(-ious, axis=None, kind="stable")
        used_p, used_g = set(), set()
        for flat in order:
            p, g = divmod(int(flat), ious.shape[1])
            if ious[p, g] < iou or ious[p, g] <= 0:
                break
            if p in used_p or g in used_g:
                continue
            used_p.add(p)
            used_g.add(g)
            matches.append((p, g))
    tp = sum(1 for _, g in matches if not ignore[g])
    ignored = len(matches) - tp
    fp = len(pred_masks) - len(matches)
    fn = int((~ignore).sum()) - tp
    return MatchResult(ious, matches, tp, fp, fn, ignored)
