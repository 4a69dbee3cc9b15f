"""Stage 2-3 training pieces: labels, augmentation, pairs, copy-paste, self-labels, config, and a
tiny Lightning run that checkpoints and resumes."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

from cups_ros.core.config import ConfigError, apply_overrides, load_config
from cups_ros.core.panoptic import IGNORE_CLASS
from cups_ros.model.model_file import load_model
from cups_ros.model.network import NetworkOutputs
from cups_ros.model.postprocess import PostProcessConfig
from cups_ros.sim.config import SimConfig
from cups_ros.sim.dataset import write_split
from cups_ros.train.config import AugmentationConfig, CopyPasteConfig, TrainConfig
from cups_ros.train.copy_paste import cut_objects, paste_objects
from cups_ros.train.dataset import (
    NearbyFramePairs,
    PanopticFrames,
    ground_truth_set,
    scale_and_crop,
    split_label_map,
)
from cups_ros.train.run import bootstrap, logged_rows, self_train
from cups_ros.train.self_labels import self_labels, tta_outputs

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]


def test_config_file_holds_the_defaults_and_overrides_are_checked() -> None:
    assert load_config(TrainConfig, REPOSITORY_ROOT / "config" / "train.yaml") == TrainConfig()
    config = apply_overrides(
        TrainConfig, TrainConfig(), ["bootstrap.steps=12", "trainer.precision=bf16-mixed"]
    )
    assert config.bootstrap.steps == 12 and config.trainer.precision == "bf16-mixed"
    with pytest.raises(ConfigError, match="unknown key"):
        apply_overrides(TrainConfig, TrainConfig(), ["bootstrap.stepz=3"])
    with pytest.raises(ConfigError, match="even"):
        apply_overrides(TrainConfig, TrainConfig(), ["bootstrap.batch_size=3"])
    with pytest.raises(ConfigError, match="multiple of 14"):
        apply_overrides(TrainConfig, TrainConfig(), ["augmentation.crop_width=100"])


def test_label_maps_split_into_semantic_and_thing_instances() -> None:
    panoptic = np.array([[1000, 2003, 2000], [255000, 3005, 0]], np.int32)
    semantic, instance = split_label_map(panoptic, thing_classes=[2])
    assert semantic.tolist() == [[1, 2, IGNORE_CLASS], [IGNORE_CLASS, 3, 0]]  # a thing without id: ignore
    assert instance.tolist() == [[0, 3, 0], [0, 0, 0]]  # class 3 is stuff: its id is dropped


def test_scale_and_crop_keeps_labels_aligned_and_pads_with_ignore() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    semantic = np.zeros((100, 200), np.int64)
    instance = np.zeros((100, 200), np.int64)
    image[:, 100:] = 255
    semantic[:, 100:] = 4
    instance[:, 100:] = 9
    config = AugmentationConfig(crop_height=56, crop_width=112, min_scale=0.5, max_scale=0.5)
    out_image, out_semantic, out_instance = scale_and_crop(
        image, semantic, instance, config, np.random.default_rng(0)
    )
    assert out_image.shape == (56, 112, 3) and out_semantic.shape == (56, 112)
    assert (out_semantic[28:] == IGNORE_CLASS).all()  # 0.5 x 112 wide = 28 rows of image, rest padding
    bright = out_image[:28, :, 0] > 127
    assert ((out_semantic[:28] == 4) == bright).mean() > 0.97
    assert ((out_instance[:28] == 9) == bright).mean() > 0.97


@pytest.fixture(scope="module")
def tiny_split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    write_split(root, SimConfig().with_resolution(256, 128), "train", 2, 4, None, show_progress=False)
    return root


def test_pairs_come_from_one_sequence_within_the_gap(
    tiny_split: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    labels = ground_truth_set(tiny_split, "train")
    assert len(labels.records) == 8 and labels.thing_classes == list(range(11, 19))
    sampler = NearbyFramePairs(labels, gap=1, seed=3)
    indices = list(sampler)
    assert len(indices) == len(sampler) == 8
    for first, second in zip(indices[::2], indices[1::2], strict=True):
        a, b = labels.records[first], labels.records[second]
        assert a.sequence == b.sequence and abs(a.index - b.index) == 1
    assert indices != list(sampler)  # a new draw per epoch
    ranks = [list(NearbyFramePairs(labels, 1, 3, rank, 2)) for rank in (0, 1)]
    assert len(ranks[0]) == 4 and ranks[0] != ranks[1]
    # Without explicit ranks the sampler asks the process group when iteration starts (DDP).
    lazy = NearbyFramePairs(labels, 1, 3)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
    assert list(lazy) == ranks[1]


def test_frames_are_augmented_differently_on_every_call(tiny_split: Path) -> None:
    labels = ground_truth_set(tiny_split, "train")
    frames = PanopticFrames(labels, AugmentationConfig(crop_height=56, crop_width=112))
    first, second = frames[0], frames[0]
    assert first["image"].shape == (56, 112, 3) and first["image"].dtype == torch.uint8
    assert not torch.equal(first["image"], second["image"])
    plain = PanopticFrames(labels, AugmentationConfig(crop_height=56, crop_width=112), augment=False)
    assert torch.equal(plain[1]["image"], plain[1]["image"])


def test_copy_paste_writes_object_pixels_class_and_a_new_id() -> None:
    images = torch.zeros(2, 40, 80, 3, dtype=torch.uint8)
    semantic = torch.zeros(2, 40, 80, dtype=torch.long)
    instance = torch.zeros(2, 40, 80, dtype=torch.long)
    images[0, 5:15, 5:25] = 200
    semantic[0, 5:15, 5:25] = 3
    instance[0, 5:15, 5:25] = 4
    objects = cut_objects(images, instance, semantic, min_area=10)
    assert len(objects) == 1 and objects[0].class_id == 3 and objects[0].mask.shape == (10, 20)
    config = CopyPasteConfig(min_objects=1, max_objects=1, min_scale=1.0, max_scale=1.0, min_area=10)
    pasted_images, pasted_semantic, pasted_instance, ids = paste_objects(
        images, semantic, instance, objects, config, np.random.default_rng(1)
    )
    assert ids == [{5}, {1}]
    for index, new_id in ((0, 5), (1, 1)):
        mask = pasted_instance[index] == new_id
        assert int(mask.sum()) == 200
        assert (pasted_semantic[index][mask] == 3).all() and (pasted_images[index][mask] == 200).all()
    assert torch.equal(images[1], torch.zeros_like(images[1]))  # inputs are not modified


class FixedTeacher(torch.nn.Module):
    """Outputs that do not depend on the image, at the network's output grid."""

    def __init__(self, semantic_logits: torch.Tensor, heatmap: torch.Tensor) -> None:
        super().__init__()
        self.backbone = types.SimpleNamespace(patch_size=14)
        self.semantic_logits, self.heatmap = semantic_logits, heatmap

    def forward(self, images: torch.Tensor) -> NetworkOutputs:
        batch = images.shape[0]
        size = (images.shape[-2] // 14 * 4, images.shape[-1] // 14 * 4)

        def resize(tensor: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.interpolate(tensor, size=size, mode="nearest").expand(
                batch, -1, -1, -1
            )

        logits, heatmap = resize(self.semantic_logits), resize(self.heatmap)
        offsets = torch.zeros(batch, 2, *size)
        offsets[:, 0] = 1.0  # a constant, flip-unaware offset
        return NetworkOutputs(logits, heatmap, offsets, torch.zeros(batch, 2, *size))


def teacher_maps(peak: float) -> FixedTeacher:
    logits = torch.zeros(1, 2, 16, 32)
    logits[0, 0, :, :16] = 4.0  # class 0 sure on the left
    logits[0, 0, :, 16:] = 0.1  # barely on the right
    logits[0, 1, 4:12, 4:12] = 9.0  # a thing
    heatmap = torch.zeros(1, 1, 16, 32)
    heatmap[0, 0, 8, 8] = peak
    return FixedTeacher(logits, heatmap)


def test_self_labels_keep_confident_pixels_per_class_and_confident_instances() -> None:
    images = torch.zeros(1, 56, 112, 3, dtype=torch.uint8)
    grouping = PostProcessConfig(nms_kernel=3, min_instance_area=4)
    arguments = dict(thing_classes=[1], scales=[1.0], flip=False, postprocess=grouping)
    semantic, instance = self_labels(
        teacher_maps(0.9), images, instance_score=0.7, semantic_factor=0.5, **arguments
    )
    assert (semantic[0, :, 60:] == 0).all()  # 0.52 > 0.5 x 0.98: kept
    assert int(instance.max()) == 1 and (semantic[instance > 0] == 1).all()
    semantic, _ = self_labels(teacher_maps(0.9), images, instance_score=0.7, semantic_factor=0.6, **arguments)
    assert (semantic[0, :, 60:] == IGNORE_CLASS).all()  # 0.52 < 0.6 x 0.98: ignored
    semantic, instance = self_labels(
        teacher_maps(0.5), images, instance_score=0.7, semantic_factor=0.5, **arguments
    )
    assert int(instance.max()) == 0 and (semantic[0, 16:40, 16:40] == IGNORE_CLASS).all()


def two_objects(peaks: tuple[float, float]) -> FixedTeacher:
    logits = torch.zeros(1, 2, 16, 32)
    logits[0, 0] = 4.0
    logits[0, 1, 4:12, 2:10] = 9.0  # two things of class 1, apart
    logits[0, 1, 4:12, 20:28] = 9.0
    heatmap = torch.zeros(1, 1, 16, 32)
    heatmap[0, 0, 8, 6], heatmap[0, 0, 8, 24] = peaks
    return FixedTeacher(logits, heatmap)


def test_relative_instance_scores_keep_the_best_of_each_class_and_those_close_to_it() -> None:
    images = torch.zeros(1, 56, 112, 3, dtype=torch.uint8)
    grouping = PostProcessConfig(nms_kernel=3, min_instance_area=4, centre_threshold=0.05)
    arguments = dict(thing_classes=[1], scales=[1.0], flip=False, postprocess=grouping, semantic_factor=0.5)

    def kept(peaks: tuple[float, float], relative: bool) -> int:
        _, instance = self_labels(
            two_objects(peaks), images, instance_score=0.7, instance_score_relative=relative, **arguments
        )
        return int(instance.max())

    # Scores are centre peak x class probability (~1 here): 0.3 and 0.25 -> 0.25 >= 0.7 x 0.3.
    assert kept((0.3, 0.25), relative=True) == 2
    assert kept((0.3, 0.25), relative=False) == 0  # CUPS's absolute 0.7 keeps neither
    assert kept((0.3, 0.1), relative=True) == 1  # 0.1 < 0.7 x 0.3
    assert kept((1.0, 0.95), relative=False) == 2  # (bilinear upsampling lowers a one-cell peak a little)


def test_tta_averages_flipped_passes_with_their_offsets_mirrored() -> None:
    images = torch.zeros(1, 56, 112, 3, dtype=torch.uint8)
    _, _, offsets = tta_outputs(teacher_maps(0.9), images, [1.0], flip=False)
    assert torch.allclose(offsets[:, 0], torch.full_like(offsets[:, 0], 112 / 32))
    probabilities, _, offsets = tta_outputs(teacher_maps(0.9), images, [0.5, 1.0], flip=True)
    assert torch.allclose(offsets[:, 0], torch.zeros_like(offsets[:, 0]), atol=1e-5)  # +d and -d
    assert torch.allclose(probabilities.sum(1), torch.ones(1, 56, 112), atol=1e-5)


def tiny_train_config() -> TrainConfig:
    config = apply_overrides(
        TrainConfig,
        TrainConfig(),
        [
            "network.input_height=56",
            "network.input_width=112",
            "augmentation.crop_height=56",
            "augmentation.crop_width=112",
            "bootstrap.batch_size=2",
            "bootstrap.warmup_steps=1",
            "copy_paste.own_predictions_after=2",
            "self_train.batch_size=2",
            "self_train.rounds=1",
            "self_train.steps_per_round=2",
            "trainer.num_workers=0",
            "trainer.checkpoint_every_steps=2",
            "trainer.log_every_steps=1",
            "trainer.progress=false",
            "trainer.accelerator=cpu",
        ],
    )
    return config


@pytest.mark.slow
def test_bootstrap_resumes_from_its_checkpoint_and_self_training_starts_from_it(
    tiny_split: Path, tmp_path: Path
) -> None:
    labels = ground_truth_set(tiny_split, "train")
    config = tiny_train_config()
    config.bootstrap.steps = 2
    run = tmp_path / "bootstrap"
    bootstrap(labels, config, run)
    assert (run / "checkpoints" / "last.ckpt").is_file()
    first_model = load_model(run / "model.pt")
    config = tiny_train_config()
    config.bootstrap.steps = 4
    model_path = bootstrap(labels, config, run)  # resumes at step 2, trains 2 more
    rows = logged_rows(run / "logs")
    assert sorted({int(r["step"]) for r in rows if r.get("train/loss")}) == [0, 1, 2, 3]
    network = load_model(model_path)
    assert network.config.num_classes == 19 and network.config.thing_classes == list(range(11, 19))
    assert not torch.equal(network.heads.semantic.out.weight, first_model.heads.semantic.out.weight)
    assert torch.equal(network.backbone.pos_embed, first_model.backbone.pos_embed)  # frozen
    assert (run / "losses.png").is_file() and (run / "predictions.png").is_file()
    student_run = tmp_path / "self_train"
    self_trained = load_model(self_train(model_path, labels, tiny_train_config(), student_run))
    assert self_trained.config == network.config
    # The EMA teacher moved (momentum 0.999, two steps): a little, not nothing.
    difference = (self_trained.heads.semantic.out.weight - network.heads.semantic.out.weight).abs().max()
    assert 0 < float(difference) < 1e-2
