"""Message conversions through the real ROS 2 type store (CDR serialize -> deserialize)."""

from __future__ import annotations

import array
import dataclasses
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from cups_ros.core import CameraModel, Track
from cups_ros.io import messages
from cups_ros.io.messages import (
    MessageConversionError,
    MessageTypes,
    array_to_image,
    camera_info_messages,
    compressed_image_to_rgb,
    detection2d_array_message,
    disparity_image_message,
    image_to_array,
    image_to_rgb,
    label_info_message,
    rgb_to_compressed_image,
    stamp_ns_of,
)
from cups_ros.io.vision_msgs import VISION_MSGS_DEFINITIONS, typestore

CAMERA = CameraModel(fx=721.5377, fy=721.5377, cx=609.5593, cy=172.854, baseline=0.5327, width=7, height=5)


def through_cdr(message: Any, typename: str) -> Any:
    """What a subscriber or a bag reader gets back."""
    store = typestore()
    return store.deserialize_cdr(bytes(store.serialize_cdr(message, typename)), typename)


def random_pixels(dtype: str, channels: int, height: int = 5, width: int = 7, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if np.dtype(dtype).kind == "f":
        pixels = rng.normal(0, 1e3, shape).astype(dtype)
        flat = pixels.reshape(-1)
        flat[:4] = [np.nan, np.inf, -np.inf, -0.0]  # special values must survive bit-exactly
        return pixels
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)


ENCODINGS = [
    ("rgb8", "uint8", 3),
    ("bgr8", "uint8", 3),
    ("rgba8", "uint8", 4),
    ("bgra8", "uint8", 4),
    ("mono8", "uint8", 1),
    ("mono16", "uint16", 1),
    ("16UC1", "uint16", 1),
    ("32FC1", "float32", 1),
    ("32FC2", "float32", 2),
    ("32SC1", "int32", 1),
]


@pytest.mark.parametrize(("encoding", "dtype", "channels"), ENCODINGS)
@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("big_endian", [False, True])
def test_every_encoding_survives_cdr_bit_exact(
    encoding: str, dtype: str, channels: int, padding: int, big_endian: bool
) -> None:
    pixels = random_pixels(dtype, channels)
    row_bytes = pixels.shape[1] * channels * np.dtype(dtype).itemsize
    message = array_to_image(
        pixels, encoding, 1_500_000_123, "cam", step=row_bytes + padding, is_bigendian=big_endian
    )
    received = through_cdr(message, messages.IMAGE)
    assert (received.step, received.is_bigendian, received.encoding) == (
        row_bytes + padding,
        big_endian,
        encoding,
    )
    assert stamp_ns_of(received) == 1_500_000_123
    result = image_to_array(received)
    assert result.dtype == np.dtype(dtype) and result.dtype.isnative
    assert result.shape == pixels.shape
    assert result.tobytes() == pixels.tobytes()  # bit-exact, NaN and -0.0 included


def test_reader_follows_the_ros_layout_not_just_our_writer() -> None:
    """A hand-made big-endian mono16 message with 3 bytes of row padding, as a camera would send it."""
    rows = [
        bytes([0x01, 0x02, 0xFF, 0x00]) + b"\xaa\xbb\xcc",
        bytes([0x00, 0x10, 0x80, 0x01]) + b"\x00\x00\x00",
    ]
    message = SimpleNamespace(
        height=2,
        width=2,
        encoding="mono16",
        is_bigendian=1,
        step=7,
        data=np.frombuffer(b"".join(rows), np.uint8),
    )
    assert image_to_array(message).tolist() == [[0x0102, 0xFF00], [0x0010, 0x8001]]
    little = array_to_image(np.array([[0x0102]], np.uint16), "16UC1")
    assert bytes(little.data) == b"\x02\x01"
    big = array_to_image(np.array([[0x0102]], np.uint16), "16UC1", is_bigendian=True)
    assert bytes(big.data) == b"\x01\x02"


