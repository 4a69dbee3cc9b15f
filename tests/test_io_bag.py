"""Stereo bags written and read back through real rosbag2 storage (sqlite3 and mcap)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from rosbags.interfaces import QosDurability
from rosbags.rosbag2 import Reader

from cups_ros.core import CameraModel, StereoFrame, Track, camera_model_from_kitti_calib
from cups_ros.core.config import ConfigError, from_dict, load_config
from cups_ros.io import messages
from cups_ros.io.bag import (
    BagError,
    BagWriter,
    StereoBagReader,
    StereoInputConfig,
    StereoSynchronizer,
    StereoTopics,
    bag_summary,
    write_stereo_bag,
)
from cups_ros.io.messages import (
    array_to_image,
    camera_info_messages,
    detection2d_array_message,
    disparity_image_message,
    image_to_array,
    label_info_message,
    stamp_ns_of,
)
from cups_ros.io.vision_msgs import typestore

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
TOPICS = StereoTopics()
CAMERA = CameraModel(fx=80.0, fy=80.0, cx=31.5, cy=23.5, baseline=0.25, width=64, height=48)
START_NS = 1_700_000_000_000_000_000
PERIOD_NS = 33_333_333
STORAGES = ["sqlite3", "mcap"]


def stamp(index: int) -> int:
    return START_NS + index * PERIOD_NS


def random_frames(count: int, camera: CameraModel = CAMERA, seed: int = 0) -> list[StereoFrame]:
    rng = np.random.default_rng(seed)
    shape = (camera.height, camera.width, 3)
    return [
        StereoFrame(
            left=rng.integers(0, 256, shape, dtype=np.uint8),
            right=rng.integers(0, 256, shape, dtype=np.uint8),
            camera=camera,
            stamp_ns=stamp(i),
        )
        for i in range(count)
    ]


@dataclasses.dataclass
class Record:
    """One message as it lies in a bag: topic, bag time, message."""

    topic: str
    stamp_ns: int
    message: Any
    frame: int = -1


def stereo_records(frames: list[StereoFrame], right_offset_ns: int = 0) -> list[Record]:
    """What a stereo driver publishes per frame: left image + info, right image + info (rgb8)."""
    records = []
    for index, frame in enumerate(frames):
        right_stamp = frame.stamp_ns + right_offset_ns
        left_info, _ = camera_info_messages(frame.camera, frame.stamp_ns)
        _, right_info = camera_info_messages(frame.camera, right_stamp)
        records += [
            Record(
                TOPICS.left_image, frame.stamp_ns, array_to_image(frame.left, "rgb8", frame.stamp_ns), index
            ),
            Record(TOPICS.left_info, frame.stamp_ns, left_info, index),
            Record(TOPICS.right_image, right_stamp, array_to_image(frame.right, "rgb8", right_stamp), index),
            Record(TOPICS.right_info, right_stamp, right_info, index),
        ]
    return records


DEFAULT_TYPES = {
    TOPICS.left_image: messages.IMAGE,
    TOPICS.right_image: messages.IMAGE,
    TOPICS.left_info: messages.CAMERA_INFO,
    TOPICS.right_info: messages.CAMERA_INFO,
}


def write_records(
    path: Path, records: list[Record], storage: str = "sqlite3", types: dict | None = None
) -> Path:
    types = DEFAULT_TYPES if types is None else types
    with BagWriter(path, storage) as bag:  # type: ignore[arg-type]
        for topic, msgtype in types.items():
            bag.add_topic(topic, msgtype)
        for record in records:
            if isinstance(record.message, bytes):
                bag.write_serialized(record.topic, record.stamp_ns, record.message)
            else:
                bag.write(record.topic, record.stamp_ns, record.message)
    return path


def read_all(
    path: Path, config: StereoInputConfig | None = None
) -> tuple[list[StereoFrame], StereoBagReader]:
    reader = StereoBagReader(path, config)
    return list(reader), reader


def find(records: list[Record], topic: str, frame: int) -> Record:
    return next(r for r in records if r.topic == topic and r.frame == frame)


def assert_frames_equal(read: list[StereoFrame], written: list[StereoFrame]) -> None:
    assert len(read) == len(written)
    for got, expected in zip(read, written, strict=True):
        assert got.stamp_ns == expected.stamp_ns
        assert got.camera == expected.camera
        np.testing.assert_array_equal(got.left, expected.left)
        np.testing.assert_array_equal(got.right, expected.right)


# --- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_round_trip_100_frames_bit_exact(tmp_path: Path, storage: str) -> None:
    frames = random_frames(100)
    path = tmp_path / "stereo"
    assert write_stereo_bag(path, frames, storage=storage) == 100  # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stereo"]  # no temporary left beside it
    metadata = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert (metadata["version"], metadata["storage_identifier"]) == (8, storage)

    read, reader = read_all(path)
    assert_frames_equal(read, frames)
    assert [f.index for f in read] == list(range(100))
    assert {f.sequence for f in read} == {"stereo"} and read[0].frame_id == "stereo_left_optical_frame"
    assert read[0].camera.baseline == CAMERA.baseline
    assert reader.report.frames == 100 and not reader.report.skipped
    assert reader.report.received["left images"] == 100 == reader.report.received["right camera infos"]


def smooth_frames(count: int) -> list[StereoFrame]:
    y, x = np.mgrid[0 : CAMERA.height, 0 : CAMERA.width]
    frames = []
    for i in range(count):
        left = np.stack([x * 3 + i, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)
        frames.append(StereoFrame(left, np.roll(left, -4, axis=1), CAMERA, stamp(i)))
    return frames


@pytest.mark.parametrize(("storage", "encoding"), [("sqlite3", "png"), ("mcap", "jpeg"), ("mcap", "bgr8")])
def test_compressed_and_bgr_stereo_topics(tmp_path: Path, storage: str, encoding: str) -> None:
    frames = smooth_frames(10)
    path = tmp_path / "bag"
    write_stereo_bag(path, frames, storage=storage, encoding=encoding)  # type: ignore[arg-type]
    expected_type = messages.COMPRESSED_IMAGE if encoding in ("png", "jpeg") else messages.IMAGE
    assert {t.name: t.msgtype for t in bag_summary(path).topics}[TOPICS.left_image] == expected_type
    read, reader = read_all(path)
    assert len(read) == 10 and not reader.report.skipped
    if encoding == "jpeg":
        for got, expected in zip(read, frames, strict=True):
            assert np.abs(got.left.astype(int) - expected.left).mean() < 2.0
            assert np.abs(got.right.astype(int) - expected.right).mean() < 2.0
    else:
        assert_frames_equal(read, frames)


def test_read_stops_early_and_reads_again(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    write_stereo_bag(path, random_frames(5))
    reader = StereoBagReader(path, progress=True)
    assert next(iter(reader)).index == 0
    assert len(list(reader)) == 5 and reader.report.frames == 5


# --- whole-bag problems ----------------------------------------------------------------------


def test_only_one_camera(tmp_path: Path) -> None:
    records = [r for r in stereo_records(random_frames(3)) if r.topic != TOPICS.right_image]
    types = {t: m for t, m in DEFAULT_TYPES.items() if t != TOPICS.right_image}
    path = write_records(tmp_path / "bag", records, types=types)
    with pytest.raises(BagError) as error:
        StereoBagReader(path)
    text = str(error.value)
    assert "only one camera" in text and TOPICS.right_image in text and str(path) in text
    assert f"{TOPICS.left_image} (sensor_msgs/msg/Image)" in text  # what the bag does hold


def test_configured_topic_absent_lists_topics(tmp_path: Path) -> None:
    records = [r for r in stereo_records(random_frames(3)) if r.topic != TOPICS.right_info]
    types = {t: m for t, m in DEFAULT_TYPES.items() if t != TOPICS.right_info}
    path = write_records(tmp_path / "bag", records, types=types)
    with pytest.raises(
        BagError, match=f"topic\\(s\\) {TOPICS.right_info} not in the bag.*{TOPICS.left_info}"
    ):
        StereoBagReader(path)
    other_topics = StereoInputConfig(topics=StereoTopics(left_image="/cam/left", right_image="/cam/right"))
    with pytest.raises(BagError, match="/cam/left, /cam/right"):
        StereoBagReader(path, other_topics)


def test_wrong_message_type_on_a_topic(tmp_path: Path) -> None:
    records = stereo_records(random_frames(2))
    types = {**DEFAULT_TYPES, TOPICS.right_info: messages.IMAGE}
    for record in records:
        if record.topic == TOPICS.right_info:
            record.message = array_to_image(np.zeros((2, 2), np.uint8), "mono8", record.stamp_ns)
    path = write_records(tmp_path / "bag", records, types=types)
    with pytest.raises(
        BagError, match=f"{TOPICS.right_info} has type sensor_msgs/msg/Image, expected .*CameraInfo"
    ):
        StereoBagReader(path)


@pytest.mark.parametrize("storage", STORAGES)
def test_truncated_bag_file(tmp_path: Path, storage: str) -> None:
    path = tmp_path / "bag"
    write_stereo_bag(path, random_frames(20), storage=storage)  # type: ignore[arg-type]
    (storage_file,) = [p for p in path.iterdir() if p.suffix in (".db3", ".mcap")]
    os.truncate(storage_file, storage_file.stat().st_size // 2)
    with pytest.raises(BagError) as error:
        list(StereoBagReader(path))
    assert str(path) in str(error.value) and "corrupt" in str(error.value)


def test_missing_path_and_not_a_bag(tmp_path: Path) -> None:
    with pytest.raises(BagError, match="does not exist"):
        StereoBagReader(tmp_path / "nothing")
    (tmp_path / "folder").mkdir()
    with pytest.raises(BagError, match=r"not a ROS 2 bag: no metadata\.yaml"):
        StereoBagReader(tmp_path / "folder")
    garbage = tmp_path / "garbage.db3"
    garbage.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(BagError, match=f"{garbage}: cannot open bag"):
        bag_summary(garbage)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(BagError, match=r"notes\.txt"):
        StereoBagReader(text)


# --- per-message problems: counted skips -----------------------------------------------------


def test_mismatched_stereo_sizes(tmp_path: Path) -> None:
    frames = random_frames(10)
    records = stereo_records(frames)
    find(records, TOPICS.right_image, 3).message = array_to_image(
        np.zeros((24, 32, 3), np.uint8), "rgb8", stamp(3)
    )
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert_frames_equal(read, frames[:3] + frames[4:])
    assert reader.report.skipped == {"stereo sizes differ: left 64x48, right 32x24": 1}


def test_missing_camera_info_messages(tmp_path: Path) -> None:
    frames = random_frames(10)
    records = [r for r in stereo_records(frames) if not (r.topic == TOPICS.right_info and r.frame < 4)]
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert_frames_equal(read, frames[4:])
    assert reader.report.skipped == {"no CameraInfo yet for right": 4}


def test_camera_info_recorded_after_its_image_is_matched_by_stamp(tmp_path: Path) -> None:
    """Calibration changes at frame 5; each info lies after its image in the bag."""
    frames = random_frames(10)
    changed = dataclasses.replace(CAMERA, baseline=0.3)
    frames[5:] = [dataclasses.replace(f, camera=changed) for f in frames[5:]]
    records = stereo_records(frames)
    order = {TOPICS.left_image: 0, TOPICS.right_image: 1, TOPICS.left_info: 2, TOPICS.right_info: 3}
    records.sort(key=lambda r: (r.frame, order[r.topic]))
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert_frames_equal(read, frames)
    assert not reader.report.skipped


def test_latched_camera_info_published_once_serves_all_frames(tmp_path: Path) -> None:
    frames = random_frames(30)
    records = [
        r
        for r in stereo_records(frames)
        if r.topic not in (TOPICS.left_info, TOPICS.right_info) or r.frame == 0
    ]
    read, _ = read_all(write_records(tmp_path / "bag", records), StereoInputConfig(queue_size=4))
    assert_frames_equal(read, frames)


def test_unknown_encoding_and_bad_data_size(tmp_path: Path) -> None:
    frames = random_frames(10)
    records = stereo_records(frames)
    find(records, TOPICS.left_image, 2).message.encoding = "yuv422_weird"
    broken = find(records, TOPICS.right_image, 6).message
    broken.data = broken.data[:-10]
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert [f.stamp_ns for f in read] == [f.stamp_ns for i, f in enumerate(frames) if i not in (2, 6)]
    (unknown,) = [reason for reason in reader.report.skipped if "yuv422_weird" in reason]
    assert unknown.startswith("decode error: left: unsupported image encoding 'yuv422_weird'")
    (size,) = [reason for reason in reader.report.skipped if "data has" in reason]
    expected = "rgb8 image 64x48: data has 9206 bytes, expected height * step = 48 * 192 = 9216"
    assert size == f"decode error: right: {expected}"
    assert reader.report.skipped_total == 2


def test_undeserializable_message_is_skipped(tmp_path: Path) -> None:
    frames = random_frames(5)
    records = stereo_records(frames)
    find(records, TOPICS.left_image, 1).message = b"\x00\x01\x00\x00garbage"
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert [f.stamp_ns for f in read] == [stamp(i) for i in (0, 2, 3, 4)]
    reasons = dict(reader.report.skipped)
    (decode,) = [reason for reason in reasons if reason.startswith(f"decode error: {TOPICS.left_image}: ")]
    assert reasons.pop(decode) == 1
    assert reasons == {"right image without left partner within 5 ms": 1}


def test_out_of_order_and_repeated_stamps(tmp_path: Path) -> None:
    frames = random_frames(10)
    records = stereo_records(frames)
    for record in records:  # frame 4 arrives (bag time) after frame 5
        if record.frame == 4:
            record.stamp_ns = stamp(5) + 1_000
    records.append(dataclasses.replace(find(records, TOPICS.left_image, 9)))  # and frame 9's left twice
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert_frames_equal(read, frames[:4] + frames[5:])
    assert reader.report.skipped == {
        "left image stamp out of order or repeated": 2,
        "right image stamp out of order or repeated": 1,
    }


def test_invalid_camera_info(tmp_path: Path) -> None:
    frames = random_frames(8)
    records = stereo_records(frames)
    find(records, TOPICS.right_info, 2).message.p[:] = np.nan
    find(records, TOPICS.left_info, 5).message.p[:] = 0.0
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert [f.stamp_ns for f in read] == [stamp(i) for i in (0, 1, 3, 4, 6, 7)]
    assert reader.report.skipped == {
        "camera info invalid: CameraInfo: right P has non-finite values": 1,
        "camera info invalid: CameraInfo: left P is all zeros (camera not calibrated)": 1,
    }


@pytest.mark.parametrize(("offset_ms", "paired"), [(3, True), (-4, True), (8, False)])
def test_sync_tolerance(tmp_path: Path, offset_ms: int, paired: bool) -> None:
    frames = random_frames(6)
    read, reader = read_all(write_records(tmp_path / "bag", stereo_records(frames, offset_ms * 1_000_000)))
    if paired:
        assert_frames_equal(read, frames)
    else:
        assert read == []
        assert reader.report.skipped == {
            "left image without right partner within 5 ms": 6,
            "right image without left partner within 5 ms": 6,
        }
    looser = StereoInputConfig(sync_tolerance_s=0.01)
    assert len(read_all(tmp_path / "bag", looser)[0]) == 6


def test_missing_partner(tmp_path: Path) -> None:
    frames = random_frames(6)
    records = [r for r in stereo_records(frames) if not (r.topic == TOPICS.right_image and r.frame in (1, 5))]
    read, reader = read_all(write_records(tmp_path / "bag", records))
    assert [f.stamp_ns for f in read] == [stamp(i) for i in (0, 2, 3, 4)]
    assert reader.report.skipped == {"left image without right partner within 5 ms": 2}
    assert "left image without right partner within 5 ms" in reader.report.summary()


def test_synchronizer_takes_rclpy_like_messages_in_any_interleaving() -> None:
    def message(stamp_ns: int, **fields: Any) -> SimpleNamespace:
        seconds, nanoseconds = divmod(stamp_ns, 1_000_000_000)
        header = SimpleNamespace(stamp=SimpleNamespace(sec=seconds, nanosec=nanoseconds), frame_id="left")
        return SimpleNamespace(header=header, **fields)

    left_info, right_info = camera_info_messages(CAMERA)
    synchronizer = StereoSynchronizer(StereoInputConfig())
    frames = []
    rgb = np.full((48, 64, 3), 7, np.uint8)
    image_fields = {"height": 48, "width": 64, "encoding": "rgb8", "is_bigendian": 0, "step": 192}
    for i in range(4):
        left = message(stamp(i), **image_fields, data=rgb.tobytes())
        right = message(stamp(i) + 1_000_000, **image_fields, data=bytearray(rgb.tobytes()))
        frames += synchronizer.add_image("right", right) + synchronizer.add_image("left", left)
        frames += synchronizer.add_camera_info(
            "right", message(stamp(i) + 1_000_000, width=64, height=48, p=right_info.p)
        )
        frames += synchronizer.add_camera_info(
            "left", message(stamp(i), width=64, height=48, p=left_info.p.tolist())
        )
    frames += synchronizer.finish()
    assert [f.stamp_ns for f in frames] == [stamp(i) for i in range(4)]
    assert all(f.camera == CAMERA and np.array_equal(f.left, rgb) for f in frames)


# --- other messages, writing -----------------------------------------------------------------


@pytest.mark.parametrize("storage", STORAGES)
def test_detections_labels_and_disparity_in_a_bag(tmp_path: Path, storage: str) -> None:
    tracks = [Track(track_id=5, class_id=3, box=(1.0, 2.0, 11.0, 22.0), score=0.75)]
    disparity = np.linspace(0, 40, 48 * 64, dtype=np.float32).reshape(48, 64)
    class_names = [messages.pseudo_class_name(i) for i in range(27)]
    path = tmp_path / "out"
    with BagWriter(path, storage) as bag:  # type: ignore[arg-type]
        bag.add_topic("/cups/instances", messages.DETECTION2D_ARRAY)
        bag.add_topic("/cups/label_info", messages.LABEL_INFO)
        bag.add_topic("/cups/disparity", messages.DISPARITY_IMAGE)
        bag.write("/cups/label_info", stamp(0), label_info_message(class_names, 0.7, stamp(0), "cam"))
        for i in range(3):
            bag.write("/cups/instances", stamp(i), detection2d_array_message(tracks, stamp(i), "cam"))
            bag.write(
                "/cups/disparity", stamp(i), disparity_image_message(disparity, CAMERA, stamp(i), "cam")
            )

    store = typestore()
    with Reader(path) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles for c in reader.connections}
        assert [p.durability for p in qos["/cups/label_info"]] == [QosDurability.TRANSIENT_LOCAL]
        assert qos["/cups/instances"] == []
        received: dict[str, list[Any]] = {}
        for connection, bag_stamp, raw in reader.messages():
            message = store.deserialize_cdr(raw, connection.msgtype)
            assert stamp_ns_of(message) == bag_stamp
            received.setdefault(connection.topic, []).append(message)
    (labels,) = received["/cups/label_info"]
    assert [c.class_name for c in labels.class_map] == class_names and labels.threshold == pytest.approx(0.7)
    assert len(received["/cups/instances"]) == 3
    (detection,) = received["/cups/instances"][2].detections
    assert (detection.id, detection.bbox.center.position.x, detection.bbox.size_y) == ("5", 6.0, 20.0)
    assert (detection.results[0].hypothesis.class_id, detection.results[0].hypothesis.score) == ("c03", 0.75)
    disparity_message = received["/cups/disparity"][1]
    assert (disparity_message.f, disparity_message.t) == (CAMERA.fx, CAMERA.baseline)
    np.testing.assert_array_equal(image_to_array(disparity_message.image), disparity)
    metadata = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    hashes = {
        t["topic_metadata"]["name"]: t["topic_metadata"]["type_description_hash"]
        for t in metadata["topics_with_message_count"]
    }
    assert hashes["/cups/instances"] == store.hash_rihs01(messages.DETECTION2D_ARRAY)
    assert all(h.startswith("RIHS01_") for h in hashes.values())


def test_bag_writer_is_atomic_and_does_not_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    with pytest.raises(RuntimeError, match="interrupted"), BagWriter(path) as bag:
        bag.add_topic("/x", messages.LABEL_INFO)
        bag.write("/x", 1, label_info_message(["a"]))
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []  # neither the bag nor a temporary

    write_stereo_bag(path, random_frames(2))
    with pytest.raises(BagError, match="exists already"):
        write_stereo_bag(path, random_frames(3))
    assert write_stereo_bag(path, random_frames(3), overwrite=True) == 3
    assert len(read_all(path)[0]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bag"]

    with BagWriter(tmp_path / "other", "mcap") as bag:
        with pytest.raises(BagError, match="/y was not added"):
            bag.write("/y", 0, label_info_message(["a"]))
        with pytest.raises(BagError, match="unknown message type"):
            bag.add_topic("/y", "nonexistent_msgs/msg/Thing")
        bag.add_topic("/y", messages.LABEL_INFO)
        with pytest.raises(BagError, match="added twice"):
            bag.add_topic("/y", messages.LABEL_INFO)
    with pytest.raises(BagError, match="storage must be one of"):
        BagWriter(tmp_path / "x", "rosbag1")  # type: ignore[arg-type]


def test_bag_summary(tmp_path: Path) -> None:
    path = tmp_path / "bag"
    write_stereo_bag(path, random_frames(4), storage="mcap")
    summary = bag_summary(path)
    assert (summary.storage, summary.message_count, summary.start_ns) == ("mcap", 16, stamp(0))
    assert summary.duration_ns == 3 * PERIOD_NS
    assert {(t.name, t.msgtype, t.message_count) for t in summary.topics} == {
        (TOPICS.left_image, messages.IMAGE, 4),
        (TOPICS.right_image, messages.IMAGE, 4),
        (TOPICS.left_info, messages.CAMERA_INFO, 4),
        (TOPICS.right_info, messages.CAMERA_INFO, 4),
    }
    assert TOPICS.right_info in summary.format()
    (storage_file,) = [p for p in path.iterdir() if p.suffix == ".mcap"]
    assert bag_summary(storage_file).message_count == 16  # a bare storage file reads too


def test_stereo_input_config_file() -> None:
    config = load_config(StereoInputConfig, REPOSITORY_ROOT / "config" / "stereo_input.yaml")
    assert config == StereoInputConfig()
    with pytest.raises(ConfigError, match="sync_tolerance_s"):
        from_dict(StereoInputConfig, {"sync_tolerance_s": -0.1})
    with pytest.raises(ConfigError, match=r"topics\.left_imag"):
        from_dict(StereoInputConfig, {"topics": {"left_imag": "/x"}})


# --- real data -------------------------------------------------------------------------------


def test_real_kitti_pair_through_a_bag(shared_data: Path, tmp_path: Path) -> None:
    kitti = shared_data / "kitti2015_stereo_pair"
    camera = camera_model_from_kitti_calib(kitti / "calib" / "calib_cam_to_cam_2011_09_26.txt")
    load: Callable[[str], np.ndarray] = lambda folder: cv2.cvtColor(  # noqa: E731
        cv2.imread(str(kitti / folder / "000046_10.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB
    )
    left, right = load("image_2"), load("image_3")
    assert left.shape == (375, 1242, 3)
    frames = [StereoFrame(left, right, camera, stamp(0)), StereoFrame(right, left, camera, stamp(1))]
    path = tmp_path / "kitti"
    write_stereo_bag(path, frames, storage="mcap")
    read, reader = read_all(path)
    assert_frames_equal(read, frames)
    assert read[0].camera.baseline == pytest.approx(0.5327, abs=1e-4)
    assert (read[0].width, read[0].height) == (1242, 375)
    assert not reader.report.skipped
