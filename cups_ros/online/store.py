"""The versioned model store: where continued self-training publishes models and the perception node
finds the one to serve.

Why it is built this way: the perception node swaps models live, so what it serves must always be a
complete, verified model, whatever happens to the process that writes it (killed mid-export, power
cut, a corrupt candidate). So a version is built entirely in a hidden temporary folder (model file,
ONNX export, optional TensorRT engine, each checked, the model file loaded back and compared with
the network), fsynced, and only then renamed to ``versions/vNNNNNN`` (atomic on one file system);
the ``current.json`` pointer is replaced atomically only after that. A reader therefore sees either
the old pointer or the new one, and either names a complete folder. Layout::

    root/.lock                  flock of the writers (publish, rollback, pruning, rejections)
    root/current.json           {"version", "model", "onnx", "engine", "promoted_at", "scores", "previous"}
    root/history.jsonl          one JSON line per promotion, rejection, rollback, fallback, cleanup
    root/versions/v000001/      model.pt, model.onnx (+ model.onnx.data), engine files, info.json
    root/versions/.tmp-<uuid>/  a version being built (removed on the next open if its writer died)

A missing or corrupt pointer, or one naming a missing or bad version, falls back to the newest
complete version whose model file loads (never one marked bad by a rollback) and is rewritten.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from cups_ros.core.config import ConfigError
from cups_ros.core.files import write_json_atomic
from cups_ros.features.cache import file_sha256
from cups_ros.model.model_file import ModelFileError, load_model, model_metadata, save_model
from cups_ros.model.network import PanopticTrackingNet
from cups_ros.runtime.engines import BACKENDS
from cups_ros.runtime.export import check_onnx_file, export_onnx, state_dict_sha256
from cups_ros.runtime.tensorrt import TensorRTSettings, TensorRTUnavailableError, ensure_engine

VERSION_FORMAT = "cups_ros.model_store_version/1"
POINTER_FORMAT = "cups_ros.model_store_pointer/1"
MODEL_FILE = "model.pt"
ONNX_FILE = "model.onnx"
INFO_FILE = "info.json"
POINTER_FILE = "current.json"
HISTORY_FILE = "history.jsonl"
LOCK_FILE = ".lock"
VERSIONS_FOLDER = "versions"
TEMPORARY_PREFIX = ".tmp-"
DELETING_PREFIX = ".del-"
INTERRUPTED_REASON = "never promoted: its publish was interrupted before the pointer moved"

_VERSION_NAME = re.compile(r"^v(\d{6,})$")
_log = logging.getLogger(__name__)
_tensorrt_warned = False


@dataclasses.dataclass(frozen=True)
class ModelStoreConfig:
    """What a published version contains and how many versions are kept."""

    export_onnx: bool = True
    """Export ``model.onnx`` (needed by the onnxruntime and TensorRT backends)."""
    build_tensorrt: bool = False
    """Also build the TensorRT engine; skipped with a warning (noted in info.json) without TensorRT."""
    tensorrt_fp16: bool = True
    keep_versions: int = 5
    """Newest versions kept; older ones are deleted, never the current one nor the previous good one."""

    def __post_init__(self) -> None:
        for name in ("export_onnx", "build_tensorrt", "tensorrt_fp16"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not a bool")
        if isinstance(self.keep_versions, bool) or not isinstance(self.keep_versions, int):
            raise ConfigError(f"keep_versions: {self.keep_versions!r} is not an int")
        if self.keep_versions < 1:
            raise ConfigError(f"keep_versions: must be >= 1, got {self.keep_versions}")
        if self.build_tensorrt and not self.export_onnx:
            raise ConfigError(
                "build_tensorrt: a TensorRT engine is built from the ONNX file; set export_onnx"
            )


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    """One complete version folder."""

    version: int
    folder: Path
    model_path: Path
    onnx_path: Path | None
    engine_path: Path | None
    info: dict[str, Any] = dataclasses.field(compare=False, repr=False)

    @property
    def bad(self) -> str | None:
        """The reason it was rolled back (or never promoted); None for a good version."""
        reason = self.info.get("bad")
        return str(reason) if reason else None

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self.info.get("metadata") or {})


def version_name(number: int) -> str:
    return f"v{number:06d}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _scores(metadata: dict[str, Any]) -> dict[str, Any]:
    """The gate scores for the pointer: metadata["scores"] when a dict, else the numeric entries."""
    scores = metadata.get("scores")
    if isinstance(scores, dict):
        return dict(scores)
    return {
        key: value
        for key, value in metadata.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def _json_safe(metadata: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        return json.loads(json.dumps(metadata, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"metadata must be JSON-serialisable (finite numbers, strings, ...): {error}"
        ) from None


def _fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_folder(folder: Path) -> None:
    """Renamed out of view first, so a reader never finds a half-deleted version."""
    hidden = folder.with_name(f"{DELETING_PREFIX}{folder.name}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, hidden)
    except FileNotFoundError:
        return
    shutil.rmtree(hidden, ignore_errors=True)


class ModelStore:
    """Versions of the served model under ``root`` with an atomically moved ``current`` pointer.

    Writers (publish, publish_file, rollback, record_rejection) hold ``root/.lock``; readers (the
    perception node: current, serving_path, versions) take no lock and only ever see complete versions.
    """

    def __init__(self, root: str | Path, config: ModelStoreConfig | None = None) -> None:
        self.root = Path(root).absolute()
        self.config = config or ModelStoreConfig()
        self.versions_folder = self.root / VERSIONS_FOLDER
        self.pointer_path = self.root / POINTER_FILE
        self.history_path = self.root / HISTORY_FILE
        self._lock_path = self.root / LOCK_FILE
        self._thread_lock = threading.RLock()
        self._lock_depth = 0
        self._lock_stream: IO[str] | None = None
        self.versions_folder.mkdir(parents=True, exist_ok=True)
        # Only when no writer is active: a temporary folder of a live writer is work in progress.
        with self._locked(blocking=False) as locked:
            if locked:
                self._recover()
            else:
                _log.debug("model store %s: a writer holds the lock; leftovers are left to it", self.root)

    # --- reading --------------------------------------------------------------------------------

    def versions(self) -> list[ModelVersion]:
        """Complete versions, oldest first (bad ones included, see ModelVersion.bad)."""
        found = []
        for number in self._version_numbers():
            version = self._read_version(number)
            if version is not None:
                found.append(version)
        return found

    def version(self, number: int) -> ModelVersion | None:
        return self._read_version(number)

    def current(self) -> ModelVersion | None:
        """The version the pointer names; on a bad pointer the newest good version (pointer rewritten)."""
        pointer, problem = self._read_pointer()
        if pointer is not None:
            version = self._read_version(pointer["version"])
            if version is None:
                problem = f"names version {pointer['version']}, which is missing or incomplete"
            elif version.bad:
                problem = f"names version {version.version}, which is marked bad ({version.bad})"
            else:
                return version
        return self._fall_back(problem)

    def serving_path(self, backend: str) -> str | None:
        """The current model's file for a backend (tensorrt: its engine, else the ONNX file to build it)."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}: one of {', '.join(BACKENDS)}")
        version = self.current()
        if version is None:
            return None
        if backend == "torch":
            path = version.model_path
        elif backend == "onnxruntime":
            path = version.onnx_path
        else:
            path = version.engine_path or version.onnx_path
        return None if path is None else str(path)

    def history(self) -> list[dict[str, Any]]:
        """The history lines (a line cut short by a killed writer is skipped)."""
        try:
            lines = self.history_path.read_text().splitlines()
        except FileNotFoundError:
            return []
        events = []
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def verify_candidate(self, path: str | Path) -> None:
        """Raises ModelFileError when the file is not a loadable model file."""
        load_model(path)

    # --- writing --------------------------------------------------------------------------------

    def publish(self, network: PanopticTrackingNet, metadata: dict[str, Any]) -> ModelVersion:
        """A new complete, verified version, made current; the previous current stays the rollback target."""
        metadata = _json_safe(metadata)
        with self._locked():
            return self._publish(network, metadata, source=None)

    def publish_file(self, model_path: str | Path, metadata: dict[str, Any]) -> ModelVersion:
        """Publish an existing model file; a corrupt one raises ModelFileError, is logged and changes nothing.

        The stored model.pt is the file's network saved again with the file's metadata updated by
        ``metadata``.
        """
        model_path = Path(model_path).absolute()
        metadata = _json_safe(metadata)
        with self._locked():
            try:
                network = load_model(model_path)
            except ModelFileError as error:
                _log.error("model store %s: candidate %s rejected: %s", self.root, model_path, error)
                self._append_history(
                    {
                        "event": "rejected",
                        "reason": f"corrupt candidate: {error}",
                        "candidate": str(model_path),
                        "metadata": metadata,
                        "current": self._current_number(),
                    }
                )
                raise
            try:
                own = _json_safe(model_metadata(model_path))
            except ValueError as error:
                _log.warning("model store %s: metadata of %s dropped: %s", self.root, model_path, error)
                own = {}
            return self._publish(network, {**own, **metadata}, source=str(model_path))

    def record_rejection(self, metadata: dict[str, Any]) -> None:
        """A history line for a candidate the gate rejected (nothing else changes)."""
        metadata = _json_safe(metadata)
        with self._locked():
            self._append_history(
                {"event": "rejected", "metadata": metadata, "current": self._current_number()}
            )

    def rollback(self, reason: str) -> ModelVersion | None:
        """Current back to the previous good version; the failed one is marked bad and never served again.

        Returns the version now current, or None (and changes nothing) when there is no loadable
        good version to go back to.
        """
        with self._locked():
            failed = self.current()
            if failed is None:
                _log.error("model store %s: rollback (%s) with no current version", self.root, reason)
                self._append_history({"event": "rollback_impossible", "reason": reason, "from": None})
                return None
            pointer, _ = self._read_pointer()
            recorded = pointer.get("previous") if pointer and pointer["version"] == failed.version else None
            candidates = [recorded] if isinstance(recorded, int) and recorded < failed.version else []
            candidates += [
                version.version
                for version in reversed(self.versions())
                if version.version < failed.version and version.version not in candidates
            ]
            target = None
            for number in candidates:
                version = self._read_version(number)
                if version is not None and not version.bad and self._loads(version):
                    target = version
                    break
            if target is None:
                _log.error(
                    "model store %s: cannot roll back %s (%s): no good earlier version; it stays current",
                    self.root,
                    version_name(failed.version),
                    reason,
                )
                self._append_history(
                    {"event": "rollback_impossible", "reason": reason, "from": failed.version}
                )
                return None
            # Marked bad first: a crash before the pointer moves leaves a pointer to a bad version,
            # which current() treats like a corrupt pointer (falls back past it).
            self._mark_bad(failed, reason)
            self._write_pointer(target, event="rollback")
            self._append_history(
                {"event": "rolled_back", "from": failed.version, "to": target.version, "reason": reason}
            )
            _log.warning(
                "model store %s: rolled back %s -> %s: %s",
                self.root,
                version_name(failed.version),
                version_name(target.version),
                reason,
            )
            return self._read_version(target.version)

    # --- internals ------------------------------------------------------------------------------

    def _publish(
        self, network: PanopticTrackingNet, metadata: dict[str, Any], source: str | None
    ) -> ModelVersion:
        self._remove_leftovers()
        parent = self.current()
        number = self._next_number()
        temporary = self.versions_folder / f"{TEMPORARY_PREFIX}{uuid.uuid4().hex}"
        temporary.mkdir()
        final = self.versions_folder / version_name(number)
        start = time.perf_counter()
        try:
            info = self._build(network, metadata, temporary, number, parent, source)
            for path in temporary.iterdir():
                _fsync_path(path)
            _fsync_path(temporary)
            os.rename(temporary, final)
            _fsync_path(self.versions_folder)
        except BaseException as error:
            shutil.rmtree(temporary, ignore_errors=True)
            with contextlib.suppress(Exception):
                self._append_history(
                    {"event": "publish_failed", "version": number, "reason": repr(error), "source": source}
                )
            raise
        version = self._read_version(number)
        if version is None:  # cannot happen unless something else writes into the store
            raise RuntimeError(f"model store {self.root}: {final} is incomplete right after its rename")
        self._write_pointer(version, event="publish", previous=parent.version if parent else None)
        self._append_history(
            {
                "event": "promoted",
                "version": number,
                "previous": parent.version if parent else None,
                "scores": _scores(metadata),
                "metadata": metadata,
                "source": source,
                "engine_note": info.get("engine_note"),
            }
        )
        _log.info(
            "model store %s: published %s in %.1f s (previous %s)",
            self.root,
            final.name,
            time.perf_counter() - start,
            version_name(parent.version) if parent else "none",
        )
        self._prune()
        return version

    def _build(
        self,
        network: PanopticTrackingNet,
        metadata: dict[str, Any],
        folder: Path,
        number: int,
        parent: ModelVersion | None,
        source: str | None,
    ) -> dict[str, Any]:
        """Every file of the version inside ``folder``, each checked; info.json last."""
        model_path = folder / MODEL_FILE
        weights_sha256 = state_dict_sha256(network)
        save_model(network, model_path, {**metadata, "store_version": number})
        model_sha256 = file_sha256(model_path)
        if state_dict_sha256(load_model(model_path)) != weights_sha256:
            raise ModelFileError(f"model file {model_path} does not load back to the published weights")
        info: dict[str, Any] = {
            "format": VERSION_FORMAT,
            "version": number,
            "created_at": _now(),
            "parent_version": parent.version if parent else None,
            "metadata": metadata,
            "source": source,
            "model": MODEL_FILE,
            "model_sha256": model_sha256,
            "onnx": None,
            "engine": None,
            "engine_note": None,
        }
        if self.config.export_onnx:
            export_start = time.perf_counter()
            (onnx_path,) = export_onnx(network, folder / ONNX_FILE, source_model_sha256=model_sha256)
            check_onnx_file(onnx_path)
            info["onnx"] = onnx_path.name
            info["export_seconds"] = round(time.perf_counter() - export_start, 3)
        if self.config.build_tensorrt:
            info["engine"], info["engine_note"] = self._build_engine(folder / ONNX_FILE)
        info["files"] = sorted(path.name for path in folder.iterdir() if path.is_file())
        write_json_atomic(folder / INFO_FILE, info)
        return info

    def _build_engine(self, onnx_path: Path) -> tuple[str | None, str | None]:
        global _tensorrt_warned
        settings = TensorRTSettings(precision="fp16" if self.config.tensorrt_fp16 else "fp32")
        try:
            cached = ensure_engine(onnx_path, settings)
        except TensorRTUnavailableError as error:
            note = f"no TensorRT engine built: {error}"
            if not _tensorrt_warned:
                _log.warning("model store %s: %s (publishing ONNX only)", self.root, note)
                _tensorrt_warned = True
            return None, note
        cached.engine_path.with_name(cached.engine_path.name + ".lock").unlink(missing_ok=True)
        return cached.engine_path.name, None

    def _read_version(self, number: Any) -> ModelVersion | None:
        """The version when its folder is complete (info.json readable, every file present)."""
        if isinstance(number, bool) or not isinstance(number, int) or number < 1:
            return None
        folder = self.versions_folder / version_name(number)
        try:
            info = json.loads((folder / INFO_FILE).read_text())
        except (OSError, ValueError):
            return None
        if (
            not isinstance(info, dict)
            or info.get("format") != VERSION_FORMAT
            or info.get("version") != number
        ):
            return None
        files = info.get("files")
        if not isinstance(files, list) or MODEL_FILE not in files:
            return None
        if not all(isinstance(name, str) and (folder / name).is_file() for name in files):
            return None
        onnx, engine = info.get("onnx"), info.get("engine")
        return ModelVersion(
            version=number,
            folder=folder,
            model_path=folder / MODEL_FILE,
            onnx_path=folder / onnx if isinstance(onnx, str) else None,
            engine_path=folder / engine if isinstance(engine, str) else None,
            info=info,
        )

    def _version_numbers(self) -> list[int]:
        try:
            names = [path.name for path in self.versions_folder.iterdir() if path.is_dir()]
        except FileNotFoundError:
            return []
        return sorted(int(match.group(1)) for name in names if (match := _VERSION_NAME.match(name)))

    def _next_number(self) -> int:
        pointer, _ = self._read_pointer()
        used = [*self._version_numbers(), pointer["version"] if pointer else 0]
        return max(used, default=0) + 1

    def _read_pointer(self) -> tuple[dict[str, Any] | None, str]:
        """(pointer, "") or (None, what is wrong with it)."""
        try:
            pointer = json.loads(self.pointer_path.read_text())
        except FileNotFoundError:
            return None, "is missing"
        except (OSError, ValueError) as error:
            return None, f"is unreadable or corrupt ({error})"
        version = pointer.get("version") if isinstance(pointer, dict) else None
        if isinstance(version, bool) or not isinstance(version, int):
            return None, f"has no version number ({str(pointer)[:80]!r})"
        return pointer, ""

    def _current_number(self) -> int | None:
        version = self.current()
        return version.version if version else None

    def _write_pointer(self, version: ModelVersion, event: str, previous: int | None = -1) -> None:
        """previous: -1 for the newest good version older than ``version``."""
        if previous == -1:
            previous = self._previous_good(version.version)
        write_json_atomic(
            self.pointer_path,
            {
                "format": POINTER_FORMAT,
                "version": version.version,
                "model": str(version.model_path),
                "onnx": str(version.onnx_path) if version.onnx_path else None,
                "engine": str(version.engine_path) if version.engine_path else None,
                "promoted_at": _now(),
                "scores": _scores(version.metadata),
                "previous": previous,
                "event": event,
            },
        )

    def _previous_good(self, before: int) -> int | None:
        for version in reversed(self.versions()):
            if version.version < before and not version.bad:
                return version.version
        return None

    def _loads(self, version: ModelVersion) -> bool:
        """The model file matches its recorded hash and loads."""
        try:
            if file_sha256(version.model_path) != version.info.get("model_sha256"):
                raise ModelFileError(f"model file {version.model_path} differs from the one published")
            load_model(version.model_path)
        except (ModelFileError, OSError) as error:
            _log.warning("model store %s: %s is not usable: %s", self.root, version.folder.name, error)
            return False
        return True

    def _fall_back(self, problem: str) -> ModelVersion | None:
        candidates = [version for version in reversed(self.versions()) if not version.bad]
        if not candidates:
            if self._version_numbers() or self.pointer_path.exists():
                _log.warning(
                    "model store %s: pointer %s and no good version to fall back to", self.root, problem
                )
            return None
        chosen = next((version for version in candidates if self._loads(version)), None)
        if chosen is None:
            _log.warning("model store %s: pointer %s and no good version loads", self.root, problem)
            return None
        _log.warning(
            "model store %s: pointer %s; falling back to %s", self.root, problem, version_name(chosen.version)
        )
        with self._locked(blocking=False) as locked:
            if not locked:  # a writer is at work and moves the pointer itself
                return chosen
            pointer, _ = self._read_pointer()  # re-read: a writer may have fixed it meanwhile
            if pointer is not None:
                version = self._read_version(pointer["version"])
                if version is not None and not version.bad:
                    return version
            self._write_pointer(chosen, event="fallback")
            self._append_history(
                {"event": "fallback", "version": chosen.version, "reason": f"pointer {problem}"}
            )
        return chosen

    def _mark_bad(self, version: ModelVersion, reason: str) -> None:
        info = {**version.info, "bad": reason, "bad_at": _now()}
        write_json_atomic(version.folder / INFO_FILE, info)

    def _remove_leftovers(self) -> list[str]:
        """Temporary folders of dead writers (held lock: no writer is alive)."""
        removed = []
        for path in sorted(self.versions_folder.iterdir()):
            if path.name.startswith(TEMPORARY_PREFIX):
                removed.append(path.name)
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(DELETING_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
        for path in self.root.glob(f".{POINTER_FILE}.*.tmp"):  # atomic_path's, of a killed pointer write
            shutil.rmtree(path, ignore_errors=True)
        if removed:
            _log.warning(
                "model store %s: removed %d unfinished version folder(s) of an interrupted publish: %s",
                self.root,
                len(removed),
                ", ".join(removed),
            )
            self._append_history({"event": "cleanup", "removed": removed})
        return removed

    def _recover(self) -> None:
        """At open, without a live writer: leftovers removed; versions newer than the pointer marked."""
        self._remove_leftovers()
        pointer, _ = self._read_pointer()
        if pointer is None or self._read_version(pointer["version"]) is None:
            return
        for version in self.versions():
            if version.version > pointer["version"] and not version.bad:
                # Renamed into place but the pointer never moved: the publish was killed in between.
                self._mark_bad(version, INTERRUPTED_REASON)
                self._append_history(
                    {"event": "orphan", "version": version.version, "reason": INTERRUPTED_REASON}
                )
                _log.warning("model store %s: %s %s", self.root, version.folder.name, INTERRUPTED_REASON)

    def _prune(self) -> None:
        versions = self.versions()
        pointer, _ = self._read_pointer()
        keep = {version.version for version in versions[-self.config.keep_versions :]}
        if pointer is not None:
            keep.add(pointer["version"])
            if isinstance(pointer.get("previous"), int):
                keep.add(pointer["previous"])
        for version in versions:
            if version.version not in keep:
                _remove_folder(version.folder)
                _log.info("model store %s: removed old version %s", self.root, version.folder.name)

    def _append_history(self, event: dict[str, Any]) -> None:
        """One line in one write call, then fsynced (a killed write leaves at most one cut line)."""
        line = json.dumps({"time": _now(), **event}, sort_keys=True, default=str) + "\n"
        descriptor = os.open(self.history_path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = "\n" + line  # the last line was cut short: start a fresh one
            os.write(descriptor, line.encode())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    @contextlib.contextmanager
    def _locked(self, blocking: bool = True) -> Iterator[bool]:
        """The writers' lock (re-entrant in this object); yields False when not blocking and it is taken."""
        if not self._thread_lock.acquire(blocking=blocking):
            yield False
            return
        try:
            if self._lock_depth == 0:
                stream = self._acquire_file_lock(blocking)
                if stream is None:
                    yield False
                    return
                self._lock_stream = stream
            self._lock_depth += 1
            try:
                yield True
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0 and self._lock_stream is not None:
                    fcntl.flock(self._lock_stream, fcntl.LOCK_UN)
                    self._lock_stream.close()
                    self._lock_stream = None
        finally:
            self._thread_lock.release()

    def _acquire_file_lock(self, blocking: bool) -> IO[str] | None:
        try:
            stream = open(self._lock_path, "a")  # noqa: SIM115 (held across calls, closed on release)
        except OSError as error:
            if blocking:
                raise
            _log.debug("model store %s: cannot open the lock file: %s", self.root, error)
            return None
        try:
            fcntl.flock(stream, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            stream.close()
            return None
        except BaseException:
            stream.close()
            raise
        return stream
