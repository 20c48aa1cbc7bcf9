"""Crash-safe writes and the checkpoint layout shared by the engine and the job service."""
from __future__ import annotations

import json
import math

import pytest

from ldifs_engine import files


def test_atomic_write_replaces_whole_files_and_leaves_no_temp(tmp_path):
    p = tmp_path / "results.json"
    files.atomic_write_json(p, {"a": 1})
    files.atomic_write_json(p, {"a": 2, "ü": "ß"}, ensure_ascii=False)
    assert json.loads(p.read_text(encoding="utf-8")) == {"a": 2, "ü": "ß"}
    assert [q.name for q in tmp_path.iterdir()] == ["results.json"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path):
    p = tmp_path / "results.json"
    files.atomic_write_json(p, {"ok": True})
    with pytest.raises(ValueError):
        files.atomic_write_json(p, {"loss": math.nan})  # NaN is not JSON: refused, not written
    assert json.loads(p.read_text()) == {"ok": True}
    assert [q.name for q in tmp_path.iterdir()] == ["results.json"]


def test_only_complete_checkpoints_count_and_they_sort_by_step(tmp_path):
    root = tmp_path / "checkpoints"
    assert files.complete_checkpoints(root) == [] and files.latest_checkpoint(root) is None
    for step in (5, 40, 300):
        d = files.checkpoint_dir(root, step)
        d.mkdir(parents=True)
        (d / files.CHECKPOINT_MARKER).write_text("ok")
    (root / "step-00000900").mkdir()  # no marker: a crash mid-write
    (root / "step-00001000.tmp").mkdir()
    (root / "step-00001000.tmp" / files.CHECKPOINT_MARKER).write_text("ok")
    (root / "notes").mkdir()
    assert [files.checkpoint_step(p) for p in files.complete_checkpoints(root)] == [5, 40, 300]
    assert files.latest_checkpoint(root) == files.checkpoint_dir(root, 300)


def test_a_continual_run_resumes_from_its_latest_stage(tmp_path):
    def ckpt(root, step):
        d = files.checkpoint_dir(root, step)
        d.mkdir(parents=True)
        (d / files.CHECKPOINT_MARKER).write_text("ok")
        return d

    assert files.latest_run_checkpoint(tmp_path) is None
    plain = ckpt(tmp_path / "checkpoints", 50)
    assert files.latest_run_checkpoint(tmp_path) == plain
    ckpt(tmp_path / "stages" / "01" / "checkpoints", 200)
    newest = ckpt(tmp_path / "stages" / "02" / "checkpoints", 50)
    (tmp_path / "stages" / "03" / "checkpoints").mkdir(parents=True)  # started, nothing saved yet
    assert files.latest_run_checkpoint(tmp_path) == newest
