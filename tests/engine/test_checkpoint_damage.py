"""A damaged newest checkpoint is skipped (named) and the run resumes from the one before (issue 10, item 6)."""
from __future__ import annotations

import json
import os
import shutil
import struct

import pytest

from ldifs_engine.checkpoint import complete_checkpoints, load_checkpoint
from ldifs_engine.errors import Cancelled, InvalidCheckpoint
from ldifs_engine.events import read_events
from ldifs_engine.launch import run
from ldifs_engine.spec import RunSpec

from .helpers import tiny_spec


def _truncate(ckpt):
    p = ckpt / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _random_bytes(ckpt):
    """Keep the header (a valid-looking file), overwrite every tensor byte with noise."""
    p = ckpt / "model.safetensors"
    blob = p.read_bytes()
    n = 8 + struct.unpack("<Q", blob[:8])[0]
    p.write_bytes(blob[:n] + os.urandom(len(blob) - n))


def _bad_state(ckpt):
    (ckpt / "state.json").write_text('{"step": 3, "spec_', encoding="utf-8")


def _bad_optim(ckpt):
    (ckpt / "optim.pt").write_bytes(b"PK\x03\x04 not really a zip")


@pytest.fixture(scope="module")
def stopped(tmp_path_factory):
    """A run stopped after 3 updates with checkpoints at steps 2 and 3."""
    spec = RunSpec.from_dict(tiny_spec(**{"eval.linear_probe": False, "optim.checkpoint_every": 1}))
    work = tmp_path_factory.mktemp("stopped") / "run"
    calls = {"n": 0}

    def stop_after_third():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(Cancelled):
        run(spec, work, should_stop=stop_after_third)
    assert [c.name for c in complete_checkpoints(work / "checkpoints")][-2:] == ["step-00000002", "step-00000003"]
    return spec, work


@pytest.mark.parametrize("damage, part", [(_truncate, "model.safetensors"), (_random_bytes, "model.safetensors"),
                                          (_bad_state, "state.json"), (_bad_optim, "optim.pt")])
def test_damaged_newest_checkpoint_is_skipped(stopped, tmp_path, damage, part):
    spec, src = stopped
    work = tmp_path / "run"
    shutil.copytree(src, work)
    newest = complete_checkpoints(work / "checkpoints")[-1]
    damage(newest)
    with pytest.raises(InvalidCheckpoint, match=part):  # named, never a raw JSONDecodeError / SafetensorError
        load_checkpoint(newest, spec_hash=spec.spec_hash())
    res = run(spec, work, resume=True)
    assert res["training"]["resumed_from"] == 2
    skipped = [e for e in read_events(work / "events.jsonl") if e["type"] == "checkpoint_skipped"]
    assert skipped and skipped[-1]["checkpoint"] == "step-00000003" and part in skipped[-1]["reason"]
    assert not any("nan" in json.dumps(e).lower() for e in read_events(work / "events.jsonl")
                   if e["type"] in ("error", "log") and e.get("level") == "error")


def test_every_checkpoint_damaged_is_one_named_error(stopped, tmp_path):
    spec, src = stopped
    work = tmp_path / "run"
    shutil.copytree(src, work)
    for c in complete_checkpoints(work / "checkpoints"):
        _bad_state(c)
    with pytest.raises(InvalidCheckpoint, match="no checkpoint of this run can be resumed"):
        run(spec, work, resume=True)
