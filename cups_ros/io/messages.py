"""Conversions between ROS 2 messages and numpy, for rosbags and rclpy message objects alike.

Reading works by duck typing: rosbags and rclpy messages share field names (``header.stamp.sec``,
``height``, ``width``, ``encoding``, ``step``, ``data``, ``p``...); only the container of ``data``
differs (numpy array, ``array.array`` or bytes), and every buffer goes through ``np.frombuffer``.
Building messages takes the classes from a ``MessageTypes`` namespace: the default one comes from the
rosbags type store (for bags), ``MessageTypes.from_rclpy()`` gives the rclpy classes (for the nodes).
"""

from __future__ import annotations

import array
import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import cv2
import numpy as np

from cups_ros.core.camera import CameraModel
from cups_ros.io.vision_msgs import typestore

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED_IMAGE",
    "DETECTION2D_ARRAY",
    "DISPARITY_IMAGE",
    "IMAGE",
    "LABEL_INFO",
    "RGB_ENCODINGS",
    "DetectedInstance",
    "MessageConversionError",
    "MessageTypes",
    "array_to_image",
    "camera_info_messages",
    "compressed_image_to_rgb",
    "detection2d_array_message",
    "disparity_image_message",
    "encoding_layout",
    "header_message",
    "image_message_to_rgb",
    "image_to_array",
    "image_to_rgb",
    "label_info_message",
    "pseudo_class_name",
    "rgb_to_compressed_image",
    "stamp_ns_of",
    "typestore",
]

# ROS 2 type names of the messages this project reads and writes.
IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
DISPARITY_IMAGE = "stereo_msgs/msg/DisparityImage"
DETECTION2D_ARRAY = "vision_msgs/msg/Detection2DArray"
LABEL_INFO = "vision_msgs/msg/LabelInfo"

NANOSECONDS_PER_SECOND = 1_000_000_000


class MessageConversionError(ValueError):
    """A message that cannot be converted; the text names the encoding or sizes that were wrong."""


