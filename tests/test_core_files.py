"""Atomic writes: a failed write leaves the previous file whole and no temporary litter."""

from __future__ import annotations

import pytest

from cups_ros.core.files import atomic_path, write_json_atomic, write_text_atomic


def test_failed_write_keeps_previous_content(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic(target, {"pq": 0.5})
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        temporary.write_text('{"pq": 0.')
        raise RuntimeError("killed mid-write")
    assert target.read_text() == '{\n  "pq": 0.5\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_folders_are_replaced_whole(tmp_path):
    target = tmp_path / "bag"
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "a.txt").write_text("first")
    with atomic_path(target) as temporary:
        temporary.mkdir()
        (temporary / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]


def test_writing_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "x"):
        pass
    write_text_atomic(tmp_path / "deep" / "er" / "x.txt", "ok")
    assert (tmp_path / "deep" / "er" / "x.txt").read_text() == "ok"
