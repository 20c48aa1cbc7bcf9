"""The real engine under a real consumer: SIGKILL mid-run, restart, resume, same result.

The fake-engine tests cover the state machine in detail; this one proves the whole chain with the
engine child that users run (`python -m ldifs_engine run`), on CPU, with the tiny random ViT.
"""
from __future__ import annotations

import json
import os
import signal

import pytest
from safetensors.torch import load_file

from ldifs_engine.launch import run
from ldifs_engine.spec import RunSpec
from tasks import api
from tasks.settings import get_settings
from tasks.store import DONE

from .conftest import wait_for
from .test_consumer_process import consumers, job, record  # noqa: F401 — fixture re-used

pytestmark = pytest.mark.slow

SPEC = {
    "name": "real engine kill test",
    "backbone": "tiny-vit-random",
    "data": {"target": "quadrant", "controls": ["colour"], "max_eval_samples": 64, "max_train_samples": 256},
    "method": {"name": "ldifs", "params": {"alpha": 10.0}},
    "optim": {"steps": 40, "batch_size": 16, "lr": 1e-4, "warmup_steps": 4, "checkpoint_every": 5},
    "eval": {"linear_probe": False, "curve_points": 2},
}


def test_sigkill_consumer_and_engine_then_resume_matches_uninterrupted(consumers, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.delenv("LDIFS_ENGINE_CMD", raising=False)  # the real engine
    monkeypatch.setenv("LDIFS_HEARTBEAT_STALE_S", "30")
    get_settings.cache_clear()
    job_id = api.submit("alice", SPEC)
    first = consumers()
    wait_for(lambda: job(job_id).checkpoint_step is not None and job(job_id).checkpoint_step >= 5
             and job(job_id).step >= 7, timeout=240, every=0.05)
    engine = record(job_id)
    first.proc.kill()  # power loss: the consumer and its engine die at once
    first.proc.wait()
    os.killpg(engine["pgid"], signal.SIGKILL)
    assert job(job_id).state == "RUNNING"

    consumers()
    wait_for(lambda: job(job_id).state in (DONE, "FAILED"), timeout=300, every=0.2)
    v = job(job_id)
    assert v.state == DONE, v.message
    assert v.attempts == 2
    run_dir = get_settings().runs_dir / job_id
    starts = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()
              if '"type": "start"' in line]
    assert starts[0]["resumed_from"] is None and starts[-1]["resumed_from"] >= 5

    reference = run(RunSpec.from_dict(SPEC), tmp_path / "reference")
    resumed = api.get_results("alice", job_id)
    for key, value in reference["target_head_acc"].items():  # values and their [lo, hi] intervals
        assert resumed["target_head_acc"][key] == pytest.approx(value, abs=1e-6), key
    for key, d in reference["datasets"].items():
        assert resumed["datasets"][key]["after"]["zs_acc"] == pytest.approx(d["after"]["zs_acc"], abs=1e-6)
    wa = load_file(run_dir / "final" / "model.safetensors")
    wb = load_file(tmp_path / "reference" / "final" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
