"""Semantic pseudo-classes from self-supervised features: PriMaPs-EM with CUPS's depth-guided fusion.

Pipeline per image (``SemanticPseudoLabeller``):

1. Dense features: L2-normalised DINOv2 patch tokens from a *global* pass over the whole image at a
   low working resolution and, optionally, a *sliding-window* pass (overlapping square crops of the
   image at a higher resolution, averaged where they overlap). As in CUPS they are fused with weight
   ``w = 1 / (depth / depth_scale + 1)`` on the global pass: near pixels (large in the image) keep
   the global context, far pixels (small, distant things) take the high-resolution sliding-window
   features. Invalid depth (0, inf) counts as infinitely far (w = 0), which is right for the sky.
   ``depth_scale=1`` with metres is CUPS's formula; the default (1000) was tuned on the simulator.
2. PriMaPs (principal mask proposals): the first principal direction of the remaining patch
   features, the patch nearest to it, and the mask of patches whose cosine similarity to that patch
   exceeds a threshold; removed and repeated until the image is covered. Each mask gives a mean
   feature.
3. EM: K class prototypes on the unit sphere, started from spherical k-means on *all* patch
   features of the training split (``em_init="kmeans"``; centred on the split's mean feature), then
   ``em_iterations`` passes of mini-batch soft EM (softmax responsibilities over cosine similarities
   with a temperature, momentum updates) over the PriMaPs mask features plus ``patch_samples_per_image``
   patch features per image, so EM never has fewer points than k-means. Masks are weighted by
   size ** ``mask_weight_power``. ``em_restarts`` > 1 keeps the restart with the best unsupervised
   objective (no labels). The defaults keep the original (k-means++ on the masks, 40 EM passes);
   ``em_init="kmeans", em_iterations=0, patch_samples_per_image=512, slic_segments=300,
   slic_compactness=20`` measured best on the simulator (EM and restarts did not help there).
4. Prediction: per-patch cosine scores to the prototypes (optionally blended with their PriMaPs
   mask means, ``mask_vote``; off by default, it measured much worse), bilinearly upsampled and refined along
   image edges (superpixel averaging of the scores, or a guided filter), argmax -> labels, softmax
   maximum -> confidence.

``kmeans_baseline`` fits plain k-means on global-pass patch features of the same samples (no
PriMaPs, no fusion, no refinement) for comparison; ``hungarian_miou`` scores either over a split.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from cups_ros.core.files import atomic_path
from cups_ros.core.panoptic import IGNORE_CLASS
from cups_ros.eval.matching import ClassMapping, match_pseudo_classes
from cups_ros.eval.semantic import ConfusionMatrix, SemanticResult, semantic_scores
from cups_ros.features.preprocessing import preprocess
from cups_ros.features.vit import DinoVisionTransformer

Refinement = Literal["none", "slic", "felzenszwalb", "guided"]
Method = Literal["primaps_em", "kmeans"]
EmInit = Literal["kmeans", "kmeans++"]

PROTOTYPE_FORMAT = "cups_ros.semantic_prototypes.v1"


@dataclass
class SemanticConfig:
    """Semantic pseudo-labelling settings (plain types, so it round-trips through YAML)."""

    num_classes: int = 27
    """K pseudo-classes (``c00..c26``)."""
    global_short_side: int = 224
    """Short side in pixels of the resized image for the global pass (rounded to the patch)."""
    sliding_window: bool = True
    """Off: the global pass alone (faster); on: fused with the sliding-window pass by depth."""
    window_short_side: int = 336
    """Short side of the resized image the sliding windows are cut from (the higher resolution)."""
    window_size: int = 224
    """Side of the square crops in pixels at the sliding-window resolution (a patch multiple)."""
    window_stride: int = 168
    """Step between crops (a patch multiple); the last crop is aligned to the image end."""
    depth_scale: float = 1000.0
    """Depth unit of the fusion: w = 1 / (depth / depth_scale + 1). 1.0 (metres) is CUPS's formula;
    on the simulator it gives the sliding window almost every pixel and measured ~3 mIoU worse than
    1000 (global pass wherever depth is valid, sliding window on the sky / invalid depth)."""
    centre_features: bool = True
    """Subtract the training split's mean feature (then re-normalise) before EM and scoring."""
    primaps_threshold: float = 0.3
    """Cosine similarity to the patch nearest the principal direction that puts a patch in the mask
    (on features centred on the image's mean feature)."""
    primaps_max_masks: int = 24
    primaps_min_remaining: float = 0.02
    """Stop proposing masks when less than this share of patches is left uncovered."""
    mask_weight_power: float = 0.0
    """Weight of a mask in EM: its patch count ** power (0: every mask alike, 1: every patch alike)."""
    patch_samples_per_image: int = 512
    """Random patch features per image added to the EM points (weight 1 each); 0: masks only (with
    ~5-10 masks per image EM then sees a few hundred points for 27 classes and is noisy)."""
    em_iterations: int = 0
    """EM passes after the start. 0 with em_init="kmeans": the prototypes are the k-means start itself
    (spherical k-means on all centred fused patch features); on the simulator (36 train / 24 val
    frames, seeds 0-2) that measured best; soft EM from there at temperature 0.05 ~0.5 mIoU worse."""
    em_temperature: float = 0.05
    """Softmax temperature on cosine similarities (responsibilities in EM, confidence in predict)."""
    em_momentum: float = 0.5
    """Prototype <- normalise(momentum * prototype + (1 - momentum) * batch estimate)."""
    em_batch_size: int = 4096
    em_init: EmInit = "kmeans"
    """Start of EM: "kmeans" (spherical k-means on all training patch features, so EM starts where
    the baseline ends) or "kmeans++" (seeding on the EM points alone)."""
    em_restarts: int = 1
    """EM runs with different seeds; the one with the best unsupervised objective (weighted mean
    log-sum-exp of the scaled similarities, no labels) is kept."""
    image_centre_share: float = 0.0
    """Share of the image's own mean feature in the mean subtracted by centre_features (0: the
    training split's mean alone, 1: the image's mean alone)."""
    mask_vote: float = 0.0
    """At prediction, blend of each patch's scores with the mean scores of its PriMaPs mask
    (0: off, 1: one vote per mask) before refinement."""
    refinement: Refinement = "slic"
    refine_scale: float = 0.5
    """Resolution (share of the full image) the edge-aware refinement works at."""
    slic_segments: int = 300
    """Measured on the simulator (k-means start, no EM): 300 > 600 (~+0.5 mIoU) > 1200; 150 worse."""
    slic_compactness: float = 20.0
    guided_radius: int = 8
    guided_eps: float = 1e-3
    method: Method = "primaps_em"
    """"kmeans": plain k-means on the patch features (the baseline of ``kmeans_baseline``)."""
    kmeans_iterations: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if not 2 <= self.num_classes <= 254:
            raise ValueError(f"num_classes must lie in [2, 254], got {self.num_classes}")
        for name in ("global_short_side", "window_short_side", "window_size", "window_stride"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.window_size > self.window_short_side:
            raise ValueError(
                f"window_size {self.window_size} exceeds window_short_side {self.window_short_side}"
            )
        if not 0.0 <= self.em_momentum < 1.0:
            raise ValueError(f"em_momentum must lie in [0, 1), got {self.em_momentum}")
        if self.em_temperature <= 0 or self.depth_scale <= 0:
            raise ValueError("em_temperature and depth_scale must be positive")
        if self.refinement not in ("none", "slic", "felzenszwalb", "guided"):
            raise ValueError(f"unknown refinement {self.refinement!r} (none, slic, felzenszwalb, guided)")
        if self.method not in ("primaps_em", "kmeans"):
            raise ValueError(f"unknown method {self.method!r} (primaps_em or kmeans)")
        if self.em_init not in ("kmeans", "kmeans++"):
            raise ValueError(f"unknown em_init {self.em_init!r} (kmeans or kmeans++)")
        if self.em_restarts < 1:
            raise ValueError(f"em_restarts must be at least 1, got {self.em_restarts}")
        if not 0.0 <= self.image_centre_share <= 1.0:
            raise ValueError(f"image_centre_share must lie in [0, 1], got {self.image_centre_share}")
        if not 0.0 <= self.mask_vote <= 1.0:
            raise ValueError(f"mask_vote must lie in [0, 1], got {self.mask_vote}")
        if not 0.0 < self.refine_scale <= 1.0:
            raise ValueError(f"refine_scale must lie in (0, 1], got {self.refine_scale}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SemanticConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown SemanticConfig fields: {sorted(unknown)}")
        return cls(**values)


@dataclass
class SemanticPrediction:
    labels: np.ndarray
    """H x W uint8 pseudo-classes in 0..K-1."""
    confidence: np.ndarray
    """H x W float32 in (0, 1]: softmax maximum of the refined class scores."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (features, scores, refinement, total)."""


@dataclass
class MaskProposals:
    """PriMaPs of one image on its feature grid."""

    masks: np.ndarray
    """M x h x w bool, disjoint."""
    features: np.ndarray
    """M x D unit mean features."""
    sizes: np.ndarray
    """M patch counts."""


# ----------------------------------------------------------------------------------------------------
# Input checks


def check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be H x W x 3 RGB (not grey), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f"image is too small: {image.shape}")
    return image


