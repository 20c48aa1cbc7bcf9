"""Forgetting budget (ldifs_engine/budget.py): the spec block, the search on a fake trial function with a
known gain/forgetting curve, the WiSE-FT candidates and budget.json's schema."""
from __future__ import annotations

import json
import math

import pytest

from ldifs_engine import budget as B
from ldifs_engine.errors import SpecError
from ldifs_engine.presets import QUICK
from ldifs_engine.spec import RunSpec


def spec_with(**budget) -> RunSpec:
    return RunSpec.from_dict({**QUICK, "budget": budget})


# ---- a fake trial: forgetting falls with alpha (40 points at alpha 0, 5 at alpha 70), so does the gain ----
def forgets(alpha: float) -> float:
    return 40.0 / (1 + alpha / 10)


def during(alpha: float) -> list[float]:
    """Forgetting at the four intermediate evaluations: regularised runs peak early and recover (as LDIFS
    does on quadrant), plain-ish ones keep forgetting."""
    f = forgets(alpha)
    return [f * 1.6, f * 1.3, f * 1.1, f] if alpha >= 10 else [f * 0.5, f * 0.9, f * 0.95, f]


def fake_results(spec: RunSpec, *, margin_stop: bool = True, mixes: bool = True) -> dict:
    """results.json as the engine writes it for a trial on the known curve (a mix at a forgets a·F); the
    trial stops where the engine's rule says so."""
    alpha = spec.method.params.alpha
    f, acc = forgets(alpha), 1.0 - 0.3 * alpha / (alpha + 300)
    stopped = None
    for i in range(1, 3):  # the last evaluation is the end of training
        if margin_stop and B.early_stop_reason(spec.budget, during(alpha)[: i + 1]):
            stopped, f = {"step": 50 * (i + 1), "reason": "over"}, during(alpha)[i]
            break
    alphas = list(spec.eval.wise_ft_alphas) if mixes and not stopped else []
    return {"spec": spec.to_dict(), "target": "quadrant",
            "datasets": {"quadrant": {"title": "Quadrant", "n_test": 1000}},
            "target_head_acc": {"before": 0.4, "after": acc, "after_ci": [acc - 0.01, min(1.0, acc + 0.01)]},
            "summary": {"mean_delta_zs_controls": -f / 100, "worst_control": {"dataset": "shape", "delta_zs": -2 * f / 100}},
            "training": {"stopped_early": stopped},
            "wise_ft": {"alphas": alphas, "target_head_acc": [0.4 + (acc - 0.4) * math.sqrt(a) for a in alphas],
                        "mean_delta_zs_controls": [-a * f / 100 for a in alphas],
                        "worst_delta_zs_control": [-2 * a * f / 100 for a in alphas]} if alphas else None}


def search(spec: RunSpec, **kw) -> tuple[list[float], dict[float, dict]]:
    """Drive the state machine the way the CLI and the queue do; returns the order of values run."""
    coarse, order, runs = B.grid(spec), [], {}
    for _ in range(50):
        nxt = B.next_trials(spec.budget, coarse, {v: B.outcome(r, spec.budget) for v, r in runs.items()})
        if nxt == B.DONE:
            return order, runs
        assert nxt, "nothing is running, so the search must either ask for trials or be done"
        for v in nxt:
            assert v not in runs, f"value {v} asked twice"
            order.append(v)
            runs[v] = fake_results(B.trial_spec(spec, v), **kw)
    raise AssertionError("the search never ended")


