"""The main job (`cups-ros demo`, the README's first command), small, and the default model it ships."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from cups_ros.demo import DEFAULT_MODEL, run_demo
from cups_ros.model.model_file import load_model, model_metadata
from tests.conftest import REPOSITORY_ROOT
from tests.test_perception_pipeline import write_tiny_model


@pytest.mark.slow
def test_the_demo_replays_the_drive_through_the_network_and_scores_it(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "model.pt", seed=0)
    output = tmp_path / "demo"
    metrics = run_demo(output, frames=4, width=256, progress=False, pseudo_labels=False, model=model)
    assert metrics.frames_read == 4
    assert metrics.network["frames published"] == 4 and metrics.network["frames dropped"] == 0
    assert 0.0 <= metrics.network["PQ"] <= 1.0 and 0.0 <= metrics.network["STQ"] <= 1.0
    assert "ms per frame: inference" in metrics.network
    capture = cv2.VideoCapture(str(output / "perception.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 4
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["network"]["PQ"] == metrics.network["PQ"]
    table = (output / "metrics.txt").read_text()
    assert "network + tracker: PQ" in table and str(model) in table


def test_the_default_model_ships_with_the_package_and_loads() -> None:
    assert DEFAULT_MODEL.is_file(), f"{DEFAULT_MODEL} missing"
    assert DEFAULT_MODEL.stat().st_size < 8_000_000  # heads only; the backbone is referenced
    assert "data/*.pt" in (REPOSITORY_ROOT / "setup.py").read_text()  # installed with the package
    network = load_model(DEFAULT_MODEL)
    assert network.config.num_classes == 27 and network.backbone_frozen
    assert model_metadata(DEFAULT_MODEL)["stage"] in ("bootstrap", "self_train")
