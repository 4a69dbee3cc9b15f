"""`cups-ros replay`: a simulated drive's bag through the perception pipeline into a new bag, read
back with rosbags; every input frame published or counted."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from cups_ros.cli import main as cli_main
from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.io.messages import image_to_array
from cups_ros.io.vision_msgs import typestore
from cups_ros.sim.bag import export_bag
from cups_ros.sim.config import SimConfig
from cups_ros.sim.dataset import load_split, write_split
from tests.test_perception_pipeline import write_tiny_model


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sim")
    write_split(root, SimConfig().with_resolution(256, 128), "sample", 1, 5, None, show_progress=False)
    sequence = load_split(root, "sample")[0]
    bag = root / "drive_bag"
    export_bag(bag, list(sequence), sequence.camera)
    return bag


def test_replay_writes_every_frame_to_the_output_bag_with_the_input_stamps(
    drive: Path, tmp_path: Path
) -> None:
    model = write_tiny_model(tmp_path / "model.pt", seed=0)
    output = tmp_path / "out_bag"
    video = tmp_path / "overlay.mp4"
    arguments = ["replay", str(drive), str(output), "--model", str(model), "--video", str(video), "--quiet"]
    assert cli_main(arguments) == 0
    report = json.loads(Path(str(output) + ".replay.json").read_text())
    assert report["frames_in"] == 5 and report["published"] == 5 and not report["dropped"]
    assert {"inference_ms", "tracking_ms", "total_ms"} <= set(report["stage_ms"])
    with AnyReader([drive], default_typestore=typestore()) as reader:
        left = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image" and "left" in c.topic]
        assert len(left) == 1
        headers = [
            reader.deserialize(raw, c.msgtype).header for c, _, raw in reader.messages(connections=left)
        ]
        input_stamps = sorted(h.stamp.sec * 10**9 + h.stamp.nanosec for h in headers)
    with AnyReader([output], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert counts == {
            "/perception/panoptic": 5,
            "/perception/semantic": 5,
            "/perception/panoptic_color": 5,
            "/perception/instances": 5,
            "/perception/label_info": 1,
        }
        stamps, track_ids = [], set()
        for connection, _, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            if connection.topic == "/perception/panoptic":
                stamps.append(message.header.stamp.sec * 10**9 + message.header.stamp.nanosec)
                panoptic = image_to_array(message)
                assert panoptic.shape == (128, 256) and message.encoding == "32SC1"
                track_ids |= set(np.unique(panoptic % LABEL_DIVISOR).tolist())
            if connection.topic == "/perception/instances":
                for detection in message.detections:
                    assert int(detection.id) > 0
    assert sorted(stamps) == input_stamps
    assert len(track_ids - {0}) >= 1
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5


def test_replay_refuses_a_model_that_does_not_load(drive: Path, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"no model")
    assert cli_main(["replay", str(drive), str(tmp_path / "out"), "--model", str(garbage), "--quiet"]) == 2
    assert not (tmp_path / "out").exists()