def test_the_search_finds_the_boundary_respects_the_budget_and_spends_few_trials():
    spec = spec_with(max_forgetting_points=5)  # true boundary: alpha 70
    order, runs = search(spec)
    assert order[:5] == [0.0, 1.0, 10.0, 100.0, 1000.0]  # the coarse grid (with plain fine-tuning) first
    inside = min(v for v in order if forgets(v) <= 5)
    outside = max(v for v in order if forgets(v) > 5)
    assert outside < 70 <= inside and inside / outside <= 10 ** 0.25 * 1.02  # bracketed at the final resolution
    assert len(order) == 7 < B.full_grid_size(spec) == 14
    doc = B.budget_document(spec, [(f"trial_{i}", runs[v]) for i, v in enumerate(order)], complete=True)
    rec = doc["recommended"]
    assert doc["met"] and rec["forgetting_points"] <= 5 and rec["within_budget"]
    best = max(c["target_acc"] for c in doc["candidates"] if c["within_budget"] and not c["early_stopped"])
    assert rec["target_acc"] == best
    # trials over budget + margin (7 points) and still forgetting more were stopped early: candidates, never
    # recommended; alpha 10 and 31.6 (over budget, but recovering) ran to the end
    early = {c["params"]["alpha"] for c in doc["candidates"] if c["early_stopped"]}
    assert early == {0.0, 1.0} and doc["n_early_stopped"] == 2
    assert "Within a 5-point budget, LDIFS with alpha" in doc["sentence"]
    assert "Plain fine-tuning reaches" in doc["sentence"] and "(stopped early)" in doc["sentence"]


def test_a_budget_nothing_meets_says_so_and_shows_the_closest():
    spec = spec_with(max_forgetting_points=0.01, early_stop_margin_points=None, high=100, max_trials=6)
    order, runs = search(spec, mixes=False)
    assert order == [0.0, 1.0, 4.64, 21.5, 100.0, 464.0]  # grid, then stronger until max_trials
    doc = B.budget_document(spec, [(str(v), runs[v]) for v in order], complete=True)
    assert not doc["met"] and doc["recommended"]["params"]["alpha"] == 464.0
    assert doc["sentence"].startswith("No setting tried stays within a 0.01-point budget; the closest")


def test_the_worst_control_metric_judges_by_the_control_that_lost_most():
    mean_spec, worst_spec = spec_with(max_forgetting_points=5), spec_with(max_forgetting_points=5, metric="worst_zs_control")
    (mean_order, _), (worst_order, _) = search(mean_spec), search(worst_spec)
    # the worst control forgets twice the mean here, so the boundary moves to alpha 150
    assert max(v for v in worst_order if 2 * forgets(v) > 5) < 150 <= min(v for v in worst_order if 2 * forgets(v) <= 5)
    assert mean_order != worst_order


def test_search_none_runs_once_and_searches_only_the_mixes():
    spec = spec_with(max_forgetting_points=5, search="none")
    assert B.grid(spec) == (None,) and B.trial_spec(spec, None).method.params.alpha == 50.0
    order, runs = search(spec)
    assert order == [None]
    doc = B.budget_document(spec, [("run", runs[None])], complete=True)
    # alpha 50 alone forgets 6.7 points: the answer is a WiSE-FT mix of it with the pre-trained weights
    assert doc["met"] and doc["recommended"]["wise_ft_alpha"] == 0.75
    assert "mixed 75 % fine-tuned" in doc["sentence"]


def test_wise_ft_mixes_are_candidates_and_the_pretrained_end_is_listed_once():
    spec = spec_with(max_forgetting_points=5, early_stop_margin_points=None)
    trials = [(f"t{v:g}", fake_results(B.trial_spec(spec, v))) for v in (10.0, 100.0)]
    cands = B.budget_document(spec, trials, complete=True)["candidates"]
    assert [(c["run"], c["wise_ft_alpha"]) for c in cands] == [
        ("t10", None), ("t10", 0.0), ("t10", 0.25), ("t10", 0.5), ("t10", 0.75),
        ("t100", None), ("t100", 0.25), ("t100", 0.5), ("t100", 0.75)]
    pre = cands[1]
    assert pre["forgetting_points"] == 0 and pre["within_budget"] and pre["target_acc"] == pytest.approx(0.4)
    assert pre["target_acc_ci"][0] < 0.4 < pre["target_acc_ci"][1]  # Wilson over the target's 1000 test images


