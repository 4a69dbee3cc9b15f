"""Post-processing, targets and losses of the network on hand-worked cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cups_ros.core.panoptic import IGNORE_CLASS
from cups_ros.model.losses import LossConfig, drop_loss_mask, embedding_loss, make_targets, panoptic_losses
from cups_ros.model.network import NetworkOutputs
from cups_ros.model.postprocess import PostProcessConfig, postprocess

HEIGHT, WIDTH = 20, 40
THING = 1


def two_cars_outputs(heat_peaks: list[tuple[int, int]] | None = None) -> NetworkOutputs:
    """Stuff class 0 everywhere, thing class 1 in two boxes; peaks at their centres; offsets exact."""
    logits = torch.zeros(1, 3, HEIGHT, WIDTH)
    logits[0, 0] = 5.0
    boxes = [(2, 8, 4, 12), (6, 14, 24, 36)]  # y0, y1, x0, x1 (exclusive)
    centres = []
    for y0, y1, x0, x1 in boxes:
        logits[0, 1, y0:y1, x0:x1] = 10.0
        centres.append(((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2))
    heatmap = torch.zeros(1, 1, HEIGHT, WIDTH)
    peaks = heat_peaks if heat_peaks is not None else [(round(cy), round(cx)) for cy, cx in centres]
    for y, x in peaks:
        heatmap[0, 0, y, x] = 0.9
    ys, xs = torch.meshgrid(torch.arange(HEIGHT).float(), torch.arange(WIDTH).float(), indexing="ij")
    offsets = torch.zeros(1, 2, HEIGHT, WIDTH)
    for (y0, y1, x0, x1), (y, x) in zip(boxes, peaks, strict=False):
        offsets[0, 0, y0:y1, x0:x1] = x - xs[y0:y1, x0:x1]
        offsets[0, 1, y0:y1, x0:x1] = y - ys[y0:y1, x0:x1]
    embedding = torch.nn.functional.normalize(torch.randn(1, 4, HEIGHT, WIDTH), dim=1)
    return NetworkOutputs(logits, heatmap, offsets, embedding)


def test_postprocess_groups_two_instances_with_their_class_and_boxes() -> None:
    config = PostProcessConfig(nms_kernel=3, min_instance_area=4)
    prediction = postprocess(two_cars_outputs(), [THING], (HEIGHT, WIDTH), (HEIGHT, WIDTH), config)[0]
    assert [i.class_id for i in prediction.instances] == [THING, THING]
    boxes = sorted(i.box for i in prediction.instances)
    assert boxes == [(4, 2, 11, 7), (24, 6, 35, 13)]
    assert sorted(i.area for i in prediction.instances) == [48, 96]
    assert set(np.unique(prediction.panoptic // 1000)) == {0, THING}
    assert (prediction.semantic[prediction.instance_ids == 0] == 0).all()
    assert prediction.instances[0].embedding.shape == (4,)
    assert np.isclose(np.linalg.norm(prediction.instances[0].embedding), 1.0)


def test_postprocess_resizes_to_the_output_size_and_voids_things_without_a_centre() -> None:
    config = PostProcessConfig(nms_kernel=3, min_instance_area=4)
    prediction = postprocess(two_cars_outputs([]), [THING], (HEIGHT, WIDTH), (40, 80), config)[0]
    assert prediction.panoptic.shape == (40, 80)
    assert not prediction.instances
    assert (prediction.panoptic == IGNORE_CLASS * 1000).sum() == (48 + 96) * 4
    assert (prediction.semantic == IGNORE_CLASS).sum() == (48 + 96) * 4


def test_postprocess_drops_small_instances() -> None:
    config = PostProcessConfig(nms_kernel=3, min_instance_area=60)
    prediction = postprocess(two_cars_outputs(), [THING], (HEIGHT, WIDTH), (HEIGHT, WIDTH), config)[0]
    assert [i.area for i in prediction.instances] == [96]


def square_labels() -> tuple[torch.Tensor, torch.Tensor]:
    semantic = torch.zeros(1, 56, 112, dtype=torch.long)
    instance = torch.zeros(1, 56, 112, dtype=torch.long)
    semantic[0, 14:42, 28:56] = THING
    instance[0, 14:42, 28:56] = 7
    semantic[0, :, 100:] = IGNORE_CLASS
    return semantic, instance


def test_targets_put_the_peak_at_the_mass_centre_and_offsets_point_to_it() -> None:
    semantic, instance = square_labels()
    targets = make_targets(semantic, instance, [{7: 1007}], (16, 32), sigma=2.0)
    heatmap = targets.heatmap[0, 0]
    # The square covers grid cells 4..11 x 8..15, centre (7.5, 11.5): four cells share the maximum.
    assert heatmap.max() == pytest.approx(np.exp(-0.5 / 8.0), rel=1e-5)
    assert targets.offsets[0, 0, 4, 8] == pytest.approx(3.5) and targets.offsets[0, 1, 4, 8] == pytest.approx(
        3.5
    )
    assert targets.offsets[0, :, 0, 0].abs().sum() == 0
    assert targets.track_keys == [{7: 1007}]
    assert targets.ignore[0, :, 29:].all() and not targets.ignore[0, :, :28].any()


def test_drop_loss_spares_confident_objects_unknown_to_the_labels_only() -> None:
    semantic, instance = square_labels()
    targets = make_targets(semantic, instance, [{7: 1007}], (16, 32), sigma=2.0)
    logits = torch.zeros(1, 2, 16, 32)
    logits[0, 0] = 1.0
    logits[0, 1, 4:12, 8:16] = 5.0  # the labelled square
    logits[0, 1, 2:6, 20:26] = 5.0  # an object the labels lack
    heatmap = torch.zeros(1, 1, 16, 32)
    heatmap[0, 0, 8, 12] = 0.9
    heatmap[0, 0, 4, 23] = 0.9
    outputs = NetworkOutputs(logits, heatmap, torch.zeros(1, 2, 16, 32), torch.zeros(1, 4, 16, 32))
    dropped = drop_loss_mask(outputs, targets, [THING], LossConfig())[0]
    assert dropped[2:6, 20:26].all()
    assert not dropped[4:12, 8:16].any()
    assert int(dropped.sum()) == 24
    assert not drop_loss_mask(outputs, targets, [THING], LossConfig(drop_loss=False)).any()


def test_embedding_loss_is_lower_when_tracks_agree_across_frames() -> None:
    semantic = torch.zeros(2, 8, 8, dtype=torch.long)
    instance = torch.zeros(2, 8, 8, dtype=torch.long)
    instance[:, :4] = 1
    instance[:, 4:] = 2
    keys = [{1: 11, 2: 12}, {1: 11, 2: 12}]
    targets = make_targets(semantic, instance, keys, (8, 8), 1.0)
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    good = torch.zeros(2, 2, 8, 8)
    good[:, :, :4] = a.view(1, 2, 1, 1)
    good[:, :, 4:] = b.view(1, 2, 1, 1)
    swapped = good.clone()
    swapped[1] = good[1].flip(1)  # frame 2 gives each track the other's embedding
    assert embedding_loss(good, targets, 0.1) < embedding_loss(swapped, targets, 0.1) - 1.0


def test_losses_are_finite_with_gradients_and_ignore_all_ignored_labels() -> None:
    semantic, instance = square_labels()
    targets = make_targets(semantic, instance, [{7: 1007}], (16, 32), sigma=2.0)
    outputs = NetworkOutputs(
        torch.randn(1, 2, 16, 32, requires_grad=True),
        torch.rand(1, 1, 16, 32, requires_grad=True),
        torch.randn(1, 2, 16, 32, requires_grad=True),
        torch.nn.functional.normalize(torch.randn(1, 4, 16, 32), dim=1).requires_grad_(),
    )
    losses = panoptic_losses(outputs, targets, [THING], LossConfig())
    losses["loss"].backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert outputs.semantic_logits.grad is not None and outputs.centre_offsets.grad.abs().sum() > 0
    ignored = make_targets(
        torch.full_like(semantic, IGNORE_CLASS), torch.zeros_like(instance), [{}], (16, 32), 2.0
    )
    assert panoptic_losses(outputs, ignored, [THING], LossConfig())["semantic"] == 0
