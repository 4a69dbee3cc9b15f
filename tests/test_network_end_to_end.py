"""The whole network path in CI, tiny: simulated stereo video -> stage-1 pseudo-labels -> bootstrap
training -> ONNX export -> onnxruntime -> panoptic output, and the command lines on the way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cups_ros.features import FeatureBackboneConfig
from cups_ros.model.model_file import load_model
from cups_ros.pseudo.motion import MotionConfig
from cups_ros.pseudo.pipeline import PseudoLabelConfig, run_pseudo_labelling
from cups_ros.pseudo.semantics import SemanticConfig
from cups_ros.pseudo.sources import open_sequences
from cups_ros.runtime.engines import open_engine
from cups_ros.runtime.export import export_onnx
from cups_ros.runtime.predictor import Predictor, max_abs_differences, predictions_equal
from cups_ros.sim.config import SimConfig
from cups_ros.sim.dataset import load_split, write_split
from training.bootstrap import main as bootstrap_main
from training.evaluate import main as evaluate_main

pytestmark = pytest.mark.slow

TINY_TRAINING = [
    "network.input_height=56",
    "network.input_width=112",
    "augmentation.crop_height=56",
    "augmentation.crop_width=112",
    "bootstrap.steps=3",
    "bootstrap.batch_size=2",
    "bootstrap.warmup_steps=1",
    "trainer.num_workers=0",
    "trainer.progress=false",
    "trainer.accelerator=cpu",
]


def tiny_pseudo_labels(sim: Path, labels: Path) -> None:
    """A 4-frame simulated train drive at 256x128 and its stage-1 pseudo-labels (6 classes)."""
    write_split(sim, SimConfig().with_resolution(256, 128), "train", 1, 4, None, show_progress=False)
    config = PseudoLabelConfig(
        motion=MotionConfig(ensemble_runs=2, proposals=16),
        semantics=SemanticConfig(
            num_classes=6, global_short_side=112, sliding_window=False, slic_segments=80
        ),
        features=FeatureBackboneConfig(),
        fit_stride=2,
    )
    run_pseudo_labelling(open_sequences([sim], "train"), labels, config, progress=False)


def test_pseudo_labels_train_export_and_serve_through_onnxruntime(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    labels = tmp_path / "labels"
    tiny_pseudo_labels(sim, labels)
    run = tmp_path / "run"
    assert (
        bootstrap_main(
            [str(labels), "--output", str(run), *[part for s in TINY_TRAINING for part in ("--set", s)]]
        )
        == 0
    )
    network = load_model(run / "model.pt")
    thing_stuff = json.loads((labels / "thing_stuff.json").read_text())
    assert network.config.num_classes == 6
    assert network.config.thing_classes == [k for k, thing in enumerate(thing_stuff["thing"]) if thing]

    (onnx_path,) = export_onnx(network, tmp_path / "model.onnx")
    torch_predictor = Predictor(open_engine(network, "torch"))
    onnx_predictor = Predictor(open_engine(onnx_path, "onnxruntime"))
    for frame in load_split(sim, "train")[0]:
        from_torch, from_onnx = torch_predictor(frame.left), onnx_predictor(frame.left)
        assert max(max_abs_differences(from_torch.outputs, from_onnx.outputs).values()) <= 1e-3
        assert predictions_equal(from_torch.prediction, from_onnx.prediction)
        panoptic = from_onnx.prediction.panoptic
        assert panoptic.shape == frame.left.shape[:2] and panoptic.dtype == np.int32
        assert set(np.unique(panoptic // 1000)) <= set(range(6)) | {255}

    output = tmp_path / "evaluation"
    evaluation = [str(onnx_path), "--backend", "onnxruntime", "--sim", str(sim), "--split", "train"]
    assert evaluate_main([*evaluation, "--labels", str(labels), "--output", str(output)]) == 0
    results = json.loads((output / "evaluation.json").read_text())["results"]
    assert len(results) == 2 and all(
        0.0 <= row["PQ"] <= 1.0 and row["frames"] == 4 for row in results.values()
    )