def test_budget_json_follows_its_schema(tmp_path):
    spec = spec_with(max_forgetting_points=2)
    trials = [(f"trial_{i}", fake_results(B.trial_spec(spec, v))) for i, v in enumerate((0.0, 100.0, 1000.0))]
    path = B.write_budget(tmp_path / "budget.json", B.budget_document(spec, trials, complete=True))
    doc = json.loads(path.read_text())
    assert doc["schema"] == "ldifs.budget/1" and doc["max_forgetting_points"] == 2 and doc["metric"] == "mean_zs_controls"
    assert isinstance(doc["met"], bool) and doc["recommended"] in doc["candidates"]
    for c in doc["candidates"]:
        assert set(B.CANDIDATE_KEYS) <= set(c) and isinstance(c["params"], dict) and isinstance(c["run"], str)
    assert B.budget_problems(doc) == []
    broken = {**doc, "candidates": [{k: v for k, v in doc["candidates"][0].items() if k != "run"}]}
    assert "candidates[0].run: missing" in B.budget_problems(broken)
    with pytest.raises(ValueError, match="does not match ldifs.budget/1"):
        B.write_budget(tmp_path / "bad.json", {**doc, "metric": "median"})
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("block, words", [
    ({"max_forgetting_points": 0}, "budget.max_forgetting_points: 0.0 is out of range"),
    ({"metric": "median"}, "budget.metric: 'median' is not allowed; choose one of: mean_zs_controls, worst_zs_control"),
    ({"search": "strength"}, "budget.search: ldifs has no strength parameter 'strength'; allowed for ldifs: alpha, none"),
    ({"low": 100, "high": 10}, "budget.low: 100 must be smaller than budget.high (10)"),
    ({"grid_points": 1}, "budget.grid_points: 1 is out of range"),
])
def test_bad_budget_blocks_name_the_field(block, words):
    with pytest.raises(SpecError) as e:
        spec_with(**block)
    assert any(words in p for p in e.value.problems), e.value.problems


def test_early_stop_needs_over_budget_plus_margin_and_still_rising():
    b = spec_with(max_forgetting_points=2).budget  # limit 2 + 2 points
    assert B.early_stop_reason(b, [15.7]) is None  # the first evaluation alone never stops a trial
    assert "31.4 points" in B.early_stop_reason(b, [15.7, 31.4])  # plain fine-tuning on quadrant
    assert B.early_stop_reason(b, [9.3, 7.6]) is None  # LDIFS alpha 50: over, but recovering (ends at 5.9)
    assert B.early_stop_reason(b, [3.0, 3.9]) is None  # rising, but within budget + margin
    assert B.early_stop_reason(b, [None, 9.0]) is None
    assert B.early_stop_reason(spec_with(max_forgetting_points=2, early_stop_margin_points=None).budget, [5, 50]) is None


def test_a_spec_without_budget_keeps_its_dict_and_hash():
    plain = RunSpec.from_dict(QUICK)
    assert "budget" not in plain.to_dict() and RunSpec.from_dict({**QUICK, "budget": None}) == plain
    with_budget = spec_with(max_forgetting_points=2)
    assert RunSpec.from_dict(with_budget.to_dict()) == with_budget
    assert B.search_param(spec_with(max_forgetting_points=2)) == "alpha"
    l2sp = RunSpec.from_dict({**QUICK, "method": {"name": "l2sp", "head_init": "lp"}, "budget": {}})
    assert B.search_param(l2sp) == "strength" and B.grid(l2sp)[1:] == (0.001, 0.01, 0.1, 1.0)
    ce = RunSpec.from_dict({**QUICK, "method": {"name": "ce", "head_init": "lp"}, "budget": {}})
    assert B.search_param(ce) is None and B.grid(ce) == (None,)
