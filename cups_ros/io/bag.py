"""ROS 2 bags (sqlite3 or mcap) in and out, with rosbags: synchronized stereo frames and any message.

Reading streams the bag (one message at a time, a few pending images per camera) and pairs left and
right images by header stamp. A bad message never stops the stream and never becomes a wrong frame:
it is skipped and counted by reason in a ``SyncReport``. Problems of the whole bag (missing, corrupt,
wrong topics) raise ``BagError`` naming the file.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import dataclasses
import logging
import sqlite3
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import apsw
import cv2
import yaml
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.serde import SerdeError
from rosbags.typesys.store import Typestore
from tqdm import tqdm

from cups_ros.core.camera import CameraModel, CameraModelError
from cups_ros.core.config import ConfigError
from cups_ros.core.files import atomic_path
from cups_ros.core.frame import StereoFrame, StereoFrameError
from cups_ros.io.messages import (
    CAMERA_INFO,
    COMPRESSED_IMAGE,
    IMAGE,
    LABEL_INFO,
    MessageConversionError,
    array_to_image,
    camera_info_messages,
    image_message_to_rgb,
    rgb_to_compressed_image,
    stamp_ns_of,
)
from cups_ros.io.vision_msgs import typestore

logger = logging.getLogger(__name__)

Storage = Literal["sqlite3", "mcap"]
Side = Literal["left", "right"]
SIDES: tuple[Side, Side] = ("left", "right")

# rosbag2 metadata version 8: the newest one whose QoS block (a YAML string) Humble's rosbag2 still
# parses; Jazzy reads it too. Version 9 changed the QoS layout and only Jazzy and later read it.
BAG_VERSION = 8

# What a latched publisher offers (LabelInfo): late subscribers of a replay get the last message.
LATCHED_QOS = Qos(
    history=QosHistory.KEEP_LAST,
    depth=1,
    reliability=QosReliability.RELIABLE,
    durability=QosDurability.TRANSIENT_LOCAL,
    deadline=QosTime(0, 0),
    lifespan=QosTime(0, 0),
    liveliness=QosLiveliness.AUTOMATIC,
    liveliness_lease_duration=QosTime(0, 0),
    avoid_ros_namespace_conventions=False,
)

# What a damaged storage file raises from rosbags, its sqlite (apsw) layer or its mcap parser.
_STORAGE_ERRORS = (
    ReaderError,
    apsw.Error,
    sqlite3.Error,
    struct.error,
    OSError,
    EOFError,
    ArithmeticError,
    KeyError,
    IndexError,
    ValueError,
)
# What deserializing one damaged message raises.
_MESSAGE_ERRORS = (SerdeError, struct.error, ValueError, IndexError, UnicodeDecodeError)


class BagError(ValueError):
    """A bag that cannot be used as a whole; the message names the file and what is wrong."""


# --- configuration ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StereoTopics:
    """Topics of a rectified stereo pair (images may be Image or CompressedImage)."""

    left_image: str = "/stereo/left/image_rect_color"
    right_image: str = "/stereo/right/image_rect_color"
    left_info: str = "/stereo/left/camera_info"
    right_info: str = "/stereo/right/camera_info"

    def image(self, side: Side) -> str:
        return self.left_image if side == "left" else self.right_image

    def info(self, side: Side) -> str:
        return self.left_info if side == "left" else self.right_info

    def all(self) -> tuple[str, str, str, str]:
        return (self.left_image, self.right_image, self.left_info, self.right_info)


@dataclasses.dataclass(frozen=True)
class StereoInputConfig:
    """Stereo input (config/stereo_input.yaml): topics and how left and right are paired."""

    topics: StereoTopics = dataclasses.field(default_factory=StereoTopics)
    # Largest header-stamp difference of a left/right pair; hardware-triggered pairs share the stamp.
    sync_tolerance_s: float = 0.005
    # Unpaired images held per camera (and pairs waiting for their CameraInfo) before the oldest goes.
    queue_size: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.sync_tolerance_s < 1.0:
            raise ConfigError(f"sync_tolerance_s must lie in [0, 1) s, got {self.sync_tolerance_s}")
        if self.queue_size < 1:
            raise ConfigError(f"queue_size must be at least 1, got {self.queue_size}")
        if len(set(self.topics.all())) != 4:
            raise ConfigError(f"the four stereo topics must differ, got {self.topics}")


# --- synchronization -------------------------------------------------------------------------


@dataclasses.dataclass
class SyncReport:
    """What a stereo read produced and what it skipped, counted per reason."""

    source: str = ""
    frames: int = 0
    received: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)
    skipped: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def summary(self) -> str:
        """Multi-line text for logs and the command line."""
        received = ", ".join(f"{count} {what}" for what, count in sorted(self.received.items())) or "nothing"
        lines = [f"{self.source}: {self.frames} stereo frames from {received}"]
        if self.skipped:
            lines.append(f"skipped {self.skipped_total}:")
            lines += [f"  {count:6d}  {reason}" for reason, count in self.skipped.most_common()]
        else:
            lines.append("skipped nothing")
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class _StampedImage:
    stamp_ns: int
    message: Any


class _CameraInfoHistory:
    """CameraInfo messages of one camera by stamp; answers "the latest at or before this stamp"."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.stamps: list[int] = []
        self.messages: list[Any] = []

    @property
    def latest_stamp(self) -> int:
        return self.stamps[-1] if self.stamps else -1

    def add(self, stamp_ns: int, message: Any) -> None:
        index = bisect.bisect_right(self.stamps, stamp_ns)
        if index and self.stamps[index - 1] == stamp_ns:
            self.messages[index - 1] = message
        else:
            self.stamps.insert(index, stamp_ns)
            self.messages.insert(index, message)
        if len(self.stamps) > self.max_entries:
            del self.stamps[0], self.messages[0]

    def at(self, stamp_ns: int) -> Any | None:
        index = bisect.bisect_right(self.stamps, stamp_ns)
        return self.messages[index - 1] if index else None

    def forget_before(self, stamp_ns: int) -> None:
        """Drops what no image at or after ``stamp_ns`` can use (keeps the latest at or before it)."""
        index = bisect.bisect_right(self.stamps, stamp_ns) - 1
        if index > 0:
            del self.stamps[:index], self.messages[:index]