def test_image_to_rgb_channel_orders() -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    alpha = rng.integers(0, 256, (4, 6, 1), dtype=np.uint8)
    gray = rng.integers(0, 65536, (4, 6), dtype=np.uint16)
    cases = {
        "rgb8": (rgb, rgb),
        "bgr8": (rgb[:, :, ::-1], rgb),
        "rgba8": (np.concatenate([rgb, alpha], axis=2), rgb),
        "bgra8": (np.concatenate([rgb[:, :, ::-1], alpha], axis=2), rgb),
        "mono8": (rgb[:, :, 0], np.repeat(rgb[:, :, :1], 3, axis=2)),
        "mono16": (gray, np.repeat((gray >> 8).astype(np.uint8)[:, :, None], 3, axis=2)),
    }
    for encoding, (pixels, expected) in cases.items():
        message = through_cdr(array_to_image(np.ascontiguousarray(pixels), encoding), messages.IMAGE)
        result = image_to_rgb(message)
        assert result.dtype == np.uint8 and result.shape == (4, 6, 3), encoding
        np.testing.assert_array_equal(result, expected, err_msg=encoding)


def test_rclpy_shaped_messages_read_and_build() -> None:
    """rclpy keeps uint8[] as array.array and builds from its own classes: both paths work."""
    pixels = random_pixels("uint16", 1)
    message = array_to_image(pixels, "mono16", is_bigendian=True)
    for container in (array.array("B", bytes(message.data)), bytes(message.data), list(bytes(message.data))):
        rclpy_like = SimpleNamespace(**{**vars_of(message), "data": container})
        np.testing.assert_array_equal(image_to_array(rclpy_like), pixels)

    def rclpy_class(**fields: Any) -> SimpleNamespace:
        return SimpleNamespace(**fields)

    classes = {field.name: rclpy_class for field in dataclasses.fields(MessageTypes) if field.type == "type"}
    rclpy_types = MessageTypes(
        **classes,
        uint8_sequence=lambda values: array.array("B", np.ascontiguousarray(values, np.uint8).tobytes()),
        float64_sequence=lambda values: array.array("d", np.asarray(values, np.float64).ravel().tolist()),
    )
    built = array_to_image(pixels, "mono16", 42, "cam", rclpy_types, step=20)
    assert isinstance(built.data, array.array) and stamp_ns_of(built) == 42
    np.testing.assert_array_equal(image_to_array(built), pixels)
    left, right = camera_info_messages(CAMERA, 7, types=rclpy_types)
    assert CameraModel.from_camera_info(left, right) == CAMERA


def vars_of(message: Any) -> dict[str, Any]:
    return {
        field: getattr(message, field) for field in ("height", "width", "encoding", "is_bigendian", "step")
    }


def test_from_rclpy_needs_ros() -> None:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError):
            MessageTypes.from_rclpy()
    else:
        types = MessageTypes.from_rclpy()
        np.testing.assert_array_equal(
            image_to_array(array_to_image(np.eye(3, dtype=np.uint8), "mono8", types=types)), np.eye(3)
        )


@pytest.mark.parametrize(
    ("change", "expected_words"),
    [
        ({"encoding": "yuv422_weird"}, ["yuv422_weird", "unsupported"]),
        ({"step": 20}, ["step 20", "21"]),  # 7 px * 3 bytes
        ({"data": np.zeros(104, np.uint8)}, ["104 bytes", "105"]),  # 5 rows * 21 bytes
        ({"height": 0}, ["no pixels"]),
    ],
)
def test_bad_images_raise_naming_the_problem(change: dict[str, Any], expected_words: list[str]) -> None:
    message = array_to_image(np.zeros((5, 7, 3), np.uint8), "rgb8")
    broken = SimpleNamespace(**{**vars_of(message), "data": message.data, **change})
    with pytest.raises(MessageConversionError) as error:
        image_to_array(broken)
    assert isinstance(error.value, ValueError)
    for word in expected_words:
        assert word in str(error.value)


def test_encodings_without_rgb_meaning_and_wrong_arrays_raise() -> None:
    with pytest.raises(MessageConversionError, match="32FC1"):
        image_to_rgb(array_to_image(np.zeros((2, 2), np.float32), "32FC1"))
    with pytest.raises(MessageConversionError, match="float32"):
        array_to_image(np.zeros((2, 2), np.float64), "32FC1")
    with pytest.raises(MessageConversionError, match="shape"):
        array_to_image(np.zeros((2, 2, 3), np.uint8), "mono8")
    with pytest.raises(MessageConversionError, match="step 2"):
        array_to_image(np.zeros((2, 2, 3), np.uint8), "rgb8", step=2)
    with pytest.raises(MessageConversionError, match="negative"):
        array_to_image(np.zeros((2, 2), np.uint8), "mono8", stamp_ns=-1)