# --- message classes -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MessageTypes:
    """The message classes (and array containers) that message builders instantiate.

    rosbags wants numpy arrays in sequence fields, rclpy wants ``array.array``; ``uint8_sequence`` and
    ``float64_sequence`` turn a numpy array into what the classes accept. Fixed-size arrays (K, R, P,
    covariance) take numpy arrays in both.
    """

    Time: type
    Header: type
    Image: type
    CompressedImage: type
    CameraInfo: type
    RegionOfInterest: type
    DisparityImage: type
    Point: type
    Quaternion: type
    Pose: type
    PoseWithCovariance: type
    Point2D: type
    Pose2D: type
    BoundingBox2D: type
    ObjectHypothesis: type
    ObjectHypothesisWithPose: type
    Detection2D: type
    Detection2DArray: type
    VisionClass: type
    LabelInfo: type
    uint8_sequence: Callable[[np.ndarray], Any]
    float64_sequence: Callable[[np.ndarray], Any]

    @classmethod
    def from_typestore(cls, store: Any = None) -> MessageTypes:
        """rosbags classes, from ``store`` or the project's type store (Humble + vision_msgs)."""
        store = store if store is not None else typestore()
        names = {
            "Time": "builtin_interfaces/msg/Time",
            "Header": "std_msgs/msg/Header",
            "Image": IMAGE,
            "CompressedImage": COMPRESSED_IMAGE,
            "CameraInfo": CAMERA_INFO,
            "RegionOfInterest": "sensor_msgs/msg/RegionOfInterest",
            "DisparityImage": DISPARITY_IMAGE,
            "Point": "geometry_msgs/msg/Point",
            "Quaternion": "geometry_msgs/msg/Quaternion",
            "Pose": "geometry_msgs/msg/Pose",
            "PoseWithCovariance": "geometry_msgs/msg/PoseWithCovariance",
            "Point2D": "vision_msgs/msg/Point2D",
            "Pose2D": "vision_msgs/msg/Pose2D",
            "BoundingBox2D": "vision_msgs/msg/BoundingBox2D",
            "ObjectHypothesis": "vision_msgs/msg/ObjectHypothesis",
            "ObjectHypothesisWithPose": "vision_msgs/msg/ObjectHypothesisWithPose",
            "Detection2D": "vision_msgs/msg/Detection2D",
            "Detection2DArray": DETECTION2D_ARRAY,
            "VisionClass": "vision_msgs/msg/VisionClass",
            "LabelInfo": LABEL_INFO,
        }
        return cls(
            **{field: store.types[name] for field, name in names.items()},
            uint8_sequence=lambda values: np.ascontiguousarray(values, dtype=np.uint8).reshape(-1),
            float64_sequence=lambda values: np.ascontiguousarray(values, dtype=np.float64).reshape(-1),
        )

    @classmethod
    def from_rclpy(cls) -> MessageTypes:
        """rclpy classes (needs a sourced ROS 2 with sensor_msgs, stereo_msgs, vision_msgs)."""
        from builtin_interfaces.msg import Time
        from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
        from std_msgs.msg import Header
        from stereo_msgs.msg import DisparityImage
        from vision_msgs.msg import (
            BoundingBox2D,
            Detection2D,
            Detection2DArray,
            LabelInfo,
            ObjectHypothesis,
            ObjectHypothesisWithPose,
            Point2D,
            Pose2D,
            VisionClass,
        )

        return cls(
            Time=Time,
            Header=Header,
            Image=Image,
            CompressedImage=CompressedImage,
            CameraInfo=CameraInfo,
            RegionOfInterest=RegionOfInterest,
            DisparityImage=DisparityImage,
            Point=Point,
            Quaternion=Quaternion,
            Pose=Pose,
            PoseWithCovariance=PoseWithCovariance,
            Point2D=Point2D,
            Pose2D=Pose2D,
            BoundingBox2D=BoundingBox2D,
            ObjectHypothesis=ObjectHypothesis,
            ObjectHypothesisWithPose=ObjectHypothesisWithPose,
            Detection2D=Detection2D,
            Detection2DArray=Detection2DArray,
            VisionClass=VisionClass,
            LabelInfo=LabelInfo,
            uint8_sequence=lambda values: array.array("B", np.ascontiguousarray(values, np.uint8).tobytes()),
            float64_sequence=lambda values: array.array("d", np.asarray(values, np.float64).ravel().tolist()),
        )


@functools.cache
def _default_types() -> MessageTypes:
    return MessageTypes.from_typestore()


def _types_or_default(types: MessageTypes | None) -> MessageTypes:
    return types if types is not None else _default_types()


# --- stamps and headers ----------------------------------------------------------------------


def stamp_ns_of(message: Any) -> int:
    """Header stamp in nanoseconds of any stamped message (or of a Time message itself)."""
    stamp = message.header.stamp if hasattr(message, "header") else message
    return int(stamp.sec) * NANOSECONDS_PER_SECOND + int(stamp.nanosec)


def header_message(stamp_ns: int, frame_id: str, types: MessageTypes | None = None) -> Any:
    """std_msgs/Header; raises for negative stamps, which builtin_interfaces/Time cannot carry."""
    types = _types_or_default(types)
    if stamp_ns < 0:
        raise MessageConversionError(f"stamp must not be negative, got {stamp_ns} ns")
    seconds, nanoseconds = divmod(int(stamp_ns), NANOSECONDS_PER_SECOND)
    return types.Header(stamp=types.Time(sec=seconds, nanosec=nanoseconds), frame_id=frame_id)


# --- raw images ------------------------------------------------------------------------------

_DEPTH_DTYPES = {"8U": "u1", "8S": "i1", "16U": "u2", "16S": "i2", "32S": "i4", "32F": "f4", "64F": "f8"}