def _camera_info_key(info: Any) -> tuple[Any, ...]:
    return (int(info.width), int(info.height), tuple(float(v) for v in info.p))


class StereoSynchronizer:
    """Pairs left/right images by header stamp and attaches each camera's CameraInfo.

    Transport-free: feed it deserialized messages (rosbags or rclpy) in arrival order; each call
    returns the frames it completed. Images of one camera must arrive in stamp order (a late or
    repeated stamp is skipped). A pair uses, per camera, the CameraInfo with its exact stamp or else
    the latest one before it; it waits (at most ``queue_size`` pairs) until each camera's CameraInfo
    stream has reached its stamp, because recorders often store the info just after its image.
    """

    def __init__(
        self, config: StereoInputConfig, report: SyncReport | None = None, sequence: str = ""
    ) -> None:
        self.tolerance_ns = round(config.sync_tolerance_s * 1e9)
        self.queue_size = config.queue_size
        self.report = report if report is not None else SyncReport(source=sequence)
        self.sequence = sequence
        self._pending: dict[Side, collections.deque[_StampedImage]] = {s: collections.deque() for s in SIDES}
        self._last_stamp: dict[Side, int] = dict.fromkeys(SIDES, -1)
        self._waiting: collections.deque[tuple[_StampedImage, _StampedImage]] = collections.deque()
        self._infos = {side: _CameraInfoHistory(max(64, 4 * config.queue_size)) for side in SIDES}
        self._camera_key: tuple[Any, ...] | None = None
        self._camera: CameraModel | str = ""
        self._index = 0

    def skip(self, reason: str, stamp_ns: int | None = None, count: int = 1) -> None:
        """Counts skipped messages or pairs; the first of each reason is logged as a warning."""
        first = reason not in self.report.skipped
        self.report.skipped[reason] += count
        where = f" at stamp {stamp_ns}" if stamp_ns is not None else ""
        (logger.warning if first else logger.debug)("%s: skipped%s: %s", self.sequence, where, reason)

    def _skip_unpaired(self, side: Side, image: _StampedImage) -> None:
        other = "right" if side == "left" else "left"
        self.skip(
            f"{side} image without {other} partner within {self.tolerance_ns / 1e6:g} ms", image.stamp_ns
        )

    def add_image(self, side: Side, message: Any) -> list[StereoFrame]:
        """An Image or CompressedImage of camera ``side``."""
        self.report.received[f"{side} images"] += 1
        stamp = stamp_ns_of(message)
        if stamp <= self._last_stamp[side]:
            self.skip(f"{side} image stamp out of order or repeated", stamp)
            return []
        self._last_stamp[side] = stamp
        image = _StampedImage(stamp, message)
        other: Side = "right" if side == "left" else "left"
        candidates = self._pending[other]
        best = min(range(len(candidates)), key=lambda i: abs(candidates[i].stamp_ns - stamp), default=None)
        if best is not None and abs(candidates[best].stamp_ns - stamp) <= self.tolerance_ns:
            for _ in range(best):  # older than the partner: can no longer pair in stamp order
                self._skip_unpaired(other, candidates.popleft())
            partner = candidates.popleft()
            while self._pending[side]:
                self._skip_unpaired(side, self._pending[side].popleft())
            self._waiting.append((image, partner) if side == "left" else (partner, image))
        else:
            while candidates and candidates[0].stamp_ns < stamp - self.tolerance_ns:
                self._skip_unpaired(other, candidates.popleft())
            self._pending[side].append(image)
            if len(self._pending[side]) > self.queue_size:
                self._skip_unpaired(side, self._pending[side].popleft())
        return self._complete(final=False)

    def add_camera_info(self, side: Side, message: Any) -> list[StereoFrame]:
        """A CameraInfo of camera ``side``."""
        self.report.received[f"{side} camera infos"] += 1
        self._infos[side].add(stamp_ns_of(message), message)
        return self._complete(final=False)

    def finish(self) -> list[StereoFrame]:
        """End of stream: completes waiting pairs, counts images left without a partner."""
        for side in SIDES:
            while self._pending[side]:
                self._skip_unpaired(side, self._pending[side].popleft())
        return self._complete(final=True)

    def _complete(self, final: bool) -> list[StereoFrame]:
        frames = []
        while self._waiting:
            left, right = self._waiting[0]
            infos_arrived = (
                self._infos["left"].latest_stamp >= left.stamp_ns
                and self._infos["right"].latest_stamp >= right.stamp_ns
            )
            if not (final or infos_arrived or len(self._waiting) > self.queue_size):
                break
            self._waiting.popleft()
            frame = self._frame(left, right)
            if frame is not None:
                frames.append(frame)
        for side, position in zip(SIDES, (0, 1), strict=True):
            still_needed = [pair[position].stamp_ns for pair in self._waiting]
            still_needed += [image.stamp_ns for image in self._pending[side]]
            self._infos[side].forget_before(min(still_needed, default=self._last_stamp[side]))
        return frames

    def _camera_model(self, left_info: Any, right_info: Any) -> CameraModel | str:
        """The pair's camera model, or why there is none; cached while the infos do not change."""
        key = (_camera_info_key(left_info), _camera_info_key(right_info))
        if key != self._camera_key:
            self._camera_key = key
            try:
                self._camera = CameraModel.from_camera_info(left_info, right_info)
            except CameraModelError as error:
                self._camera = f"camera info invalid: {error}"
        return self._camera

    def _frame(self, left: _StampedImage, right: _StampedImage) -> StereoFrame | None:
        infos = []
        for side, image in zip(SIDES, (left, right), strict=True):
            info = self._infos[side].at(image.stamp_ns)
            if info is None:
                self.skip(f"no CameraInfo yet for {side}", image.stamp_ns)
                return None
            infos.append(info)
        camera = self._camera_model(*infos)
        if isinstance(camera, str):
            self.skip(camera, left.stamp_ns)
            return None
        images = []
        for side, image in zip(SIDES, (left, right), strict=True):
            try:
                images.append(image_message_to_rgb(image.message))
            except MessageConversionError as error:
                self.skip(f"decode error: {side}: {error}", image.stamp_ns)
                return None
        try:
            frame = StereoFrame(
                left=images[0],
                right=images[1],
                camera=camera,
                stamp_ns=left.stamp_ns,
                frame_id=str(left.message.header.frame_id),
                sequence=self.sequence,
                index=self._index,
            )
        except StereoFrameError as error:
            self.skip(str(error), left.stamp_ns)
            return None
        self._index += 1
        self.report.frames += 1
        return frame


