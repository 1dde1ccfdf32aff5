"""Atomic writes: the target is the old or the new content, never a mix; leftovers are swept."""

from __future__ import annotations

import json

import pytest

from banking77_ft.io import atomic_dir, atomic_path, write_json


def test_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "m.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text('{"a": 2, "half')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_failed_folder_write_keeps_the_previous_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "weights").write_text("new")
            raise RuntimeError("killed")
    assert (target / "weights").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")
    assert (target / "weights").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_leftovers_of_a_killed_write_are_swept(tmp_path):
    (tmp_path / ".model.abc123.tmp").mkdir()
    (tmp_path / ".m.json.xyz.tmp").write_text("partial")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "x").write_text("1")
    write_json(tmp_path / "m.json", {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "model"]


def test_json_is_deterministic(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