# encoding -> (numpy dtype code, channels), as sensor_msgs/image_encodings.hpp defines them.
_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "rgb16": ("u2", 3),
    "bgr16": ("u2", 3),
    "rgba16": ("u2", 4),
    "bgra16": ("u2", 4),
    "mono8": ("u1", 1),
    "mono16": ("u2", 1),
    "yuv422": ("u1", 2),
    "yuv422_yuy2": ("u1", 2),
    **{
        f"bayer_{pattern}{bits}": ("u1" if bits == 8 else "u2", 1)
        for pattern in ("rggb", "bggr", "gbrg", "grbg")
        for bits in (8, 16)
    },
    **{
        f"{depth}C{channels}": (code, channels)
        for depth, code in _DEPTH_DTYPES.items()
        for channels in (1, 2, 3, 4)
    },
}

# Encodings image_to_rgb turns into RGB (others have no defined colour meaning, e.g. 32FC1 depth).
RGB_ENCODINGS = (
    "rgb8",
    "bgr8",
    "rgba8",
    "bgra8",
    "mono8",
    "mono16",
    "rgb16",
    "bgr16",
    "yuv422",
    "yuv422_yuy2",
)


def encoding_layout(encoding: str) -> tuple[np.dtype, int]:
    """(little-endian element dtype, channels) of a sensor_msgs/Image encoding."""
    try:
        code, channels = _ENCODINGS[encoding]
    except KeyError:
        raise MessageConversionError(
            f"unsupported image encoding {encoding!r} (supported: {', '.join(sorted(_ENCODINGS))})"
        ) from None
    return np.dtype(code).newbyteorder("<"), channels


def _bytes_of(data: Any) -> np.ndarray:
    """The message's byte buffer as a flat uint8 array (numpy, array.array, bytes or a list)."""
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if isinstance(data, list | tuple):
        return np.asarray(data, dtype=np.uint8)
    return np.frombuffer(data, dtype=np.uint8)


def image_to_array(message: Any) -> np.ndarray:
    """sensor_msgs/Image as a native-endian HxW (one channel) or HxWxC array of its element type.

    Honours ``step`` (row padding) and ``is_bigendian``; raises MessageConversionError for unknown
    encodings and for data that does not hold ``height`` rows of ``step`` bytes.
    """
    encoding = str(message.encoding)
    dtype, channels = encoding_layout(encoding)
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0:
        raise MessageConversionError(f"{encoding} image has no pixels: {width}x{height}")
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise MessageConversionError(
            f"{encoding} image {width}x{height}: step {step} is less than width * bytes per pixel "
            f"= {row_bytes}"
        )
    data = _bytes_of(message.data)
    if data.size != height * step:
        raise MessageConversionError(
            f"{encoding} image {width}x{height}: data has {data.size} bytes, expected height * step "
            f"= {height} * {step} = {height * step}"
        )
    if message.is_bigendian:
        dtype = dtype.newbyteorder(">")
    rows = data.reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).reshape((height, width, channels))
    pixels = pixels.astype(dtype.newbyteorder("="), copy=True)
    return pixels[:, :, 0] if channels == 1 else pixels


def image_to_rgb(message: Any) -> np.ndarray:
    """sensor_msgs/Image as HxWx3 uint8 RGB; 16-bit encodings keep their high byte."""
    encoding = str(message.encoding)
    encoding_layout(encoding)  # unknown encodings say so
    if encoding not in RGB_ENCODINGS:
        raise MessageConversionError(
            f"image encoding {encoding!r} has no RGB meaning (convertible: {', '.join(RGB_ENCODINGS)})"
        )
    pixels = image_to_array(message)
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    conversions = {
        "bgr8": cv2.COLOR_BGR2RGB,
        "bgr16": cv2.COLOR_BGR2RGB,
        "rgba8": cv2.COLOR_RGBA2RGB,
        "bgra8": cv2.COLOR_BGRA2RGB,
        "mono8": cv2.COLOR_GRAY2RGB,
        "mono16": cv2.COLOR_GRAY2RGB,
        "yuv422": cv2.COLOR_YUV2RGB_UYVY,
        "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
    }
    if encoding in conversions:
        return cv2.cvtColor(pixels, conversions[encoding])
    return pixels