# --- reading bags ----------------------------------------------------------------------------


@contextlib.contextmanager
def open_bag(path: str | Path) -> Iterator[Reader]:
    """An open rosbags Reader (bag folder, or a single .db3 / .mcap file); BagError if unusable."""
    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_dir() and not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a ROS 2 bag: no metadata.yaml in it")
    try:
        reader = Reader(path)
        reader.open()
    except (*_STORAGE_ERRORS, FileNotFoundError) as error:
        interrupted = _storage_of(path) == "mcap"  # an mcap without its summary: recording cut off
        hint = " (if the recording was interrupted, `mcap recover` can repair it)" if interrupted else ""
        raise BagError(
            f"{path}: cannot open bag (not a bag, truncated or corrupt?): {error}{hint}"
        ) from error
    try:
        yield reader
    finally:
        with contextlib.suppress(*_STORAGE_ERRORS):
            reader.close()


def _messages(
    reader: Reader, connections: list[Connection], path: Path
) -> Iterator[tuple[Connection, bytes]]:
    """The raw messages in bag order; a storage failure midway becomes a BagError naming the file."""
    stream = reader.messages(connections)
    while True:
        try:
            connection, _, raw = next(stream)
        except StopIteration:
            return
        except _STORAGE_ERRORS as error:
            raise BagError(f"{path}: bag is truncated or corrupt: {type(error).__name__}: {error}") from error
        yield connection, raw


