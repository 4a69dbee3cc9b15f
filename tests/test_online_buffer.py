"""Replay buffer: exact round trip, diversity-keeping caps, restarts, damage, two processes."""

from __future__ import annotations

import logging
import re
import shutil
import threading

import numpy as np
import pytest

from cups_ros.core.config import ConfigError
from cups_ros.core.panoptic import IGNORE_CLASS, LABEL_DIVISOR
from cups_ros.online import buffer as buffer_module
from cups_ros.online.buffer import BufferSample, CorruptSampleError, ReplayBuffer, ReplayBufferConfig

HEIGHT, WIDTH = 24, 40


def panoptic_of(classes: list[int]) -> np.ndarray:
    """Vertical bands of the given classes; each band an instance (ids 1, 2, ...) plus an ignore band."""
    panoptic = np.full((HEIGHT, WIDTH), IGNORE_CLASS * LABEL_DIVISOR, np.int32)
    band = WIDTH // (len(classes) + 1)
    for index, class_id in enumerate(classes):
        panoptic[:, index * band : (index + 1) * band] = class_id * LABEL_DIVISOR + index + 1
    return panoptic


def noise_sample(seed: int, classes: tuple[int, ...] = (1, 2), stamp_ns: int | None = None) -> BufferSample:
    image = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    stamp = 1_700_000_000_000_000_000 + seed if stamp_ns is None else stamp_ns
    return BufferSample(image, panoptic_of(list(classes)), stamp, f"bag_{seed}")