def array_to_image(
    pixels: np.ndarray,
    encoding: str,
    stamp_ns: int = 0,
    frame_id: str = "",
    types: MessageTypes | None = None,
    *,
    step: int | None = None,
    is_bigendian: bool = False,
) -> Any:
    """sensor_msgs/Image holding ``pixels`` (HxW or HxWxC of the encoding's element type).

    ``step`` above the row size pads each row with zeros and ``is_bigendian`` stores multi-byte
    elements big-endian: both are legal in ROS and exist so that readers can be tested against them.
    """
    types = _types_or_default(types)
    dtype, channels = encoding_layout(encoding)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if pixels.ndim != 3 or pixels.shape[2] != channels:
        raise MessageConversionError(
            f"{encoding} needs HxW{'' if channels == 1 else f'x{channels}'} pixels, got shape {pixels.shape}"
        )
    if pixels.dtype.newbyteorder("=") != dtype.newbyteorder("="):
        raise MessageConversionError(
            f"{encoding} needs {dtype.newbyteorder('=').name} pixels, got {pixels.dtype.name}"
        )
    height, width = pixels.shape[:2]
    row_bytes = width * channels * dtype.itemsize
    step = row_bytes if step is None else int(step)
    if step < row_bytes:
        raise MessageConversionError(
            f"{encoding} image {width}x{height}: step {step} is less than width * bytes per pixel "
            f"= {row_bytes}"
        )
    stored = pixels.astype(dtype.newbyteorder(">" if is_bigendian else "<"), copy=False)
    rows = np.zeros((height, step), dtype=np.uint8)
    rows[:, :row_bytes] = np.ascontiguousarray(stored).view(np.uint8).reshape(height, row_bytes)
    return types.Image(
        header=header_message(stamp_ns, frame_id, types),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(is_bigendian),
        step=step,
        data=types.uint8_sequence(rows),
    )


# --- compressed images -----------------------------------------------------------------------

_COMPRESSION_NAMES = {"jpeg": ".jpg", "jpg": ".jpg", "png": ".png"}