def _check_stereo_topics(reader: Reader, topics: StereoTopics, path: Path) -> None:
    available = {name: info.msgtype for name, info in reader.topics.items()}
    listing = ", ".join(f"{name} ({msgtype})" for name, msgtype in sorted(available.items())) or "none"
    left_present, right_present = (topics.image(side) in available for side in SIDES)
    if left_present != right_present:
        present, absent = (topics.left_image, topics.right_image)[:: 1 if left_present else -1]
        raise BagError(
            f"{path}: only one camera: {present} is in the bag but {absent} is not (topics: {listing})"
        )
    missing = [topic for topic in topics.all() if topic not in available]
    if missing:
        raise BagError(f"{path}: configured topic(s) {', '.join(missing)} not in the bag (topics: {listing})")
    expected = {
        topics.left_image: (IMAGE, COMPRESSED_IMAGE),
        topics.right_image: (IMAGE, COMPRESSED_IMAGE),
        topics.left_info: (CAMERA_INFO,),
        topics.right_info: (CAMERA_INFO,),
    }
    for topic, allowed in expected.items():
        if available[topic] not in allowed:
            found = available[topic] or "several types"
            raise BagError(f"{path}: topic {topic} has type {found}, expected {' or '.join(allowed)}")


class StereoBagReader:
    """Synchronized StereoFrames of a bag, streamed; ``report`` tells what was skipped and why.

    The topics are checked when the reader is made (BagError if the bag cannot serve them); each
    iteration reads the bag afresh and replaces ``report``.
    """

    def __init__(
        self, path: str | Path, config: StereoInputConfig | None = None, *, progress: bool = False
    ) -> None:
        self.path = Path(path)
        self.config = config if config is not None else StereoInputConfig()
        self.progress = progress
        self.report = SyncReport(source=str(self.path))
        with open_bag(self.path) as reader:
            _check_stereo_topics(reader, self.config.topics, self.path)

    def __iter__(self) -> Iterator[StereoFrame]:
        self.report = SyncReport(source=str(self.path))
        synchronizer = StereoSynchronizer(self.config, self.report, sequence=self.path.name)
        topics = self.config.topics
        handlers = {topics.image(side): (synchronizer.add_image, side) for side in SIDES}
        handlers |= {topics.info(side): (synchronizer.add_camera_info, side) for side in SIDES}
        store = typestore()
        with open_bag(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in handlers]
            total = sum(c.msgcount for c in connections)
            read = 0
            with tqdm(total=total, unit="msg", desc=self.path.name, disable=not self.progress) as bar:
                for connection, raw in _messages(reader, connections, self.path):
                    bar.update()
                    read += 1
                    handler, side = handlers[connection.topic]
                    try:
                        message = store.deserialize_cdr(raw, connection.msgtype)
                    except _MESSAGE_ERRORS as error:
                        synchronizer.skip(f"decode error: {connection.topic}: {error}")
                        continue
                    yield from handler(side, message)
            yield from synchronizer.finish()
        if read < total:  # a damaged mcap chunk can end early without an error
            synchronizer.skip(
                "unreadable: listed in the bag's index but not readable (damaged storage)", count=total - read
            )
        report = self.report
        logger.info("%s: %d stereo frames, %d skipped", report.source, report.frames, report.skipped_total)


