"""``cups-ros replay --online-learning`` end to end, tiny: a real stage-1 fit labels the replayed drive,
rounds of continued training run on the buffer, the gate judges, the store keeps what it promotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from rosbags.highlevel import AnyReader

from cups_ros.cli import main as cli_main
from cups_ros.features import FeatureBackboneConfig
from cups_ros.io.vision_msgs import typestore
from cups_ros.online.buffer import ReplayBuffer
from cups_ros.online.store import ModelStore
from cups_ros.pseudo.motion import MotionConfig
from cups_ros.pseudo.pipeline import PseudoLabelConfig, run_pseudo_labelling
from cups_ros.pseudo.semantics import SemanticConfig
from cups_ros.pseudo.sources import open_sequences
from cups_ros.sim.bag import export_bag
from cups_ros.sim.config import SimConfig
from cups_ros.sim.dataset import load_split, write_split
from tests.test_network_end_to_end import TINY_TRAINING, tiny_pseudo_labels
from training.bootstrap import main as bootstrap_main

pytestmark = pytest.mark.slow


def test_replay_with_online_learning_labels_trains_and_judges(tmp_path: Path) -> None:
    sim = tmp_path / "sim"
    fit = tmp_path / "fit"
    tiny_pseudo_labels(sim, fit)
    fit = tmp_path / "fit"
    config = PseudoLabelConfig(
        motion=MotionConfig(ensemble_runs=2, proposals=16),
        semantics=SemanticConfig(
            num_classes=6, global_short_side=112, sliding_window=False, slic_segments=80
        ),
        features=FeatureBackboneConfig(),
        fit_stride=2,
    )
    run_pseudo_labelling(open_sequences([sim], "train"), fit, config, progress=False)
    run = tmp_path / "run"
    training = [part for s in TINY_TRAINING for part in ("--set", s)]
    assert bootstrap_main([str(fit), "--output", str(run), *training]) == 0

    # The drive: another seed range (the sample split), replayed with online learning on.
    write_split(sim, SimConfig().with_resolution(256, 128), "sample", 1, 7, None, show_progress=False)
    sequence = load_split(sim, "sample")[0]
    drive = tmp_path / "drive_bag"
    export_bag(drive, list(sequence), sequence.camera)
    output = tmp_path / "out_bag"
    online = [
        "labeller.frame_stride=1",
        "labeller.motion_runs=2",
        "buffer.holdout_every=3",
        "training.min_train_samples=2",
        "training.steps_per_round=2",
        "training.batch_size=1",
        "training.augmentation.crop_height=56",
        "training.augmentation.crop_width=112",
        "gate.min_holdout=1",
        "store.export_onnx=false",
    ]
    arguments = ["replay", str(drive), str(output), "--model", str(run / "model.pt"), "--quiet"]
    arguments += ["--online-learning", "--fit", str(fit), "--round-every", "2"]
    arguments += [part for s in online for part in ("--online-set", s)]
    assert cli_main(arguments) == 0

    report = json.loads(Path(str(output) + ".replay.json").read_text())
    assert report["frames_in"] == 7 and report["published"] == 7
    learned = report["online_learning"]
    assert learned["labelled"] == 6  # every frame but the last has a successor
    folder = Path(str(output) + ".online")
    buffer = ReplayBuffer(folder / "buffer", writer=False)
    assert len(buffer) == 6 and len(buffer.holdout_ids()) == 2
    store = ModelStore(folder / "models")
    decisions = [r for r in learned["rounds"] if r["decision"] is not None]
    assert decisions, learned["rounds"]  # the gate judged at least one candidate
    events = [event["event"] for event in store.history()]
    assert len(events) == len(decisions) and set(events) <= {"promoted", "rejected"}
    promoted = [r["version"] for r in decisions if r["version"] is not None]
    assert learned["promotions"] == len(promoted) == events.count("promoted")
    assert [m["version"] for m in report["models"]] == [None, *promoted]
    if promoted:
        assert store.current() is not None and store.current().version == promoted[-1]
    with AnyReader([output], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/perception/panoptic"] == 7
