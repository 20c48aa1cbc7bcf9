"""A real forgetting-budget run on the concept world through the job system: the built-in model, the
real engine child, a budget trial as an ordinary job, WiSE-FT mixes as candidates, budget.json."""
from __future__ import annotations

import json

import pytest

from ldifs_engine import budget as B
from ldifs_engine.spec import RunSpec
from tasks import api
from tasks.budget import group_dir
from tasks.settings import get_settings

pytestmark = pytest.mark.slow

SPEC = {"name": "real budget", "backbone": "concept-clip-tiny",
        "data": {"target": "quadrant", "controls": ["shape", "colour"], "max_eval_samples": 48,
                 "max_train_samples": 96},
        "method": {"name": "ldifs", "head_init": "lp", "params": {"alpha": 1.0}},
        "optim": {"steps": 6, "batch_size": 16, "lr": 1e-3, "warmup_steps": 1, "checkpoint_every": 50},
        "eval": {"linear_probe": False, "ece": False, "curve_points": 3},
        # only WiSE-FT mixes are searched (one fine-tune); margin 0: it stops early once over and rising
        "budget": {"max_forgetting_points": 0.5, "search": "none", "early_stop_margin_points": 0}}


def test_a_budget_run_on_the_concept_world_through_the_job_system(immediate, monkeypatch):
    monkeypatch.delenv("LDIFS_ENGINE_CMD", raising=False)  # the real engine child
    monkeypatch.setenv("LDIFS_HEARTBEAT_STALE_S", "120")  # a busy machine: torch takes a while to import
    get_settings.cache_clear()
    job_id = api.submit("alice", SPEC)
    job = api.get_job("alice", job_id)
    assert job.state == "DONE", job.message
    out = api.budget_results("alice", job.group)
    assert out["complete"] and [t["id"] for t in out["trials"]] == [job_id]
    doc = json.loads((group_dir(get_settings(), job.group) / "budget.json").read_text())
    assert B.budget_problems(doc) == [] and doc == out["document"]
    results = api.get_results("alice", job_id)
    # the engine's early stop follows its rule on the run's own curve points
    curves, before = results["curves"], {k: d["before"]["zs_acc"] for k, d in results["datasets"].items()}
    history = [B.forgetting_points("mean_zs_controls", *B.deltas_now(
        before, {k: v[i] for k, v in curves["zs_acc"].items()}, ["shape", "colour"])) for i in range(1, len(curves["steps"]))]
    stopped = results["training"]["stopped_early"]
    spec = RunSpec.from_dict(SPEC)
    if stopped:
        assert stopped["step"] == curves["steps"][-1] < 6 and B.early_stop_reason(spec.budget, history)
        assert results["wise_ft"] is None and all(c["early_stopped"] for c in doc["candidates"])
    else:
        assert results["training"]["steps"] == 6
        assert not any(B.early_stop_reason(spec.budget, history[:i]) for i in range(2, len(history)))
        w = results["wise_ft"]
        assert w["alphas"] == list(B.DEFAULT_MIXES) and len(w["worst_delta_zs_control"]) == len(w["alphas"])
        assert [c["wise_ft_alpha"] for c in doc["candidates"]] == [None, 0.0, 0.25, 0.5, 0.75]
        assert doc["met"] and doc["recommended"]["forgetting_points"] <= 0.5  # the a = 0 end forgets nothing
    assert all(c["run"] == job_id for c in doc["candidates"])
    assert out["recommended_spec"]["method"]["params"] == results["spec"]["method"]["params"]
    assert "budget" not in out["recommended_spec"]