def check_depth(depth: np.ndarray | None, image_shape: tuple[int, ...]) -> np.ndarray | None:
    """Depth in metres, H x W like the image; 0 and inf are invalid (far); NaN or negatives refused."""
    if depth is None:
        return None
    depth = np.asarray(depth)
    if depth.shape != tuple(image_shape[:2]):
        raise ValueError(f"depth size {depth.shape} does not match the image size {tuple(image_shape[:2])}")
    if not np.issubdtype(depth.dtype, np.floating):
        if not np.issubdtype(depth.dtype, np.integer):
            raise ValueError(f"depth must be a float array in metres, got dtype {depth.dtype}")
        depth = depth.astype(np.float32)
    if np.isnan(depth).any():
        raise ValueError("depth contains NaN (mark invalid depth with 0 or inf)")
    if (depth < 0).any():
        raise ValueError("depth contains negative values")
    return depth


# ----------------------------------------------------------------------------------------------------
# Features


def _resize_for_backbone(image: np.ndarray, short_side: int, patch: int) -> torch.Tensor:
    height, width = image.shape[:2]
    scale = short_side / min(height, width)
    size = (
        max(patch, round(height * scale / patch) * patch),
        max(patch, round(width * scale / patch) * patch),
    )
    resized = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return preprocess(resized)