def compressed_image_to_rgb(message: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG or PNG, as image_transport's compressed plugin writes it).

    ``format`` is "jpeg", "png" or image_transport's "<raw encoding>; <jpeg|png> compressed [<enc>]".
    The compressed plugin encodes colour as BGR with OpenCV, so OpenCV's decoding gives BGR back.
    """
    image_format = str(message.format).strip().lower()
    if "compresseddepth" in image_format:
        raise MessageConversionError(
            f"CompressedImage format {message.format!r} is a depth image (compressedDepth), not RGB"
        )
    words = image_format.replace(";", " ").split()
    if words and not any(word in _COMPRESSION_NAMES for word in words):
        raise MessageConversionError(
            f"unsupported CompressedImage format {message.format!r} (supported: jpeg, png)"
        )
    data = _bytes_of(message.data)
    if data.size == 0:
        raise MessageConversionError(f"CompressedImage ({message.format!r}) has no data")
    pixels = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if pixels is None:
        raise MessageConversionError(
            f"CompressedImage data ({data.size} bytes, format {message.format!r}) is not a decodable image"
        )
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    if pixels.dtype != np.uint8:
        raise MessageConversionError(
            f"CompressedImage decodes to {pixels.dtype.name} pixels, not 8 or 16 bit"
        )
    if pixels.ndim == 2:
        return cv2.cvtColor(pixels, cv2.COLOR_GRAY2RGB)
    conversions = {1: cv2.COLOR_GRAY2RGB, 3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
    return cv2.cvtColor(pixels, conversions[pixels.shape[2]])


def image_message_to_rgb(message: Any) -> np.ndarray:
    """Image or CompressedImage (told apart by their fields, as a topic may carry either) to RGB."""
    return image_to_rgb(message) if hasattr(message, "encoding") else compressed_image_to_rgb(message)


def rgb_to_compressed_image(
    rgb: np.ndarray,
    compression: str = "png",
    stamp_ns: int = 0,
    frame_id: str = "",
    types: MessageTypes | None = None,
    *,
    jpeg_quality: int = 95,
) -> Any:
    """sensor_msgs/CompressedImage as image_transport's compressed plugin publishes an rgb8 image."""
    types = _types_or_default(types)
    if compression not in ("png", "jpeg"):
        raise MessageConversionError(f"compression must be 'png' or 'jpeg', got {compression!r}")
    _check_rgb(rgb)
    parameters = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if compression == "jpeg" else []
    ok, encoded = cv2.imencode(
        _COMPRESSION_NAMES[compression], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), parameters
    )
    if not ok:
        raise MessageConversionError(f"OpenCV could not encode a {rgb.shape} image as {compression}")
    return types.CompressedImage(
        header=header_message(stamp_ns, frame_id, types),
        format=f"rgb8; {compression} compressed bgr8",
        data=types.uint8_sequence(encoded),
    )


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        raise MessageConversionError(
            f"expected HxWx3 uint8 RGB, got shape {shape} dtype {getattr(rgb, 'dtype', type(rgb))}"
        )


# --- camera info and disparity ---------------------------------------------------------------


def _region_of_interest(types: MessageTypes, width: int = 0, height: int = 0) -> Any:
    return types.RegionOfInterest(x_offset=0, y_offset=0, height=height, width=width, do_rectify=False)


def camera_info_messages(
    camera: CameraModel,
    stamp_ns: int = 0,
    frame_id_left: str = "stereo_left_optical_frame",
    frame_id_right: str = "stereo_right_optical_frame",
    types: MessageTypes | None = None,
) -> tuple[Any, Any]:
    """(left, right) sensor_msgs/CameraInfo of a rectified pair: P right has Tx = -fx * baseline.

    Images are rectified, so D is zero ("plumb_bob"), R is the identity and K is P's left 3x3.
    """
    types = _types_or_default(types)
    projections = camera.projection_matrices()
    messages = []
    for frame_id, projection in zip((frame_id_left, frame_id_right), projections, strict=True):
        messages.append(
            types.CameraInfo(
                header=header_message(stamp_ns, frame_id, types),
                height=camera.height,
                width=camera.width,
                distortion_model="plumb_bob",
                d=types.float64_sequence(np.zeros(5)),
                k=np.asarray(camera.K, dtype=np.float64).reshape(9),
                r=np.eye(3).reshape(9),
                p=np.asarray(projection, dtype=np.float64).reshape(12),
                binning_x=0,
                binning_y=0,
                roi=_region_of_interest(types),
            )
        )
    return messages[0], messages[1]


def disparity_image_message(
    disparity: np.ndarray,
    camera: CameraModel,
    stamp_ns: int = 0,
    frame_id: str = "stereo_left_optical_frame",
    min_disparity: float = 0.0,
    max_disparity: float | None = None,
    types: MessageTypes | None = None,
    *,
    delta_d: float = 1.0 / 16.0,
) -> Any:
    """stereo_msgs/DisparityImage (32FC1) with f = fx and t = baseline, so depth = f * t / d.

    ``delta_d`` defaults to OpenCV StereoSGBM's 1/16 pixel step; ``max_disparity`` to the largest
    finite value in the map.
    """
    types = _types_or_default(types)
    disparity = np.asarray(disparity, dtype=np.float32)
    if disparity.shape != (camera.height, camera.width):
        raise MessageConversionError(
            f"disparity map is {disparity.shape[1]}x{disparity.shape[0]} but the camera is "
            f"{camera.width}x{camera.height}"
        )
    if max_disparity is None:
        finite = disparity[np.isfinite(disparity)]
        max_disparity = float(finite.max()) if finite.size else 0.0
    image = array_to_image(disparity, "32FC1", stamp_ns, frame_id, types)
    return types.DisparityImage(
        header=header_message(stamp_ns, frame_id, types),
        image=image,
        f=float(camera.fx),
        t=float(camera.baseline),
        valid_window=_region_of_interest(types, camera.width, camera.height),
        min_disparity=float(min_disparity),
        max_disparity=float(max_disparity),
        delta_d=float(delta_d),
    )


