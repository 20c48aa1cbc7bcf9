"""A full disk is reported as such (where, how much is free), leaves no half checkpoint, and the run
resumes once space is free (issue 10, item 7)."""
from __future__ import annotations

import errno

import pytest
import torch

from ldifs_engine.checkpoint import complete_checkpoints
from ldifs_engine.errors import DiskFull
from ldifs_engine.launch import run
from ldifs_engine.spec import RunSpec

from .helpers import tiny_spec


def _fill_disk_after(monkeypatch, n_ok: int):
    """torch.save writes its first ``n_ok`` files, then every write fails as a full disk does."""
    real = torch.save
    calls = {"n": 0}

    def save(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] > n_ok:
            if hasattr(f, "write"):
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


def test_full_disk_is_named_and_the_run_resumes_after(tmp_path, monkeypatch):
    spec = RunSpec.from_dict(tiny_spec(**{"eval.linear_probe": False, "optim.checkpoint_every": 1}))
    work = tmp_path / "run"
    _fill_disk_after(monkeypatch, 3)  # checkpoints 0, 1, 2 fit; 3 does not
    with pytest.raises(DiskFull) as e:
        run(spec, work)
    msg = str(e.value)
    assert msg.startswith("disk full") and str(work / "checkpoints") in msg and "MB free" in msg
    assert not list((work / "checkpoints").glob("*.tmp"))  # nothing half-written is left
    assert complete_checkpoints(work / "checkpoints")[-1].name == "step-00000002"
    monkeypatch.undo()  # space is free again
    res = run(spec, work, resume=True)
    assert res["training"]["resumed_from"] == 2


def test_cli_exit_code_and_one_line(tmp_path, monkeypatch, capsys):
    import yaml

    from ldifs_engine.__main__ import main

    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(**{"eval.linear_probe": False})), encoding="utf-8")
    _fill_disk_after(monkeypatch, 0)
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 7
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: disk full") and "Traceback" not in "\n".join(err)