def read_stereo_bag(
    path: str | Path, config: StereoInputConfig | None = None, *, progress: bool = False
) -> Iterator[StereoFrame]:
    """Shorthand for iterating a StereoBagReader when the report is not needed."""
    return iter(StereoBagReader(path, config, progress=progress))


@dataclasses.dataclass(frozen=True)
class TopicSummary:
    name: str
    msgtype: str
    message_count: int


@dataclasses.dataclass(frozen=True)
class BagSummary:
    """What ``ros2 bag info`` shows: storage, time span, topics with types and counts."""

    path: Path
    storage: str
    start_ns: int
    duration_ns: int
    message_count: int
    topics: tuple[TopicSummary, ...]

    def format(self) -> str:
        lines = [
            f"bag:      {self.path}",
            f"storage:  {self.storage}",
            f"duration: {self.duration_ns / 1e9:.3f} s (start {self.start_ns} ns)",
            f"messages: {self.message_count}",
            "topics:",
        ]
        width = max((len(topic.name) for topic in self.topics), default=0)
        width_type = max((len(topic.msgtype) for topic in self.topics), default=0)
        lines += [
            f"  {topic.name:<{width}}  {topic.msgtype:<{width_type}}  {topic.message_count}"
            for topic in self.topics
        ]
        return "\n".join(lines)


def _storage_of(path: Path) -> str:
    if path.is_dir():
        try:
            metadata = yaml.safe_load((path / "metadata.yaml").read_text())
            return str(metadata["rosbag2_bagfile_information"]["storage_identifier"])
        except (OSError, yaml.YAMLError, KeyError, TypeError):
            return "unknown"
    return {".db3": "sqlite3", ".mcap": "mcap"}.get(path.suffix, "unknown")


def bag_summary(path: str | Path) -> BagSummary:
    """Topics, types, message counts and duration of a bag (from its metadata; nothing is decoded)."""
    path = Path(path)
    with open_bag(path) as reader:
        count = reader.message_count
        topics = tuple(
            TopicSummary(name, info.msgtype or "several types", info.msgcount)
            for name, info in sorted(reader.topics.items())
        )
        return BagSummary(
            path=path,
            storage=_storage_of(path),
            start_ns=reader.start_time if count else 0,
            # rosbags reports the end as the last stamp + 1 ns.
            duration_ns=max(0, reader.duration - 1) if count else 0,
            message_count=count,
            topics=topics,
        )


# --- writing bags ----------------------------------------------------------------------------

_STORAGE_PLUGINS = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}


