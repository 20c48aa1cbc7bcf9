"""The training loop: exact resume, stop requests, divergence, OOM back-off, schedule."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from ldifs_engine.checkpoint import complete_checkpoints
from ldifs_engine.errors import Cancelled, Diverged, OutOfMemory
from ldifs_engine.events import read_events
from ldifs_engine.launch import run
from ldifs_engine.results import results_problems
from ldifs_engine.spec import RunSpec
from ldifs_engine.train import warmup_cosine

from .helpers import tiny_spec


def _spec(**over):
    return RunSpec.from_dict(tiny_spec(**{"eval.linear_probe": False, **over}))


def _losses(workdir):
    return [e["loss"] for e in read_events(workdir / "events.jsonl") if e["type"] == "step"]


def test_resume_equals_uninterrupted_run(tmp_path):
    spec = _spec()
    a = run(spec, tmp_path / "a", cache=None)
    calls = {"n": 0}

    def stop_after_third_step():
        calls["n"] += 1
        return calls["n"] > 3  # checked before each update: 3 updates, then stop

    with pytest.raises(Cancelled):
        run(spec, tmp_path / "b", should_stop=stop_after_third_step)
    ckpts = complete_checkpoints(tmp_path / "b" / "checkpoints")
    assert ckpts[-1].name == "step-00000003"
    b = run(spec, tmp_path / "b", resume=True)
    assert b["training"]["resumed_from"] == 3
    la, lb = _losses(tmp_path / "a"), _losses(tmp_path / "b")
    assert len(la) == 6 and len(lb) == 6
    assert la == pytest.approx(lb, abs=1e-6)
    wa = load_file(tmp_path / "a" / "final" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "final" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
    assert a["curves"] == b["curves"]
    assert results_problems(b) == []


def test_stop_file_checkpoints_and_raises(tmp_path):
    spec = _spec()
    wd = tmp_path / "run"
    wd.mkdir()
    (wd / "STOP").write_text("")
    with pytest.raises(Cancelled):
        run(spec, wd)
    events = read_events(wd / "events.jsonl")
    stopped = [e for e in events if e["type"] == "stopped"]
    assert stopped and stopped[0]["checkpoint"] == "checkpoints/step-00000000"
    assert not any(e["type"] == "error" for e in events)  # a stop is not a failure


def test_nan_loss_raises_diverged_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from ldifs_engine.methods.ldifs import LDIFS

    spec = _spec(**{"optim.checkpoint_every": 2})
    real = LDIFS.loss
    count = {"n": 0}

    def flaky(self, st, x, y, gen=None):
        count["n"] += 1
        task, reg = real(self, st, x, y, gen)
        return (task * float("nan"), reg) if count["n"] == 5 else (task, reg)  # call 1 is the sanity step

    monkeypatch.setattr(LDIFS, "loss", flaky)
    with pytest.raises(Diverged, match="step 4"):
        run(spec, tmp_path / "r")
    assert complete_checkpoints(tmp_path / "r" / "checkpoints")[-1].name == "step-00000002"
    assert not (tmp_path / "r" / "results.json").exists()


def test_oom_backoff_halves_micro_batch_and_keeps_effective_batch(tmp_path):
    seen = []

    def fault(step, micro):
        seen.append(micro)
        if micro > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    r = run(_spec(), tmp_path / "r", fault_hook=fault)
    assert [b["micro_batch"] for b in r["training"]["backoffs"]] == [8, 4]
    assert r["training"]["micro_batch"] == 4 and r["training"]["accum"] == 4
    assert r["training"]["batch_size"] == 16
    kinds = [e["type"] for e in read_events(tmp_path / "r" / "events.jsonl")]
    assert kinds.count("oom_backoff") == 2


def test_oom_at_micro_batch_one_gives_up(tmp_path):
    def always(step, micro):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(OutOfMemory, match="micro-batch 1"):
        run(_spec(), tmp_path / "r", fault_hook=always)


def test_other_errors_are_not_retried(tmp_path):
    calls = []

    def boom(step, micro):
        calls.append(micro)
        raise ValueError("not an OOM")

    with pytest.raises(ValueError):
        run(_spec(), tmp_path / "r", fault_hook=boom)
    assert calls == [16]


def test_warmup_then_cosine():
    assert warmup_cosine(0, 4, 10) == pytest.approx(0.25)
    assert warmup_cosine(3, 4, 10) == pytest.approx(1.0)
    assert warmup_cosine(4, 4, 10) == pytest.approx(1.0)
    assert warmup_cosine(7, 4, 10) == pytest.approx(0.5)
    assert warmup_cosine(10, 4, 10) == pytest.approx(0.0)


def test_results_contract_and_before_cache(tmp_path, monkeypatch):
    from ldifs_engine.cache import DiskStore

    cache = DiskStore(tmp_path / "cache")
    spec = RunSpec.from_dict(tiny_spec(**{"eval.wise_ft_alphas": [0.0, 1.0]}))
    r = run(spec, tmp_path / "r1", cache=cache)
    assert results_problems(r) == []
    on_disk = json.loads((tmp_path / "r1" / "results.json").read_text())
    assert on_disk["schema"] == "ldifs.results/1" and set(on_disk["datasets"]) == {"quadrant", "colour"}
    assert on_disk["datasets"]["colour"]["role"] == "control"
    assert on_disk["curves"]["steps"] == [0, 3, 6]
    # WiSE-FT endpoints: alpha 0 is the pre-trained model, alpha 1 the fine-tuned one.
    assert r["wise_ft"]["target_head_acc"][0] == pytest.approx(r["target_head_acc"]["before"])
    assert r["wise_ft"]["target_head_acc"][-1] == pytest.approx(r["target_head_acc"]["after"])
    assert r["wise_ft"]["mean_delta_zs_controls"][0] == pytest.approx(0.0, abs=1e-9)
    # A second run on the same backbone and datasets must not recompute the "before" side.
    from ldifs_engine import evaluate

    def no_recompute(*a, **k):
        raise AssertionError("before side recomputed")

    monkeypatch.setattr(evaluate, "evaluate_model", no_recompute)
    r2 = run(spec.replace(**{"method.name": "ce", "method.params": {}}), tmp_path / "r2", cache=cache)
    assert r2["datasets"]["colour"]["before"] == r["datasets"]["colour"]["before"]
    logs = [e["message"] for e in read_events(tmp_path / "r2" / "events.jsonl") if e["type"] == "log"]
    assert "before-side: 2 of 2 datasets served from cache" in logs


def test_lp_init_head_is_fitted_on_the_training_split_once_and_ignores_eval_settings(tmp_path, monkeypatch):
    """LP-FT: the starting head is a probe of the pre-trained features on the run's training split —
    the same whether or not the report's probe runs — and it is cached like the rest of the before side."""
    from ldifs_engine import evaluate
    from ldifs_engine.cache import DiskStore

    calls = []
    real_fit = evaluate.fit_linear_probe

    def spy(feats, labels, num_classes, **kw):
        calls.append(len(feats))
        return real_fit(feats, labels, num_classes, **kw)

    monkeypatch.setattr(evaluate, "fit_linear_probe", spy)
    cache = DiskStore(tmp_path / "cache")
    base = {"method.name": "ce", "method.params": {}, "method.head_init": "lp", "optim.steps": 2}
    a = run(_spec(**base), tmp_path / "a", cache=cache)
    assert len(calls) == 1 and calls[0] > 64  # the whole training split, not the report's capped probe set
    init_fits = calls[0]
    calls.clear()
    b = run(RunSpec.from_dict(tiny_spec(**base, **{"eval.linear_probe": True})), tmp_path / "b", cache=cache)
    assert init_fits not in calls and calls and max(calls) <= 64  # only the report's probes; the head came from cache
    assert b["target_head_acc"]["before"] == a["target_head_acc"]["before"]