def encoded(rgb: np.ndarray, extension: str) -> np.ndarray:
    ok, data = cv2.imencode(extension, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return data.reshape(-1)


def smooth_rgb(height: int = 48, width: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4, y * 5, (x + y) * 2], axis=-1).astype(np.uint8)


@pytest.mark.parametrize(
    ("image_format", "extension"),
    [
        ("png", ".png"),
        ("bgr8; png compressed", ".png"),
        ("jpeg", ".jpg"),
        ("rgb8; jpeg compressed bgr8", ".jpg"),
    ],
)
def test_compressed_formats_decode(image_format: str, extension: str) -> None:
    rgb = smooth_rgb()
    message = SimpleNamespace(format=image_format, data=encoded(rgb, extension))
    result = compressed_image_to_rgb(message)
    if extension == ".png":
        np.testing.assert_array_equal(result, rgb)
    else:
        assert np.abs(result.astype(int) - rgb).mean() < 2.0


def test_rgb_to_compressed_image_round_trip() -> None:
    rgb = smooth_rgb()
    png = through_cdr(rgb_to_compressed_image(rgb, "png", 5, "cam"), messages.COMPRESSED_IMAGE)
    assert png.format == "rgb8; png compressed bgr8" and stamp_ns_of(png) == 5
    np.testing.assert_array_equal(compressed_image_to_rgb(png), rgb)
    jpeg = through_cdr(rgb_to_compressed_image(rgb, "jpeg"), messages.COMPRESSED_IMAGE)
    assert np.abs(compressed_image_to_rgb(jpeg).astype(int) - rgb).mean() < 2.0


@pytest.mark.parametrize(
    ("image_format", "data", "expected"),
    [
        ("16UC1; compressedDepth png", b"\x00" * 20, "compressedDepth"),
        ("h264", b"\x00" * 20, "unsupported CompressedImage format 'h264'"),
        ("jpeg", b"not a jpeg at all", "17 bytes"),
        ("png", b"", "no data"),
    ],
)
def test_bad_compressed_images_raise(image_format: str, data: bytes, expected: str) -> None:
    with pytest.raises(MessageConversionError, match=expected):
        compressed_image_to_rgb(SimpleNamespace(format=image_format, data=np.frombuffer(data, np.uint8)))


def test_camera_info_pair_describes_the_rig() -> None:
    left, right = (through_cdr(m, messages.CAMERA_INFO) for m in camera_info_messages(CAMERA, 3_000_000_007))
    assert stamp_ns_of(left) == stamp_ns_of(right) == 3_000_000_007
    assert (left.header.frame_id, right.header.frame_id) == (
        "stereo_left_optical_frame",
        "stereo_right_optical_frame",
    )
    for info in (left, right):
        assert (info.width, info.height, info.distortion_model) == (7, 5, "plumb_bob")
        np.testing.assert_array_equal(info.k.reshape(3, 3), CAMERA.K)
        np.testing.assert_array_equal(info.r.reshape(3, 3), np.eye(3))
        np.testing.assert_array_equal(info.d, np.zeros(5))
    assert left.p[3] == 0.0
    assert right.p[3] == pytest.approx(-CAMERA.fx * CAMERA.baseline)
    assert CameraModel.from_camera_info(left, right) == CAMERA