def _window_starts(length: int, window: int, stride: int) -> list[int]:
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def fusion_weight(depth: np.ndarray | None, grid: tuple[int, int], depth_scale: float = 1.0) -> np.ndarray:
    """h x w weight of the global pass: area mean of 1 / (depth / scale + 1), 0 where depth is invalid."""
    if depth is None:
        return np.zeros(grid, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    weight = np.zeros(depth.shape, dtype=np.float32)
    weight[valid] = 1.0 / (depth[valid] / depth_scale + 1.0)
    return cv2.resize(weight, (grid[1], grid[0]), interpolation=cv2.INTER_AREA)


def _resize_channels(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an h x w x C array (any C, which OpenCV's resize does not take)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[0]
    return resized.permute(1, 2, 0).numpy()


def _unit(array: np.ndarray, axis: int = -1) -> np.ndarray:
    norm = np.linalg.norm(array, axis=axis, keepdims=True)
    return array / np.maximum(norm, 1e-12)


# ----------------------------------------------------------------------------------------------------
# PriMaPs and EM


def principal_mask_proposals(
    features: np.ndarray, threshold: float, max_masks: int = 24, min_remaining: float = 0.02
) -> MaskProposals:
    """PriMaPs of one h x w x D grid of unit features (see the module docstring)."""
    height, width, dim = features.shape
    flat = features.reshape(-1, dim).astype(np.float32)
    count = flat.shape[0]
    remaining = np.ones(count, dtype=bool)
    masks: list[np.ndarray] = []
    while len(masks) < max_masks and remaining.sum() > max(min_remaining * count, 0):
        index = np.flatnonzero(remaining)
        points = flat[index]
        covariance = points.T @ points
        _, vectors = np.linalg.eigh(covariance)
        direction = vectors[:, -1]
        projection = points @ direction
        if projection.sum() < 0:
            projection = -projection
        anchor = points[int(np.argmax(projection))]
        member = points @ anchor > threshold
        member[int(np.argmax(projection))] = True
        mask = np.zeros(count, dtype=bool)
        mask[index[member]] = True
        masks.append(mask)
        remaining[index[member]] = False
    if remaining.any() and masks:
        # The leftover patches join the mask whose mean they are most similar to.
        means = _unit(np.stack([flat[m].mean(0) for m in masks]))
        nearest = np.argmax(flat[remaining] @ means.T, axis=1)
        leftover = np.flatnonzero(remaining)
        for mask_index in range(len(masks)):
            masks[mask_index][leftover[nearest == mask_index]] = True
    stacked = np.stack(masks).reshape(-1, height, width)
    flat_masks = stacked.reshape(len(masks), -1)
    sizes = flat_masks.sum(1)
    mean_features = _unit((flat_masks.astype(np.float32) @ flat) / sizes[:, None])
    return MaskProposals(masks=stacked, features=mean_features.astype(np.float32), sizes=sizes)


def _kmeans_plus_plus(
    points: np.ndarray, weights: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """k-means++ seeding on unit vectors with cosine distance 1 - cos, weighted."""
    first = rng.choice(points.shape[0], p=weights / weights.sum())
    centres = [points[first]]
    distance = np.maximum(1.0 - points @ centres[0], 0.0)
    for _ in range(1, k):
        probability = weights * distance**2
        total = probability.sum()
        index = (
            rng.choice(points.shape[0], p=probability / total) if total > 0 else rng.integers(points.shape[0])
        )
        centres.append(points[index])
        distance = np.minimum(distance, np.maximum(1.0 - points @ points[index], 0.0))
    return np.stack(centres)


def _softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def fit_prototypes_em(
    points: np.ndarray,
    weights: np.ndarray,
    k: int,
    iterations: int,
    temperature: float,
    momentum: float,
    batch_size: int,
    seed: int,
    initial: np.ndarray | None = None,
) -> np.ndarray:
    """K x D unit prototypes by mini-batch soft EM on the sphere (momentum updates), started from
    ``initial`` (K x D) or else k-means++ seeding on the points."""
    if points.shape[0] < k:
        raise ValueError(f"{points.shape[0]} training points for {k} classes: give more samples")
    rng = np.random.default_rng(seed)
    points = _unit(points.astype(np.float64))
    weights = weights.astype(np.float64)
    if initial is not None:
        if initial.shape != (k, points.shape[1]):
            raise ValueError(f"initial prototypes of shape {initial.shape}, want {(k, points.shape[1])}")
        prototypes = _unit(initial.astype(np.float64))
    else:
        prototypes = _kmeans_plus_plus(points, weights, k, rng)
    batch_size = max(1, min(batch_size, points.shape[0]))
    for _ in range(iterations):
        order = rng.permutation(points.shape[0])
        mass = np.zeros(k)
        for start in range(0, points.shape[0], batch_size):
            batch = order[start : start + batch_size]
            responsibility = _softmax(points[batch] @ prototypes.T / temperature) * weights[batch, None]
            estimate = responsibility.T @ points[batch]
            batch_mass = responsibility.sum(0)
            mass += batch_mass
            active = batch_mass > 1e-9
            updated = momentum * prototypes[active] + (1.0 - momentum) * _unit(estimate[active])
            prototypes[active] = _unit(updated)
        dead = np.flatnonzero(mass < 1e-6 * weights.sum())
        if dead.size:
            # Re-seed empty prototypes at the points worst explained by the others.
            fit = (points @ prototypes.T).max(1)
            prototypes[dead] = points[np.argsort(fit)[: dead.size]]
    return prototypes.astype(np.float32)


def em_objective(
    points: np.ndarray, weights: np.ndarray, prototypes: np.ndarray, temperature: float
) -> float:
    """Weighted mean log-sum-exp of similarities / temperature (mixture log-likelihood up to a constant)."""
    logits = _unit(points.astype(np.float32)) @ prototypes.T.astype(np.float32) / temperature
    peak = logits.max(1)
    log_sum = peak + np.log(np.exp(logits - peak[:, None]).sum(1))
    return float(np.sum(weights * log_sum) / max(float(np.sum(weights)), 1e-12))


def spherical_kmeans_loss(points: np.ndarray, centres: np.ndarray) -> float:
    """Mean 1 - max cosine of unit points to the centres (the k-means objective, lower is better)."""
    return float(1.0 - np.mean(np.max(_unit(points.astype(np.float32)) @ centres.T, axis=1)))


def spherical_kmeans(points: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Plain (hard, unweighted) k-means on unit vectors, k-means++ start; K x D unit centres."""
    if points.shape[0] < k:
        raise ValueError(f"{points.shape[0]} training points for {k} classes: give more samples")
    rng = np.random.default_rng(seed)
    points = _unit(points.astype(np.float32))
    centres = _kmeans_plus_plus(points, np.ones(points.shape[0]), k, rng).astype(np.float32)
    for _ in range(iterations):
        assignment = np.argmax(points @ centres.T, axis=1)
        one_hot = np.zeros((points.shape[0], k), dtype=np.float32)
        one_hot[np.arange(points.shape[0]), assignment] = 1.0
        sums = one_hot.T @ points
        counts = np.bincount(assignment, minlength=k)
        empty = counts == 0
        centres[~empty] = _unit(sums[~empty])
        if empty.any():
            fit = (points @ centres.T).max(1)
            centres[empty] = points[np.argsort(fit)[: int(empty.sum())]]
    return centres


# ----------------------------------------------------------------------------------------------------
# Refinement


def _guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Grey guided filter (He et al.) of an H x W x C float32 source, box filters from cv2."""
    size = (2 * radius + 1, 2 * radius + 1)

    def box(array: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(array, -1, size, borderType=cv2.BORDER_REFLECT)

    mean_guide = box(guide)
    variance = box(guide * guide) - mean_guide**2
    out = np.empty_like(source)
    for channel in range(source.shape[2]):
        plane = np.ascontiguousarray(source[:, :, channel])
        mean_source = box(plane)
        covariance = box(guide * plane) - mean_guide * mean_source
        a = covariance / (variance + eps)
        b = mean_source - a * mean_guide
        out[:, :, channel] = box(a) * guide + box(b)
    return out


def _segment_mean(segments: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores (H x W x K) averaged within each segment."""
    flat = segments.ravel()
    count = int(flat.max()) + 1
    sizes = np.maximum(np.bincount(flat, minlength=count), 1).astype(np.float32)
    k = scores.shape[2]
    plane = scores.reshape(-1, k)
    means = np.stack([np.bincount(flat, weights=plane[:, c], minlength=count) for c in range(k)], 1)
    means = (means / sizes[:, None]).astype(np.float32)
    return means[flat].reshape(scores.shape)


# ----------------------------------------------------------------------------------------------------
# The labeller


class SemanticPseudoLabeller:
    """K semantic pseudo-classes per pixel; ``fit`` on a training split first (or ``load``)."""

    def __init__(self, config: SemanticConfig | None = None, backbone: DinoVisionTransformer | None = None):
        self.config = config or SemanticConfig()
        self.backbone = backbone
        self.prototypes: np.ndarray | None = None
        self.feature_mean: np.ndarray | None = None
        """D mean feature of the training split, subtracted before scoring (centre_features)."""
        if backbone is not None:
            self._check_patch_multiples(backbone.patch_size)

    def _check_patch_multiples(self, patch: int) -> None:
        if self.config.sliding_window:
            for name in ("window_size", "window_stride"):
                if getattr(self.config, name) % patch:
                    raise ValueError(
                        f"{name} {getattr(self.config, name)} is not a multiple of the patch {patch}"
                    )

    def _backbone(self) -> DinoVisionTransformer:
        if self.backbone is None:
            raise ValueError("no backbone: pass one to SemanticPseudoLabeller(config, backbone)")
        return self.backbone

    @torch.inference_mode()
    def _tokens(self, images: torch.Tensor) -> np.ndarray:
        backbone = self._backbone()
        device = next(backbone.parameters()).device
        tokens = backbone(images.to(device)).float()
        return F.normalize(tokens, dim=-1).cpu().numpy()

    def global_features(self, image: np.ndarray) -> np.ndarray:
        """h x w x D unit patch tokens of the whole image at ``global_short_side``."""
        check_image(image)
        patch = self._backbone().patch_size
        return self._tokens(_resize_for_backbone(image, self.config.global_short_side, patch))[0]

    def window_features(self, image: np.ndarray) -> np.ndarray:
        """h x w x D unit patch tokens averaged over overlapping crops at ``window_short_side``."""
        check_image(image)
        config = self.config
        patch = self._backbone().patch_size
        self._check_patch_multiples(patch)
        resized = _resize_for_backbone(image, config.window_short_side, patch)
        height, width = resized.shape[-2:]
        window_h, window_w = min(config.window_size, height), min(config.window_size, width)
        crops, places = [], []
        for top in _window_starts(height, window_h, config.window_stride):
            for left in _window_starts(width, window_w, config.window_stride):
                crops.append(resized[:, :, top : top + window_h, left : left + window_w])
                places.append((top // patch, left // patch))
        tokens = self._tokens(torch.cat(crops))
        grid_h, grid_w = height // patch, width // patch
        total = np.zeros((grid_h, grid_w, tokens.shape[-1]), dtype=np.float32)
        counts = np.zeros((grid_h, grid_w, 1), dtype=np.float32)
        crop_h, crop_w = tokens.shape[1:3]
        for crop, (row, column) in zip(tokens, places, strict=True):
            total[row : row + crop_h, column : column + crop_w] += crop
            counts[row : row + crop_h, column : column + crop_w] += 1
        return _unit(total / counts)

    def dense_features(self, image: np.ndarray, depth: np.ndarray | None = None) -> np.ndarray:
        """h x w x D unit features: the global pass, fused by depth with the sliding-window pass."""
        check_image(image)
        depth = check_depth(depth, image.shape)
        global_tokens = self.global_features(image)
        if not self.config.sliding_window:
            return global_tokens
        window_tokens = self.window_features(image)
        grid = window_tokens.shape[:2]
        upsampled = _resize_channels(global_tokens, grid)
        weight = fusion_weight(depth, grid, self.config.depth_scale)[..., None]
        return _unit(weight * _unit(upsampled) + (1.0 - weight) * window_tokens).astype(np.float32)

    def mask_proposals(self, features: np.ndarray) -> MaskProposals:
        """PriMaPs on the image-centred features; mask features are means of the given features."""
        config = self.config
        flat = features.reshape(-1, features.shape[-1])
        centred = _unit(features - flat.mean(0))
        proposals = principal_mask_proposals(
            centred, config.primaps_threshold, config.primaps_max_masks, config.primaps_min_remaining
        )
        masks = proposals.masks.reshape(len(proposals.sizes), -1).astype(np.float32)
        means = _unit(masks @ flat / proposals.sizes[:, None]).astype(np.float32)
        return MaskProposals(masks=proposals.masks, features=means, sizes=proposals.sizes)

    def _centre(self, features: np.ndarray, image_mean: np.ndarray | None = None) -> np.ndarray:
        if self.feature_mean is None:
            return features
        mean = self.feature_mean
        share = self.config.image_centre_share
        if share > 0 and image_mean is not None:
            mean = (1.0 - share) * mean + share * image_mean
        return _unit(features - mean).astype(np.float32)

    # --- fitting ------------------------------------------------------------------------------------

    def fit(self, samples: Iterable[tuple[np.ndarray, np.ndarray | None]]) -> None:
        """Fits the K prototypes (and the mean feature) on (image, depth) training samples."""
        config = self.config
        rng = np.random.default_rng(config.seed)
        patches: list[np.ndarray] = []
        every_patch: list[np.ndarray] = []
        masks: list[np.ndarray] = []
        image_means: list[np.ndarray] = []
        weights: list[np.ndarray] = []
        feature_sum, feature_count = 0.0, 0
        for image, depth in samples:
            if config.method == "kmeans":
                features = self.global_features(check_image(image))
                patches.append(features.reshape(-1, features.shape[-1]))
                continue
            features = self.dense_features(image, depth)
            if config.em_iterations > 0 or config.em_init != "kmeans":
                proposals = self.mask_proposals(features)
                masks.append(proposals.features)
                weights.append(proposals.sizes.astype(np.float64) ** config.mask_weight_power)
            else:  # the k-means start alone: no EM, so no mask proposals are needed
                masks.append(features.reshape(-1, features.shape[-1])[:0])
                weights.append(np.zeros(0))
            flat = features.reshape(-1, features.shape[-1])
            image_means.append(flat.mean(0))
            count = min(config.patch_samples_per_image, flat.shape[0])
            patches.append(flat[rng.choice(flat.shape[0], count, replace=False)] if count else flat[:0])
            if config.em_init == "kmeans":
                every_patch.append(flat)
            feature_sum = feature_sum + flat.sum(0, dtype=np.float64)
            feature_count += flat.shape[0]
        if not patches:
            raise ValueError("fit needs at least one (image, depth) sample")
        self.feature_mean = None
        if config.method == "kmeans":
            self.prototypes = spherical_kmeans(
                np.concatenate(patches), config.num_classes, config.kmeans_iterations, config.seed
            )
            return
        if config.centre_features:
            self.feature_mean = (np.asarray(feature_sum) / feature_count).astype(np.float32)
        mask_points = np.concatenate([self._centre(m, mu) for m, mu in zip(masks, image_means, strict=True)])
        patch_points = np.concatenate(
            [self._centre(p, mu) for p, mu in zip(patches, image_means, strict=True)]
        )
        points = np.concatenate([mask_points, patch_points])
        point_weights = np.concatenate([*weights, np.ones(patch_points.shape[0])])
        all_patches = None
        if every_patch:
            all_patches = np.concatenate(
                [self._centre(p, mu) for p, mu in zip(every_patch, image_means, strict=True)]
            )
        best, best_objective = None, -np.inf
        for restart in range(config.em_restarts):
            seed = config.seed + 1000 * restart
            initial = None
            if all_patches is not None:
                initial = spherical_kmeans(all_patches, config.num_classes, config.kmeans_iterations, seed)
            if initial is not None and config.em_iterations == 0:
                prototypes = initial
                if config.em_restarts == 1:
                    best = prototypes
                    break
                objective = -spherical_kmeans_loss(all_patches, prototypes)
                if objective > best_objective:
                    best, best_objective = prototypes, objective
                continue
            prototypes = fit_prototypes_em(
                points,
                point_weights,
                config.num_classes,
                config.em_iterations,
                config.em_temperature,
                config.em_momentum,
                config.em_batch_size,
                seed,
                initial,
            )
            objective = em_objective(points, point_weights, prototypes, config.em_temperature)
            if objective > best_objective:
                best, best_objective = prototypes, objective
        self.prototypes = best

    # --- persistence --------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Prototypes and config as .npz, written atomically."""
        if self.prototypes is None:
            raise ValueError("nothing to save: fit or load prototypes first")

        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            np.savez(
                stream,
                format=np.array(PROTOTYPE_FORMAT),
                prototypes=self.prototypes.astype(np.float32),
                feature_mean=np.zeros(0, np.float32) if self.feature_mean is None else self.feature_mean,
                config=np.array(json.dumps(self.config.to_dict(), sort_keys=True)),
            )

    @classmethod
    def load(
        cls,
        path: str | Path,
        backbone: DinoVisionTransformer | None = None,
        config: SemanticConfig | None = None,
    ) -> SemanticPseudoLabeller:
        """A labeller with the saved prototypes and (unless ``config`` is given) the saved config."""

        with np.load(path, allow_pickle=False) as data:
            if "format" not in data or str(data["format"]) != PROTOTYPE_FORMAT:
                raise ValueError(f"{path} is not a semantic prototype file ({PROTOTYPE_FORMAT})")
            prototypes = data["prototypes"].astype(np.float32)
            feature_mean = data["feature_mean"].astype(np.float32)
            saved = SemanticConfig.from_dict(json.loads(str(data["config"])))
        config = config or saved
        if prototypes.shape[0] != config.num_classes:
            raise ValueError(
                f"{path} holds {prototypes.shape[0]} prototypes, config wants {config.num_classes}"
            )
        labeller = cls(config, backbone)
        labeller.prototypes = prototypes
        labeller.feature_mean = feature_mean if feature_mean.size else None
        return labeller

    # --- prediction ---------------------------------------------------------------------------------

    def patch_scores(self, features: np.ndarray) -> np.ndarray:
        """h x w x K cosine similarities of unit features to the prototypes."""
        if self.prototypes is None:
            raise ValueError("no prototypes: fit or load first")
        if features.shape[-1] != self.prototypes.shape[1]:
            raise ValueError(
                f"features of dimension {features.shape[-1]} for prototypes of {self.prototypes.shape[1]}"
            )
        image_mean = features.reshape(-1, features.shape[-1]).mean(0)
        return (self._centre(features, image_mean) @ self.prototypes.T).astype(np.float32)

    def vote_in_masks(self, features: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Scores blended (``mask_vote``) with the mean scores of each patch's PriMaPs mask."""
        weight = self.config.mask_vote
        if weight <= 0:
            return scores
        masks = self.mask_proposals(features).masks.reshape(-1, scores.shape[0] * scores.shape[1])
        flat = scores.reshape(-1, scores.shape[-1])
        sizes = np.maximum(masks.sum(1, keepdims=True), 1).astype(np.float32)
        means = (masks.astype(np.float32) @ flat) / sizes
        voted = means[np.argmax(masks, axis=0)]
        return ((1.0 - weight) * flat + weight * voted).reshape(scores.shape).astype(np.float32)

    def refine(self, image: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """h x w x K patch scores -> H' x W' x K edge-aware scores at ``refine_scale`` of the image."""
        config = self.config
        height, width = image.shape[:2]
        refinement = config.refinement
        scale = config.refine_scale if refinement != "none" else 1.0
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        dense = _resize_channels(scores, size)
        dense = np.ascontiguousarray(dense)
        if refinement == "none":
            return dense
        small = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
        if refinement == "guided":
            guide = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
            return _guided_filter(guide, dense, config.guided_radius, config.guided_eps)
        if refinement == "slic":
            from skimage.segmentation import slic

            segments = slic(
                small,
                n_segments=config.slic_segments,
                compactness=config.slic_compactness,
                start_label=0,
                channel_axis=-1,
            )
        else:
            from skimage.segmentation import felzenszwalb

            segments = felzenszwalb(small, scale=100, sigma=0.5, min_size=max(20, small.size // 3 // 2000))
        return _segment_mean(segments.astype(np.int64), dense)

    def predict(self, image: np.ndarray, depth: np.ndarray | None = None) -> SemanticPrediction:
        """Labels (H x W uint8, 0..K-1) and confidence (H x W float32) of one image."""
        started = time.perf_counter()
        check_image(image)
        depth = check_depth(depth, image.shape)
        if self.prototypes is None:
            raise ValueError("no prototypes: fit or load first")
        timings: dict[str, float] = {}
        tic = time.perf_counter()
        if self.config.method == "kmeans":
            features = self.global_features(image)
        else:
            features = self.dense_features(image, depth)
        timings["features"] = time.perf_counter() - tic
        tic = time.perf_counter()
        scores = self.patch_scores(features)
        if self.config.method != "kmeans":
            scores = self.vote_in_masks(features, scores)
        scores = self.refine(image, scores)
        timings["refinement"] = time.perf_counter() - tic
        tic = time.perf_counter()
        probability = _softmax(scores / self.config.em_temperature)
        labels = np.argmax(probability, axis=-1).astype(np.uint8)
        confidence = probability.max(-1).astype(np.float32)
        height, width = image.shape[:2]
        if labels.shape != (height, width):
            labels = cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)
            confidence = cv2.resize(confidence, (width, height), interpolation=cv2.INTER_LINEAR)
        timings["labels"] = time.perf_counter() - tic
        timings["total"] = time.perf_counter() - started
        return SemanticPrediction(labels=labels, confidence=confidence, timings=timings)


def kmeans_baseline(
    samples: Iterable[tuple[np.ndarray, np.ndarray | None]],
    backbone: DinoVisionTransformer,
    config: SemanticConfig | None = None,
) -> SemanticPseudoLabeller:
    """Plain k-means on global-pass patch features (no PriMaPs, fusion or refinement), fitted."""
    base = config or SemanticConfig()
    baseline = SemanticPseudoLabeller(
        dataclasses.replace(base, method="kmeans", sliding_window=False, refinement="none"), backbone
    )
    baseline.fit(samples)
    return baseline


# ----------------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class HungarianResult:
    scores: SemanticResult
    mapping: ClassMapping
    confusion: ConfusionMatrix

    @property
    def miou(self) -> float:
        return self.scores.miou


def hungarian_miou(
    predictions: Iterable[np.ndarray],
    truths: Iterable[np.ndarray],
    num_classes: int,
    num_gt_classes: int = 19,
) -> HungarianResult:
    """Split-wide Hungarian matching of K pseudo-classes to the ground truth (ignore 255), then mIoU."""
    confusion = ConfusionMatrix(num_gt_classes, num_classes)
    for prediction, truth in zip(predictions, truths, strict=True):
        confusion.update(truth, prediction)
    mapping = match_pseudo_classes(confusion)
    matched = ConfusionMatrix(num_gt_classes)
    for pseudo_class in range(num_classes):
        target = int(mapping.target[pseudo_class])
        column = matched.void_column if target == IGNORE_CLASS else target
        matched.counts[:, column] += confusion.counts[:, pseudo_class]
    matched.counts[:, matched.void_column] += confusion.counts[:, confusion.void_column]
    return HungarianResult(scores=semantic_scores(matched), mapping=mapping, confusion=confusion)


__all__ = [
    "PROTOTYPE_FORMAT",
    "HungarianResult",
    "MaskProposals",
    "SemanticConfig",
    "SemanticPrediction",
    "SemanticPseudoLabeller",
    "check_depth",
    "check_image",
    "em_objective",
    "fit_prototypes_em",
    "fusion_weight",
    "hungarian_miou",
    "kmeans_baseline",
    "principal_mask_proposals",
    "spherical_kmeans",
]
