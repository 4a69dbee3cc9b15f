"""Stage 1 end to end on a tiny simulated split: sharding, resume after a kill, outputs, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cups_ros.core.panoptic import decode_panoptic_id, panoptic_from_rgb
from cups_ros.features import FeatureBackboneConfig
from cups_ros.pseudo import pipeline as pipeline_module
from cups_ros.pseudo.motion import MotionConfig
from cups_ros.pseudo.pipeline import (
    FrameWork,
    PseudoLabelConfig,
    Shard,
    missing_work,
    run_pseudo_labelling,
    work_path,
)
from cups_ros.pseudo.semantics import SemanticConfig
from cups_ros.pseudo.sources import open_sequences
from cups_ros.sim.config import SimConfig
from cups_ros.sim.dataset import write_split
from training.pseudo_label import main as pseudo_label_main

pytestmark = pytest.mark.slow


def tiny_config() -> PseudoLabelConfig:
    return PseudoLabelConfig(
        motion=MotionConfig(ensemble_runs=2, proposals=16),
        semantics=SemanticConfig(
            num_classes=6, global_short_side=112, sliding_window=False, em_iterations=5, slic_segments=80
        ),
        features=FeatureBackboneConfig(),
        fit_stride=2,
    )


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    write_split(root, SimConfig().with_resolution(256, 128), "val", 2, 4, None, show_progress=False)
    return root


def test_shards_tile_every_frame_once_resume_after_a_kill_and_finalize(
    split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sequences = open_sequences([split], "val")
    assert [s.length for s in sequences] == [4, 4]
    config, output = tiny_config(), tmp_path / "labels"
    run_pseudo_labelling(sequences, output, config, steps=("fit",), progress=False)
    assert (output / "semantics.npz").exists()

    # Shard 0 of 2 labels the first half of every sequence, and nothing else.
    run_pseudo_labelling(sequences, output, config, Shard(0, 2), ("frames",), progress=False)
    written = sorted(p.relative_to(output / "work").as_posix() for p in (output / "work").rglob("*.npz"))
    assert written == [f"val_000{s}/00000{i}.npz" for s in (0, 1) for i in (0, 1)]
    with pytest.raises(ValueError, match="run every shard"):
        run_pseudo_labelling(sequences, output, config, Shard(0, 2), ("finalize",), progress=False)

    # Shard 1 is killed after one frame: what it finished stays, nothing half-written is left.
    real_frame = pipeline_module.PseudoLabeller.frame
    calls = {"n": 0}

    def dying_frame(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_frame(self, *args, **kwargs)

    monkeypatch.setattr(pipeline_module.PseudoLabeller, "frame", dying_frame)
    with pytest.raises(KeyboardInterrupt):
        run_pseudo_labelling(sequences, output, config, Shard(1, 2), ("frames",), progress=False)
    assert len(missing_work(sequences, output)) == 3
    assert not list(output.rglob("*.tmp"))
    monkeypatch.setattr(pipeline_module.PseudoLabeller, "frame", real_frame)
    before = {p: p.stat().st_mtime_ns for p in (output / "work").rglob("*.npz")}
    run_pseudo_labelling(sequences, output, config, Shard(1, 2), ("frames",), progress=False)
    assert missing_work(sequences, output) == []
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())  # finished frames not redone

    # The last frame is paired with the one before it.
    assert not FrameWork.read(work_path(output, "val_0000", 3)).neighbour_is_next
    assert FrameWork.read(work_path(output, "val_0000", 2)).neighbour_is_next

    # Finalize, split over two shards by sequence.
    run_pseudo_labelling(sequences, output, config, Shard(0, 2), ("finalize",), progress=False)
    assert (output / "val_0000" / "sequence.json").exists() and not (output / "val_0001").exists()
    run_pseudo_labelling(sequences, output, config, Shard(1, 2), ("finalize",), progress=False)
    thing_stuff = json.loads((output / "thing_stuff.json").read_text())
    assert len(thing_stuff["thing"]) == 6
    for sequence in ("val_0000", "val_0001"):
        meta = json.loads((output / sequence / "sequence.json").read_text())
        assert meta["complete"] and meta["frames"] == 4
        assert cv2.imread(str(output / sequence / "montage.png")) is not None
        for index in range(4):
            image = cv2.imread(str(output / sequence / "panoptic" / f"{index:06d}.png"), cv2.IMREAD_COLOR)
            panoptic = panoptic_from_rgb(cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            assert panoptic.shape == (128, 256)
            classes, instances = decode_panoptic_id(panoptic)
            assert set(np.unique(classes)) <= set(range(6)) | {255}
            described = json.loads((output / sequence / f"{index:06d}.json").read_text())
            ids = {i["instance_id"] for i in described["instances"]}
            assert set(np.unique(instances[instances > 0]).tolist()) == ids
            for instance in described["instances"]:
                assert thing_stuff["thing"][instance["class_id"]]


def test_command_line_and_bad_input(split: Path, tmp_path: Path) -> None:
    assert pseudo_label_main([str(tmp_path / "absent"), "--output", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit):
        pseudo_label_main([str(split), "--output", str(tmp_path / "o"), "--shard", "2/2"])
    with pytest.raises(ValueError, match="i/N"):
        Shard.parse("half")
    corrupt = tmp_path / "work.npz"
    corrupt.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="corrupt pseudo-label work file"):
        FrameWork.read(corrupt)
    assert [list(Shard(i, 3).frames(7)) for i in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]