# --- detections and labels -------------------------------------------------------------------


class DetectedInstance(Protocol):
    """What a Detection2D is built from; cups_ros.core.Track has these attributes."""

    track_id: int
    class_id: int
    box: tuple[float, float, float, float]
    score: float


def pseudo_class_name(class_id: int) -> str:
    """Name of pseudo-class ``class_id``: "c00", "c07", ... (see DESIGN.md, conventions)."""
    return f"c{int(class_id):02d}"


def _identity_pose(types: MessageTypes) -> Any:
    return types.PoseWithCovariance(
        pose=types.Pose(
            position=types.Point(x=0.0, y=0.0, z=0.0),
            orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0),
        ),
        covariance=np.zeros(36, dtype=np.float64),
    )


def detection2d_array_message(
    instances: Iterable[DetectedInstance],
    stamp_ns: int = 0,
    frame_id: str = "",
    types: MessageTypes | None = None,
    class_names: Sequence[str] | None = None,
) -> Any:
    """vision_msgs/Detection2DArray: per instance id = track id, its box, one class hypothesis.

    The hypothesis' class_id is the class name (``class_names[class_id]``, else "cNN"), as the
    LabelInfo on the same node lists it; box (x_min, y_min, x_max, y_max) becomes centre and size.
    """
    types = _types_or_default(types)
    header = header_message(stamp_ns, frame_id, types)
    detections = []
    for instance in instances:
        x_min, y_min, x_max, y_max = (float(v) for v in instance.box)
        class_id = int(instance.class_id)
        if class_names is not None and not 0 <= class_id < len(class_names):
            raise MessageConversionError(f"class id {class_id} has no name among {len(class_names)} classes")
        class_name = class_names[class_id] if class_names is not None else pseudo_class_name(class_id)
        hypothesis = types.ObjectHypothesisWithPose(
            hypothesis=types.ObjectHypothesis(class_id=class_name, score=float(instance.score)),
            pose=_identity_pose(types),
        )
        box = types.BoundingBox2D(
            center=types.Pose2D(
                position=types.Point2D(x=(x_min + x_max) / 2.0, y=(y_min + y_max) / 2.0), theta=0.0
            ),
            size_x=x_max - x_min,
            size_y=y_max - y_min,
        )
        detections.append(
            types.Detection2D(header=header, results=[hypothesis], bbox=box, id=str(int(instance.track_id)))
        )
    return types.Detection2DArray(header=header, detections=detections)


def label_info_message(
    class_names: Sequence[str],
    threshold: float = 0.5,
    stamp_ns: int = 0,
    frame_id: str = "",
    types: MessageTypes | None = None,
) -> Any:
    """vision_msgs/LabelInfo mapping class ids 0..N-1 to ``class_names`` (published latched)."""
    types = _types_or_default(types)
    if len(class_names) > 65535:
        raise MessageConversionError(f"LabelInfo holds at most 65535 classes, got {len(class_names)}")
    return types.LabelInfo(
        header=header_message(stamp_ns, frame_id, types),
        class_map=[
            types.VisionClass(class_id=index, class_name=str(name)) for index, name in enumerate(class_names)
        ],
        threshold=float(threshold),
    )
