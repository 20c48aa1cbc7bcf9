"""The difference between two runs on the same test images (tasks.differences, tasks.api.compare_runs)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ldifs_engine.intervals import PER_IMAGE, PER_IMAGE_SCHEMA, to_bits
from tasks import api
from tasks.differences import run_difference

from .conftest import spec

N = 300
NOTE = "class prompts are indistinguishable to this model"


def _run(rng, before: dict, forget: dict, *, target_after: float, seed: int = 0, cap=None):
    """results.json + per_image.json of one run: ``before`` per dataset (shared vectors), each control
    loses the share ``forget`` of the images it had right; quadrant's zero-shot is not measurable."""
    datasets, vectors = {}, {}
    for key, b in before.items():
        a = b.copy()
        right = np.flatnonzero(b)
        a[rng.choice(right, int(forget.get(key, 0) * len(right)), replace=False)] = False
        zs_ok = key != "quadrant"
        datasets[key] = {"role": "target" if key == "quadrant" else "control", "title": key.title(),
                         "zs_note": None if zs_ok else NOTE,
                         "before": {"zs_acc": float(b.mean()) if zs_ok else None, "lp_acc": float(b.mean())},
                         "after": {"zs_acc": float(a.mean()) if zs_ok else None, "lp_acc": float(a.mean())}}
        vectors[key] = {"before": {"zs": to_bits(b) if zs_ok else None, "lp": to_bits(b)},
                        "after": {"zs": to_bits(a) if zs_ok else None, "lp": to_bits(a)}}
    head = rng.random(N) < target_after
    results = {"target": "quadrant", "datasets": datasets,
               "spec": {"seed": seed, "data": {"max_eval_samples": cap}},
               "target_head_acc": {"before": 0.4, "after": float(head.mean())}}
    per_image = {"schema": PER_IMAGE_SCHEMA, "datasets": vectors,
                 "target_head": {"before": to_bits(rng.random(N) < 0.4), "after": to_bits(head)}}
    return results, per_image


def _pair(**kw_b):
    rng = np.random.default_rng(5)
    before = {k: rng.random(N) < p for k, p in (("quadrant", 0.4), ("shape", 0.95), ("colour", 0.99))}
    ce = _run(rng, before, {"shape": 0.45, "colour": 0.40}, target_after=0.99)
    ldifs = _run(rng, before, {"shape": 0.15, "colour": 0.01}, target_after=0.99, **kw_b)
    return ldifs, ce


def test_ldifs_minus_ce_on_the_same_images_has_a_tight_interval():
    (a, pa), (b, pb) = _pair()
    d = run_difference(a, pa, b, pb)
    assert d["schema"] == "ldifs.difference/1" and d["note"] is None
    for key in ("shape", "colour"):
        cell = d["datasets"][key]["zs"]
        da = a["datasets"][key]["after"]["zs_acc"] - a["datasets"][key]["before"]["zs_acc"]
        db = b["datasets"][key]["after"]["zs_acc"] - b["datasets"][key]["before"]["zs_acc"]
        assert cell["diff"] == pytest.approx(da - db) and cell["n"] == N
        assert cell["ci"][0] <= cell["diff"] <= cell["ci"][1] and cell["ci"][0] > 0  # LDIFS clearly forgot less
    mean = d["controls"]["zs"]
    assert mean["datasets"] == ["shape", "colour"]  # the target is never a control
    assert mean["diff"] == pytest.approx((d["datasets"]["shape"]["zs"]["diff"] + d["datasets"]["colour"]["zs"]["diff"]) / 2)
    assert d["datasets"]["quadrant"]["zs"] is None and d["datasets"]["quadrant"]["lp"] is not None  # unmeasurable: no number
    th = d["target_head"]
    assert th["ci"][0] <= 0.0 <= th["ci"][1]  # both learned the target equally well: within noise
    assert run_difference(a, pa, b, pb) == d  # seeded


def test_runs_on_different_test_images_are_not_paired():
    (a, pa), (b, pb) = _pair(cap=100, seed=1)
    d = run_difference(a, pa, b, pb)
    assert "not scored on the same test images" in d["note"] and d["datasets"] == {} and d["target_head"] is None
    (a, pa), (b, pb) = _pair()
    a["spec"]["data"]["max_eval_samples"] = b["spec"]["data"]["max_eval_samples"] = 100
    a["spec"]["seed"] = 1
    assert "own seed" in run_difference(a, pa, b, pb)["note"]
    a["spec"]["seed"] = 0  # same cap, same seed: the same images again
    assert "per-image" in run_difference(a, None, b, pb)["note"]
    pa["datasets"]["shape"]["after"]["zs"] = pa["datasets"]["shape"]["after"]["zs"][:-1]  # a damaged file
    d = run_difference(a, pa, b, pb)
    assert d["datasets"]["shape"]["zs"] is None and d["controls"]["zs"]["datasets"] == ["colour"]


def test_compare_runs_reads_both_runs_for_their_owner_only(immediate):
    from .test_jobs import run_dir

    (a, pa), (b, pb) = _pair()
    ids = []
    for res, pi in ((a, pa), (b, pb)):
        jid = api.submit("alice", spec(steps=2))
        (run_dir(jid) / "results.json").write_text(json.dumps(res))
        (run_dir(jid) / PER_IMAGE).write_text(json.dumps(pi))
        ids.append(jid)
    assert api.get_per_image("alice", ids[0]) == pa
    d = api.compare_runs("alice", *ids)
    assert (d["a"], d["b"]) == tuple(ids) and d["controls"]["zs"]["ci"][0] > 0
    for call in (lambda: api.get_per_image("bob", ids[0]), lambda: api.compare_runs("bob", *ids),
                 lambda: api.compare_runs("alice", ids[0], "0123456789abcdef0123456789abcdef")):
        with pytest.raises(api.JobNotFound):
            call()
    (run_dir(ids[1]) / PER_IMAGE).unlink()  # a run from before intervals existed
    assert api.get_per_image("alice", ids[1]) is None
    assert "per-image" in api.compare_runs("alice", *ids)["note"]