def scene(kind: str) -> BufferSample:
    """Three clearly different scenes: image pattern and pseudo-classes both differ."""
    rows, columns = np.mgrid[0:HEIGHT, 0:WIDTH]
    if kind == "horizontal":
        grey, classes = columns * 255 // (WIDTH - 1), [0, 1]
    elif kind == "vertical":
        grey, classes = rows * 255 // (HEIGHT - 1), [5, 6]
    else:
        grey, classes = ((rows // 4 + columns // 4) % 2) * 255, [10, 11, 12]
    image = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
    return BufferSample(image, panoptic_of(classes), 1_000, kind)


def near_copy(sample: BufferSample, seed: int) -> BufferSample:
    rng = np.random.default_rng(seed)
    image = np.clip(sample.image.astype(np.int16) + rng.integers(-2, 3, sample.image.shape), 0, 255)
    return BufferSample(image.astype(np.uint8), sample.panoptic.copy(), 2_000 + seed, "copy")


def config(**changes: int) -> ReplayBufferConfig:
    return ReplayBufferConfig(**{"holdout_every": 0, **changes})


def test_round_trip_is_exact_and_ids_carry_counter_and_stamp(tmp_path):
    buffer = ReplayBuffer(tmp_path, config())
    original = noise_sample(3, classes=(4, 7, 19), stamp_ns=1_700_000_000_123_456_789)
    sample_id = buffer.add(original)
    assert sample_id == "000001_1700000000123456789"
    restored = buffer.read(sample_id)
    np.testing.assert_array_equal(restored.image, original.image)
    np.testing.assert_array_equal(restored.panoptic, original.panoptic)
    assert restored.image.dtype == np.uint8 and restored.panoptic.dtype == np.int32
    assert (restored.stamp_ns, restored.source) == (original.stamp_ns, "bag_3")
    assert (restored.sample_id, restored.holdout) == (sample_id, False)
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        f"{sample_id}.json",
        f"{sample_id}.npz",
    ]
    assert buffer.total_bytes == (tmp_path / "samples" / f"{sample_id}.npz").stat().st_size


def test_restart_keeps_samples_and_continues_the_holdout_assignment(tmp_path):
    settings = ReplayBufferConfig(holdout_every=5, max_holdout=10, max_samples=100)
    first = ReplayBuffer(tmp_path, settings)
    first_ids = [first.add(noise_sample(seed)) for seed in range(3)]
    second = ReplayBuffer(tmp_path, settings)
    assert second.train_ids() == first_ids and second.holdout_ids() == []
    later_ids = [second.add(noise_sample(seed)) for seed in range(3, 10)]
    assert later_ids[0].startswith("000004_")
    assert second.holdout_ids() == [later_ids[1], later_ids[6]]  # the 5th and the 10th added
    assert len(second.train_ids()) == 8 and len(second) == 10
    third = ReplayBuffer(tmp_path, settings)
    assert third.holdout_ids() == second.holdout_ids() and third.train_ids() == second.train_ids()
    assert [s.sample_id for s in third.holdout_samples()] == second.holdout_ids()
    assert all(s.holdout for s in third.holdout_samples())


def test_counter_is_rebuilt_from_the_samples_when_the_state_file_is_lost(tmp_path):
    buffer = ReplayBuffer(tmp_path, config())
    for seed in range(3):
        buffer.add(noise_sample(seed))
    (tmp_path / "state.json").unlink()
    reopened = ReplayBuffer(tmp_path, config())
    assert reopened.add(noise_sample(9)).startswith("000004_")  # no id is reused
    assert len(reopened) == 4


def test_count_cap_evicts_near_duplicates_and_keeps_distinct_scenes(tmp_path):
    buffer = ReplayBuffer(tmp_path, config(max_samples=3))
    road = scene("horizontal")
    road_id = buffer.add(road)
    vertical_id = buffer.add(scene("vertical"))
    checker_id = buffer.add(scene("checker"))
    copy_ids = [buffer.add(near_copy(road, seed)) for seed in range(3)]
    assert len(buffer) == 3 and buffer.stats()["evicted"] == 3
    kept = set(buffer.train_ids())
    assert {vertical_id, checker_id} <= kept  # oldest-first eviction would have dropped these
    road_like = kept & {road_id, *copy_ids}
    assert len(road_like) == 1
    survivor = buffer.read(road_like.pop())
    assert np.abs(survivor.image.astype(int) - road.image).max() <= 2
    assert len(list((tmp_path / "samples").glob("*.npz"))) == 3
    assert len(list((tmp_path / "samples").glob("*.json"))) == 3


def test_byte_cap_bounds_the_disk_use(tmp_path):
    probe = ReplayBuffer(tmp_path / "probe", config())
    probe.add(noise_sample(0))
    sample_bytes = probe.total_bytes
    buffer = ReplayBuffer(tmp_path / "buffer", config(max_bytes=int(sample_bytes * 2.5)))
    ids = [buffer.add(noise_sample(seed)) for seed in range(5)]
    assert len(buffer) == 2 and buffer.stats()["evicted"] == 3
    assert buffer.total_bytes <= int(sample_bytes * 2.5)
    assert ids[-1] in buffer.train_ids()  # the sample just added is never the one evicted
    on_disk = sum(p.stat().st_size for p in (tmp_path / "buffer" / "samples").glob("*.npz"))
    assert on_disk == buffer.total_bytes


def test_holdout_pool_has_its_own_cap(tmp_path):
    buffer = ReplayBuffer(tmp_path, ReplayBufferConfig(holdout_every=2, max_holdout=2, max_samples=100))
    for seed in range(10):
        buffer.add(noise_sample(seed))
    assert len(buffer.holdout_ids()) == 2 and len(buffer.train_ids()) == 5
    assert buffer.stats() == {
        "samples": 7,
        "train": 5,
        "holdout": 2,
        "bytes": buffer.total_bytes,
        "evicted": 3,
        "corrupt": 0,
    }


def test_truncated_sample_raises_names_the_file_and_is_quarantined(tmp_path, caplog):
    buffer = ReplayBuffer(tmp_path, config())
    ids = [buffer.add(noise_sample(seed)) for seed in range(3)]
    npz = buffer.npz_path(ids[1])
    npz.write_bytes(npz.read_bytes()[:50])
    with caplog.at_level(logging.WARNING), pytest.raises(CorruptSampleError, match=re.escape(npz.name)):
        buffer.read(ids[1])
    assert "quarantined" in caplog.text
    assert not npz.exists() and not buffer.json_path(ids[1]).exists()
    assert sorted(p.name for p in (tmp_path / "quarantine").iterdir()) == [f"{ids[1]}.json", npz.name]
    assert buffer.train_ids() == [ids[0], ids[2]] and buffer.stats()["corrupt"] == 1
    assert ReplayBuffer(tmp_path, config()).train_ids() == [ids[0], ids[2]]


def test_sample_skips_a_corrupt_entry_and_replaces_it(tmp_path, caplog):
    buffer = ReplayBuffer(tmp_path, config())
    ids = [buffer.add(noise_sample(seed)) for seed in range(4)]
    npz = buffer.npz_path(ids[2])
    damaged = bytearray(npz.read_bytes())
    damaged[len(damaged) // 2 :] = bytes(len(damaged) - len(damaged) // 2)  # same length, wrong content
    npz.write_bytes(bytes(damaged))
    with caplog.at_level(logging.WARNING):
        for seed in range(10):
            drawn = [sample.sample_id for sample in buffer.sample(3, np.random.default_rng(seed))]
            assert len(drawn) == 3 and len(set(drawn)) == 3 and ids[2] not in drawn
    assert "skipping" in caplog.text and "checksum" in caplog.text
    assert (tmp_path / "quarantine" / npz.name).exists()
    assert len(buffer.sample(10, np.random.default_rng(0))) == 3  # fewer when fewer are readable


def test_holdout_samples_skip_a_corrupt_entry(tmp_path):
    buffer = ReplayBuffer(tmp_path, ReplayBufferConfig(holdout_every=2, max_holdout=5, max_samples=100))
    for seed in range(6):
        buffer.add(noise_sample(seed))
    holdout = buffer.holdout_ids()
    buffer.npz_path(holdout[0]).write_bytes(b"not an npz at all")
    assert [s.sample_id for s in buffer.holdout_samples()] == holdout[1:]
    assert buffer.holdout_ids() == holdout[1:]


def test_open_removes_orphan_npz_and_leftover_temporary_files(tmp_path, caplog):
    buffer = ReplayBuffer(tmp_path, config())
    kept = buffer.add(noise_sample(0))
    samples = tmp_path / "samples"
    shutil.copy(samples / f"{kept}.npz", samples / "000007_5.npz")  # npz without json
    (samples / ".000008_6.npz.abcd.tmp").mkdir()  # an atomic write's temporary folder
    (samples / ".000008_6.npz.abcd.tmp" / "000008_6.npz").write_bytes(b"partial")
    (samples / ".stray.tmp").write_bytes(b"partial")
    with caplog.at_level(logging.WARNING):
        reopened = ReplayBuffer(tmp_path, config())
    assert sorted(p.name for p in samples.iterdir()) == [f"{kept}.json", f"{kept}.npz"]
    assert reopened.train_ids() == [kept]
    assert "000007_5.npz" in caplog.text and ".stray.tmp" in caplog.text


def test_crash_between_npz_and_json_leaves_no_sample(tmp_path, monkeypatch):
    writer = ReplayBuffer(tmp_path, config())
    committed = writer.add(noise_sample(0))
    # A crash after the npz write: the npz of the next sample exists, its json never was written.
    crashed = tmp_path / "samples" / "000002_1700000000000000001.npz"
    shutil.copy(writer.npz_path(committed), crashed)
    reader = ReplayBuffer(tmp_path, config(), writer=False)
    assert reader.train_ids() == [committed] and crashed.exists()  # a reader leaves possible writes alone
    assert ReplayBuffer(tmp_path, config()).train_ids() == [committed] and not crashed.exists()

    def failing_json_write(path: object, value: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(buffer_module, "write_json_atomic", failing_json_write)
    with pytest.raises(OSError, match="disk full"):
        writer.add(noise_sample(1))
    assert writer.train_ids() == [committed]
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == [
        f"{committed}.json",
        f"{committed}.npz",
    ]


def test_refresh_sees_samples_of_another_instance_and_forgets_evicted_ones(tmp_path):
    writer = ReplayBuffer(tmp_path, config(max_samples=2))
    reader = ReplayBuffer(tmp_path, config(max_samples=2), writer=False)
    first_ids = [writer.add(noise_sample(seed, classes=(seed,))) for seed in range(2)]
    assert len(reader) == 0
    reader.refresh()
    assert reader.train_ids() == first_ids
    np.testing.assert_array_equal(reader.read(first_ids[0]).image, noise_sample(0).image)
    writer.add(noise_sample(2, classes=(2,)))
    (evicted,) = set(first_ids) - set(writer.train_ids())
    with pytest.raises(CorruptSampleError, match="evicted"):
        reader.read(evicted)  # not refreshed yet: the file is gone
    assert not (tmp_path / "quarantine").exists()  # an eviction is not damage
    reader.refresh()
    assert reader.train_ids() == writer.train_ids()
    writer.add(noise_sample(3, classes=(3,)))  # evicts one more, which the reader never reads
    reader.refresh()
    assert reader.train_ids() == writer.train_ids() and len(reader) == 2
    assert len(reader.sample(5, np.random.default_rng(0))) == 2
    with pytest.raises(RuntimeError, match="writer=False"):
        reader.add(noise_sample(4))


def test_adding_on_one_thread_while_sampling_on_another(tmp_path):
    buffer = ReplayBuffer(tmp_path, config(max_samples=4))
    for seed in range(4):
        buffer.add(noise_sample(seed))
    errors: list[BaseException] = []

    def label() -> None:
        try:
            for seed in range(4, 24):
                buffer.add(noise_sample(seed))
        except BaseException as error:
            errors.append(error)

    labeller = threading.Thread(target=label)
    labeller.start()
    rng = np.random.default_rng(0)
    while labeller.is_alive():
        assert all(sample.image.shape == (HEIGHT, WIDTH, 3) for sample in buffer.sample(2, rng))
    labeller.join()
    assert errors == [] and len(buffer) == 4 and buffer.stats()["corrupt"] == 0
    assert len(list((tmp_path / "samples").glob("*.npz"))) == 4


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"max_samples": 0}, "buffer.max_samples"),
        ({"max_samples": 2.5}, "buffer.max_samples must be an integer"),
        ({"max_bytes": 0}, "buffer.max_bytes"),
        ({"holdout_every": 1}, "buffer.holdout_every"),
        ({"holdout_every": -3}, "buffer.holdout_every"),
        ({"holdout_every": 5, "max_holdout": 0}, "buffer.max_holdout"),
        ({"holdout_every": 5, "max_samples": 10, "max_holdout": 10}, "buffer.max_holdout"),
        ({"descriptor_size": 0}, "buffer.descriptor_size"),
        ({"holdout_every": True}, "buffer.holdout_every must be an integer"),
    ],
)
def test_bad_config_raises_config_error(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ReplayBufferConfig(**changes)


def test_bad_samples_raise_clear_value_errors():
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    panoptic = np.zeros((HEIGHT, WIDTH), np.int32)
    with pytest.raises(
        ValueError, match=re.escape("image must be an H x W x 3 RGB array, got shape (24, 40)")
    ):
        BufferSample(image[..., 0], panoptic, 0, "bag")
    with pytest.raises(ValueError, match="panoptic is 24 x 39 but the image is 24 x 40"):
        BufferSample(image, panoptic[:, :-1], 0, "bag")
    with pytest.raises(ValueError, match="image must be uint8, got float32"):
        BufferSample(image.astype(np.float32), panoptic, 0, "bag")
    with pytest.raises(ValueError, match="panoptic must be int32"):
        BufferSample(image, panoptic.astype(np.int64), 0, "bag")
    with pytest.raises(ValueError, match="panoptic ids must lie in"):
        BufferSample(image, panoptic - 1, 0, "bag")
    with pytest.raises(ValueError, match="stamp_ns must be >= 0"):
        BufferSample(image, panoptic, -1, "bag")
