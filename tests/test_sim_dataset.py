"""Dataset folder round trip, resume, bag export readable by cups_ros.io, CLI and preview."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from cups_ros.sim import commands
from cups_ros.sim.config import SimConfig, load_sim_config
from cups_ros.sim.dataset import SimSequence, write_sequence
from cups_ros.sim.generate import SequenceGenerator

REPOSITORY = Path(__file__).resolve().parents[1]


def small_config() -> SimConfig:
    return SimConfig().with_resolution(256, 128)


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    config = small_config()
    expected = list(SequenceGenerator(config, 77, "downtown", 3))
    folder = write_sequence(tmp_path / "seq", config, 77, "downtown", 3)
    sequence = SimSequence(folder)
    assert len(sequence) == 3
    for want, got in zip(expected, sequence, strict=True):
        np.testing.assert_array_equal(got.left, want.left)
        np.testing.assert_array_equal(got.right, want.right)
        np.testing.assert_array_equal(got.depth, want.depth)
        np.testing.assert_array_equal(got.flow, want.flow)
        np.testing.assert_array_equal(got.panoptic, want.panoptic)
        np.testing.assert_array_equal(got.semantic, want.semantic)
        np.testing.assert_allclose(got.disparity, want.disparity, rtol=1e-6)
        assert got.moving == want.moving
        assert got.stereo_frame().camera == sequence.camera


def test_resume_keeps_finished_frames(tmp_path: Path) -> None:
    config = small_config()
    folder = write_sequence(tmp_path / "seq", config, 5, "suburb", 2)
    stamp = (folder / "left" / "000000.png").stat().st_mtime_ns
    meta = (folder / "sequence.json").read_text().replace('"complete": true', '"complete": false')
    (folder / "sequence.json").write_text(meta)
    (folder / "poses" / "000001.json").unlink()
    write_sequence(folder, config, 5, "suburb", 2)
    assert (folder / "left" / "000000.png").stat().st_mtime_ns == stamp
    assert len(SimSequence(folder)) == 2


def test_bag_export_is_readable_by_io(tmp_path: Path) -> None:
    from cups_ros.io import bag_summary, read_stereo_bag
    from cups_ros.sim.bag import export_bag

    config = small_config()
    frames = list(SequenceGenerator(config, 9, "oldtown", 2))
    camera = config.rig.camera_model()
    export_bag(tmp_path / "sim.bag", frames, camera)
    stereo = list(read_stereo_bag(tmp_path / "sim.bag"))
    assert len(stereo) == 2
    np.testing.assert_array_equal(stereo[0].left, frames[0].left)
    assert stereo[0].camera == camera
    topics = {topic.name for topic in bag_summary(tmp_path / "sim.bag").topics}
    assert {
        "/ground_truth/depth",
        "/ground_truth/panoptic",
        "/ground_truth/flow",
        "/ground_truth/disparity",
    } <= topics


def test_cli_sample_with_bag_and_preview(tmp_path: Path) -> None:
    # Only the sim subcommand, so that other stages' import state cannot mask this test.
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "sim",
            str(tmp_path),
            "--split",
            "sample",
            "--frames",
            "2",
            "--width",
            "256",
            "--bag",
            "--preview",
            "--no-progress",
        ]
    )
    assert args.run(args) == 0
    folder = tmp_path / "sample_0000"
    assert (folder / "preview.png").stat().st_size > 0
    assert (folder / "preview.mp4").stat().st_size > 0
    assert (tmp_path / "sample_0000.bag").exists()


def test_config_file_loads() -> None:
    config = load_sim_config(REPOSITORY / "config" / "sim.yaml")
    assert config.rig.width == 1024 and config.rig.height == 512
    assert set(config.splits) == {"train", "val", "test", "sample"}


@pytest.mark.parametrize("town", ["oldtown", "suburb", "downtown", "dusk"])
def test_every_town_renders(town: str) -> None:
    frame = next(iter(SequenceGenerator(SimConfig().with_resolution(128, 64), 11, town, 1)))
    assert frame.left.shape == (64, 128, 3)
    assert len(np.unique(frame.semantic)) >= 5