class BagWriter:
    """Writes a ROS 2 bag atomically: into a temporary folder beside ``path``, renamed on success.

    Messages are objects of the project type store (``cups_ros.io.typestore()``), e.g. built by
    ``cups_ros.io.messages``; ``ros2 bag info/play`` read the result (metadata version 8).
    """

    def __init__(
        self,
        path: str | Path,
        storage: Storage = "sqlite3",
        *,
        overwrite: bool = False,
        store: Typestore | None = None,
    ) -> None:
        if storage not in _STORAGE_PLUGINS:
            raise BagError(f"storage must be one of {sorted(_STORAGE_PLUGINS)}, got {storage!r}")
        self.path = Path(path)
        self.storage = storage
        self.overwrite = overwrite
        self.store = store if store is not None else typestore()
        self._writer: Writer | None = None
        self._stack = contextlib.ExitStack()
        self._connections: dict[str, Connection] = {}

    def __enter__(self) -> BagWriter:
        if self.path.exists() and not self.overwrite:
            raise BagError(f"{self.path} exists already (pass overwrite=True to replace it)")
        temporary = self._stack.enter_context(atomic_path(self.path))
        try:
            self._writer = Writer(
                temporary, version=BAG_VERSION, storage_plugin=_STORAGE_PLUGINS[self.storage]
            )
            self._writer.open()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        writer, self._writer = self._writer, None
        assert writer is not None
        if exc_type is not None:
            with contextlib.suppress(Exception):
                writer.abort()
            return bool(self._stack.__exit__(exc_type, exc, traceback))
        try:
            writer.close()
        except BaseException as error:
            with contextlib.suppress(Exception):
                writer.abort()
            self._stack.__exit__(type(error), error, error.__traceback__)
            raise
        return bool(self._stack.__exit__(None, None, None))

    def add_topic(self, name: str, msgtype: str, *, latched: bool | None = None) -> None:
        """Declares a topic; ``latched`` (default: for LabelInfo) offers transient-local QoS."""
        if self._writer is None:
            raise BagError(f"{self.path}: add_topic outside the 'with BagWriter(...)' block")
        if name in self._connections:
            raise BagError(f"{self.path}: topic {name} added twice")
        if msgtype not in self.store.types:
            raise BagError(f"{self.path}: unknown message type {msgtype} for topic {name}")
        latched = msgtype == LABEL_INFO if latched is None else latched
        try:
            self._connections[name] = self._writer.add_connection(
                name, msgtype, typestore=self.store, offered_qos_profiles=[LATCHED_QOS] if latched else ()
            )
        except WriterError as error:
            raise BagError(f"{self.path}: cannot add topic {name}: {error}") from error

    def _connection(self, topic: str) -> tuple[Writer, Connection]:
        if self._writer is None:
            raise BagError(f"{self.path}: write outside the 'with BagWriter(...)' block")
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"{self.path}: topic {topic} was not added (add_topic first)")
        return self._writer, connection

    def write(self, topic: str, stamp_ns: int, message: Any) -> None:
        """Serializes ``message`` (CDR) onto ``topic`` at bag time ``stamp_ns``."""
        writer, connection = self._connection(topic)
        writer.write(connection, int(stamp_ns), self.store.serialize_cdr(message, connection.msgtype))

    def write_serialized(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Writes an already serialized (CDR) message, e.g. one copied unchanged from another bag."""
        writer, connection = self._connection(topic)
        writer.write(connection, int(stamp_ns), data)


ImageEncoding = Literal["rgb8", "bgr8", "png", "jpeg"]


def write_stereo_bag(
    path: str | Path,
    frames: Iterable[StereoFrame],
    topics: StereoTopics | None = None,
    storage: Storage = "sqlite3",
    encoding: ImageEncoding = "rgb8",
    *,
    overwrite: bool = False,
    frame_id_left: str = "stereo_left_optical_frame",
    frame_id_right: str = "stereo_right_optical_frame",
    progress: bool = False,
) -> int:
    """Writes frames as a stereo camera driver publishes them: Image (rgb8/bgr8) or CompressedImage
    (png/jpeg) plus CameraInfo per camera, all stamped with the frame's stamp. Returns the count."""
    if encoding not in ("rgb8", "bgr8", "png", "jpeg"):
        raise BagError(f"encoding must be rgb8, bgr8, png or jpeg, got {encoding!r}")
    topics = topics if topics is not None else StereoTopics()
    compressed = encoding in ("png", "jpeg")
    count = 0
    with BagWriter(path, storage, overwrite=overwrite) as bag:
        for side in SIDES:
            bag.add_topic(topics.image(side), COMPRESSED_IMAGE if compressed else IMAGE)
            bag.add_topic(topics.info(side), CAMERA_INFO)
        for frame in tqdm(frames, unit="frame", desc=Path(path).name, disable=not progress):
            infos = camera_info_messages(frame.camera, frame.stamp_ns, frame_id_left, frame_id_right)
            for side, rgb, info, frame_id in zip(
                SIDES, (frame.left, frame.right), infos, (frame_id_left, frame_id_right), strict=True
            ):
                if compressed:
                    image = rgb_to_compressed_image(rgb, encoding, frame.stamp_ns, frame_id)
                elif encoding == "bgr8":
                    image = array_to_image(
                        cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "bgr8", frame.stamp_ns, frame_id
                    )
                else:
                    image = array_to_image(rgb, "rgb8", frame.stamp_ns, frame_id)
                bag.write(topics.image(side), frame.stamp_ns, image)
                bag.write(topics.info(side), frame.stamp_ns, info)
            count += 1
    return count
