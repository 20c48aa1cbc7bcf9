"""Intervals and seed aggregation (ldifs_engine.stats): exact small cases and coverage on simulated data."""
from __future__ import annotations

import numpy as np
import pytest

from ldifs_engine.stats import (aggregate_runs, covers_zero, mean_sd, paired_bootstrap_delta,
                                paired_bootstrap_mean_delta, paired_bootstrap_run_difference, wilson, wilson_of)


def test_wilson_known_values_and_edges():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)  # textbook value
    assert wilson(0, 20)[0] == 0.0 and 0 < wilson(0, 20)[1] < 0.2
    assert wilson(20, 20)[1] == 1.0 and 0.8 < wilson(20, 20)[0] < 1.0
    assert wilson(0, 0) is None
    with pytest.raises(ValueError):
        wilson(5, 3)
    assert wilson_of([1, 0, 1, 1]) == wilson(3, 4)
    # a bigger sample gives a narrower interval around the same rate
    assert np.diff(wilson(900, 1000))[0] < np.diff(wilson(9, 10))[0]


def test_paired_bootstrap_is_seeded_and_contains_the_observed_change():
    rng = np.random.default_rng(1)
    before = rng.random(400) < 0.8
    after = before.copy()
    after[:60] = False  # 60 images forgotten (some were already wrong)
    observed = after.mean() - before.mean()
    ci = paired_bootstrap_delta(before, after, seed=3)
    assert ci == paired_bootstrap_delta(before, after, seed=3)
    assert ci[0] <= observed <= ci[1] and ci[1] < 0
    assert not covers_zero(ci)
    same = paired_bootstrap_delta(before, before, seed=0)
    assert same == [0.0, 0.0] and covers_zero(same)
    assert paired_bootstrap_delta(None, after) is None
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap_delta(before, after[:-1])


def test_small_splits_give_wide_intervals():
    # a 12-image test split: losing one image is well within noise
    before = np.array([1] * 10 + [0] * 2, bool)
    after = before.copy()
    after[0] = False
    ci = paired_bootstrap_delta(before, after, seed=0)
    assert covers_zero(ci)


@pytest.mark.parametrize("p", [0.5, 0.9])
def test_wilson_coverage_on_simulated_data(p):
    rng = np.random.default_rng(7)
    n, draws = 150, 400
    hits = sum(lo <= p <= hi for lo, hi in (wilson(int(k), n) for k in rng.binomial(n, p, size=draws)))
    assert 0.90 <= hits / draws <= 0.99


def _paired_sample(rng, n):
    """Images with a true joint distribution of (right before, right after)."""
    probs = [0.62, 0.05, 0.15, 0.18]  # (1,1), (0,1) gained, (1,0) lost, (0,0)
    kind = rng.choice(4, size=n, p=probs)
    before = (kind == 0) | (kind == 2)
    after = (kind == 0) | (kind == 1)
    return before, after, probs[1] - probs[2]


def test_paired_bootstrap_coverage_on_simulated_data():
    rng = np.random.default_rng(11)
    draws, hits = 300, 0
    for i in range(draws):
        before, after, truth = _paired_sample(rng, 250)
        lo, hi = paired_bootstrap_delta(before, after, seed=i, n_boot=1000)
        hits += lo <= truth <= hi
    assert 0.90 <= hits / draws <= 0.99


def test_mean_delta_coverage_on_simulated_data():
    rng = np.random.default_rng(12)
    draws, hits = 300, 0
    for i in range(draws):
        pairs, truths = [], []
        for n in (120, 300, 80):
            b, a, t = _paired_sample(rng, n)
            pairs.append((b, a))
            truths.append(t)
        lo, hi = paired_bootstrap_mean_delta(pairs, seed=i, n_boot=1000)
        hits += lo <= np.mean(truths) <= hi
    assert 0.90 <= hits / draws <= 0.99
    assert paired_bootstrap_mean_delta([]) is None


# (right before, right after run A, right after run B): both runs start from the same model, on the same images.
_TRIPLES = [(b, a, c) for b in (0, 1) for a in (0, 1) for c in (0, 1)]
_TRIPLE_P = [0.08, 0.02, 0.06, 0.04, 0.05, 0.15, 0.05, 0.55]


def _two_runs(rng, n):
    kind = rng.choice(8, size=n, p=_TRIPLE_P)
    b, a, c = (np.array([_TRIPLES[k][i] for k in kind], bool) for i in range(3))
    truth = sum(p * (t[1] - t[2]) for t, p in zip(_TRIPLES, _TRIPLE_P))  # E[(a − b) − (c − b)]
    return (b, a), (b, c), truth


