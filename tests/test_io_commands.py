"""``cups-ros bag-info`` and ``cups-ros bag-extract`` through the real command line entry point."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from cups_ros.cli import main
from cups_ros.core import CameraModel, StereoFrame
from cups_ros.io.bag import StereoTopics, write_stereo_bag

CAMERA = CameraModel(fx=80.0, fy=80.0, cx=31.5, cy=23.5, baseline=0.25, width=64, height=48)


def make_bag(path: Path, count: int = 6, topics: StereoTopics | None = None) -> list[StereoFrame]:
    rng = np.random.default_rng(3)
    frames = [
        StereoFrame(
            left=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
            right=rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
            camera=CAMERA,
            stamp_ns=5_000_000_000 + i * 50_000_000,
        )
        for i in range(count)
    ]
    write_stereo_bag(path, frames, topics, storage="mcap")
    return frames


def read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_bag_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_bag(tmp_path / "bag")
    assert main(["bag-info", str(tmp_path / "bag"), "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "storage:  mcap" in output and "messages: 24" in output
    assert "/stereo/left/image_rect_color" in output and "sensor_msgs/msg/CameraInfo" in output
    assert "6 stereo frames" in output and "skipped nothing" in output

    assert main(["bag-info", str(tmp_path / "bag"), "--no-sync"]) == 0
    assert "stereo frames" not in capsys.readouterr().out

    config = tmp_path / "other_topics.yaml"
    config.write_text("/**:\n  ros__parameters:\n    topics:\n      left_image: /cam/left\n")
    assert main(["bag-info", str(tmp_path / "bag"), "--config", str(config), "--quiet"]) == 0
    assert "stereo: not readable with this configuration" in capsys.readouterr().out


def test_bag_info_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bag-info", str(tmp_path / "missing")]) == 2
    assert "missing does not exist" in capsys.readouterr().err


def test_bag_extract_is_resumable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    frames = make_bag(tmp_path / "bag")
    out = tmp_path / "extracted"
    assert main(["bag-extract", str(tmp_path / "bag"), str(out), "--quiet"]) == 0
    assert "6 frames written, 0 already there" in capsys.readouterr().out
    assert json.loads((out / "camera.json").read_text()) == {
        "fx": 80.0,
        "fy": 80.0,
        "cx": 31.5,
        "cy": 23.5,
        "baseline": 0.25,
        "width": 64,
        "height": 48,
    }
    listing = json.loads((out / "frames.json").read_text())["frames"]
    assert [entry["stamp_ns"] for entry in listing] == [f.stamp_ns for f in frames]
    for entry, frame in zip(listing, frames, strict=True):
        np.testing.assert_array_equal(read_rgb(out / entry["left"]), frame.left)
        np.testing.assert_array_equal(read_rgb(out / entry["right"]), frame.right)
    assert not list(out.rglob(".*"))  # no temporaries left

    (out / listing[2]["right"]).unlink()  # as if interrupted before frame 2 was complete
    assert main(["bag-extract", str(tmp_path / "bag"), str(out), "--quiet"]) == 0
    assert "1 frames written, 5 already there" in capsys.readouterr().out
    np.testing.assert_array_equal(read_rgb(out / listing[2]["right"]), frames[2].right)


def test_bag_extract_every_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    topics = StereoTopics(
        left_image="/cam/l", right_image="/cam/r", left_info="/cam/li", right_info="/cam/ri"
    )
    frames = make_bag(tmp_path / "bag", count=7, topics=topics)
    config = tmp_path / "stereo.yaml"
    config.write_text(
        "/**:\n  ros__parameters:\n    topics: {left_image: /cam/l, right_image: /cam/r, "
        "left_info: /cam/li, right_info: /cam/ri}\n    sync_tolerance_s: 0.001\n"
    )
    out = tmp_path / "every3"
    assert (
        main(
            [
                "bag-extract",
                str(tmp_path / "bag"),
                str(out),
                "--config",
                str(config),
                "--every",
                "3",
                "--quiet",
            ]
        )
        == 0
    )
    listing = json.loads((out / "frames.json").read_text())["frames"]
    assert [entry["index"] for entry in listing] == [0, 3, 6]
    assert sorted(p.name for p in (out / "left").iterdir()) == [
        f"{frames[i].stamp_ns:019d}.png" for i in (0, 3, 6)
    ]

    assert main(["bag-extract", str(tmp_path / "bag"), str(tmp_path / "x"), "--quiet"]) == 2
    assert "/stereo/left/image_rect_color" in capsys.readouterr().err  # default topics are not in this bag
    assert main(["bag-extract", str(tmp_path / "bag"), str(tmp_path / "x"), "--every", "0"]) == 2