def test_disparity_image_carries_focal_length_and_baseline() -> None:
    disparity = np.linspace(1.0, 60.0, CAMERA.height * CAMERA.width, dtype=np.float32).reshape(5, 7)
    disparity[0, 0] = 0.0  # invalid
    message = through_cdr(
        disparity_image_message(disparity, CAMERA, 9, "cam", min_disparity=0.0, max_disparity=64.0),
        messages.DISPARITY_IMAGE,
    )
    assert (message.f, message.t) == (pytest.approx(CAMERA.fx), pytest.approx(CAMERA.baseline))
    assert (message.min_disparity, message.max_disparity, message.delta_d) == (0.0, 64.0, 1.0 / 16.0)
    assert (message.valid_window.width, message.valid_window.height) == (7, 5)
    assert message.image.encoding == "32FC1" and stamp_ns_of(message.image) == 9
    received = image_to_array(message.image)
    np.testing.assert_array_equal(received, disparity)
    depth = np.where(received > 0, message.f * message.t / np.where(received > 0, received, 1), 0)
    np.testing.assert_allclose(depth, CAMERA.disparity_to_depth(disparity), rtol=1e-6)
    with pytest.raises(MessageConversionError, match="7x5"):
        disparity_image_message(np.zeros((4, 4), np.float32), CAMERA)


def test_detection2d_array_from_tracks() -> None:
    tracks = [
        Track(track_id=12, class_id=7, box=(10.0, 20.0, 30.0, 60.0), score=0.9),
        Track(track_id=3, class_id=26, box=(0.0, 0.0, 4.0, 2.0), score=0.25),
    ]
    message = through_cdr(detection2d_array_message(tracks, 11, "cam"), messages.DETECTION2D_ARRAY)
    assert stamp_ns_of(message) == 11 and message.header.frame_id == "cam"
    first, second = message.detections
    assert (first.id, second.id) == ("12", "3")
    assert (first.bbox.center.position.x, first.bbox.center.position.y) == (20.0, 40.0)
    assert (first.bbox.size_x, first.bbox.size_y, first.bbox.center.theta) == (20.0, 40.0, 0.0)
    (hypothesis,) = first.results
    assert (hypothesis.hypothesis.class_id, hypothesis.hypothesis.score) == ("c07", 0.9)
    assert hypothesis.pose.pose.orientation.w == 1.0
    assert second.results[0].hypothesis.class_id == "c26"
    named = detection2d_array_message(tracks[:1], class_names=[f"class{i}" for i in range(8)])
    assert named.detections[0].results[0].hypothesis.class_id == "class7"
    with pytest.raises(MessageConversionError, match="class id 7 has no name among 2"):
        detection2d_array_message(tracks, class_names=["a", "b"])


def test_label_info() -> None:
    names = [messages.pseudo_class_name(i) for i in range(27)]
    message = through_cdr(label_info_message(names, 0.7, 13, "cam"), messages.LABEL_INFO)
    assert stamp_ns_of(message) == 13
    assert message.threshold == pytest.approx(0.7)
    assert [(c.class_id, c.class_name) for c in message.class_map] == list(enumerate(names))
    assert names[7] == "c07"


def test_vision_msgs_definitions_are_the_4x_layout() -> None:
    store = typestore()
    fields = {name: [field for field, _ in store.fielddefs[name][1]] for name in VISION_MSGS_DEFINITIONS}
    assert fields["vision_msgs/msg/Detection2D"] == ["header", "results", "bbox", "id"]
    assert fields["vision_msgs/msg/ObjectHypothesisWithPose"] == ["hypothesis", "pose"]
    assert fields["vision_msgs/msg/ObjectHypothesis"] == ["class_id", "score"]
    assert fields["vision_msgs/msg/BoundingBox2D"] == ["center", "size_x", "size_y"]
    assert fields["vision_msgs/msg/Pose2D"] == ["position", "theta"]
    assert fields["vision_msgs/msg/LabelInfo"] == ["header", "class_map", "threshold"]
    assert fields["vision_msgs/msg/VisionClass"] == ["class_id", "class_name"]
    definition, _ = store.generate_msgdef("vision_msgs/msg/LabelInfo", ros_version=2)
    assert "vision_msgs/VisionClass[] class_map\nfloat32 threshold" in definition
    assert "uint16 class_id\nstring class_name" in definition
    assert typestore() is store  # cached


def test_yuv422_camera_output_converts_to_rgb() -> None:
    gray_uyvy = np.full((2, 4, 2), 128, np.uint8)  # U=Y=V=128: mid gray
    rgb = image_to_rgb(array_to_image(gray_uyvy, "yuv422"))
    assert rgb.shape == (2, 4, 3) and np.all(np.abs(rgb.astype(int) - 128) <= 2)