def test_run_difference_coverage_on_simulated_data():
    """The interval for 'run A's change minus run B's' (one dataset, and the mean over three of
    different sizes) covers the true difference in roughly 95 % of seeded draws."""
    rng = np.random.default_rng(13)
    draws, hits_one, hits_mean = 300, 0, 0
    for i in range(draws):
        sets = [_two_runs(rng, n) for n in (250, 120, 60)]
        lo, hi = paired_bootstrap_run_difference([sets[0][:2]], seed=i, n_boot=1000)
        hits_one += lo <= sets[0][2] <= hi
        lo, hi = paired_bootstrap_run_difference([s[:2] for s in sets], seed=i, n_boot=1000)
        hits_mean += lo <= np.mean([s[2] for s in sets]) <= hi
    assert 0.90 <= hits_one / draws <= 0.99 and 0.90 <= hits_mean / draws <= 0.99


def test_run_difference_exact_cases():
    rng = np.random.default_rng(2)
    (b, a), (_, c), _ = _two_runs(rng, 500)
    assert paired_bootstrap_run_difference([((b, a), (b, a))]) == [0.0, 0.0]  # a run against itself
    ci = paired_bootstrap_run_difference([((b, a), (b, c))], seed=4)
    assert ci == paired_bootstrap_run_difference([((b, a), (b, c))], seed=4)  # seeded
    assert ci[0] <= a.mean() - c.mean() <= ci[1]  # same before: the difference of the afters
    # the paired interval is much narrower than treating the two runs as independent samples
    unpaired = 2 * 1.96 * np.sqrt(a.mean() * (1 - a.mean()) / 500 + c.mean() * (1 - c.mean()) / 500)
    assert ci[1] - ci[0] < 0.9 * unpaired
    assert paired_bootstrap_run_difference([((None, a), (None, c))], seed=4) == ci  # accuracies: same here
    assert paired_bootstrap_run_difference([]) is None
    with pytest.raises(ValueError, match="same test images"):
        paired_bootstrap_run_difference([((b, a), (b[:-1], c[:-1]))])


def _results(seed, *, target_after, zs_after, zs_note=None):
    return {"spec": {"seed": seed}, "target": "quadrant",
            "datasets": {"quadrant": {"role": "target", "before": {"zs_acc": None, "zs_ece": None, "lp_acc": 0.4,
                                                                   "lp_ece": 0.05},
                                      "after": {"zs_acc": None, "zs_ece": None, "lp_acc": 0.99, "lp_ece": 0.01}},
                         "shape": {"role": "control", "before": {"zs_acc": 0.96, "zs_ece": 0.02, "lp_acc": 0.99,
                                                                 "lp_ece": 0.01},
                                   "after": {"zs_acc": zs_after, "zs_ece": 0.1, "lp_acc": 0.97, "lp_ece": 0.02}}},
            "target_head_acc": {"before": 0.4, "after": target_after},
            "summary": {"mean_delta_zs_controls": zs_after - 0.96, "mean_delta_lp_controls": -0.02,
                        "target_gain": target_after - 0.4}}


def test_aggregate_runs_mean_and_sd():
    runs = [_results(0, target_after=1.0, zs_after=0.90), _results(1, target_after=0.98, zs_after=0.80),
            _results(2, target_after=0.99, zs_after=0.85)]
    agg = aggregate_runs(runs)
    assert agg["n_runs"] == 3 and agg["seeds"] == [0, 1, 2] and agg["target"] == "quadrant"
    after = agg["target_head_acc"]["after"]
    assert after["mean"] == pytest.approx(0.99) and after["sd"] == pytest.approx(0.01) and after["n"] == 3
    d = agg["datasets"]["shape"]["delta_zs"]
    assert d["mean"] == pytest.approx(-0.11) and d["sd"] == pytest.approx(0.05)
    assert agg["summary"]["mean_delta_zs_controls"]["mean"] == pytest.approx(-0.11)
    # unmeasurable zero-shot stays a gap, never a zero
    q = agg["datasets"]["quadrant"]
    assert q["after"]["zs_acc"] == {"mean": None, "sd": None, "n": 0, "values": [None, None, None]}
    assert q["delta_zs"]["mean"] is None and q["delta_lp"]["mean"] == pytest.approx(0.59)
    assert agg["datasets"]["shape"]["role"] == "control"


def test_aggregate_one_run_has_no_sd_and_empty_is_an_error():
    agg = aggregate_runs([_results(0, target_after=1.0, zs_after=0.9)])
    assert agg["target_head_acc"]["after"]["sd"] is None
    assert mean_sd([None, float("nan"), 0.5])["n"] == 1
    with pytest.raises(ValueError):
        aggregate_runs([])
