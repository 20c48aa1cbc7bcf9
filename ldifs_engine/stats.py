"""Uncertainty of the report's numbers (pure numpy, no torch: the service layer and the app may import it).

* ``wilson(k, n)``: 95 % Wilson score interval of an accuracy ``k / n``.
* ``paired_bootstrap_delta(before, after, seed)``: 95 % interval of ``mean(after) − mean(before)`` when
  both are per-image correctness vectors over the *same* test images (a percentile bootstrap that
  resamples images, keeping each image's before/after pair together).
* ``paired_bootstrap_mean_delta(pairs, seed)``: the same for the mean change over several datasets
  (each dataset's images resampled on their own, then the per-dataset changes averaged).
* ``paired_bootstrap_run_difference(pairs, seed)``: the same for the difference between two runs'
  changes (e.g. LDIFS's forgetting minus plain fine-tuning's) on the same test images.
* ``aggregate_runs(results)``: mean ± sd of every headline metric over seed repeats.

Intervals are ``[lo, hi]`` lists of fractions, like the values they belong to; ``None`` where the
value itself is not measurable. Every random draw is seeded: the same inputs give the same interval.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

Z95 = 1.959963984540054  # two-sided 95 % normal quantile
N_BOOT = 4000
LEVEL = 0.95


def wilson(k: int, n: int, *, z: float = Z95) -> list[float] | None:
    """95 % Wilson score interval ``[lo, hi]`` of ``k`` successes in ``n`` trials (None when n = 0).

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 % and 100 %, which
    fine-tuned target heads often reach."""
    n = int(n)
    k = int(k)
    if n <= 0:
        return None
    if not 0 <= k <= n:
        raise ValueError(f"wilson: k={k} is outside 0..n={n}")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def wilson_of(correct: Any) -> list[float] | None:
    """Wilson interval of a per-image correctness vector (None when empty or missing)."""
    if correct is None:
        return None
    c = _bool_vector(correct)
    return wilson(int(c.sum()), len(c))


def _bool_vector(x: Any) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"expected a 1-D per-image correctness vector, got shape {a.shape}")
    return a.astype(bool)


def _pair_counts(before: Any, after: Any) -> tuple[int, int, int]:
    """(n, #images only right after, #images only right before) of a paired correctness vector."""
    b, a = _bool_vector(before), _bool_vector(after)
    if len(b) != len(a):
        raise ValueError(f"paired bootstrap needs the same test images before and after: {len(b)} vs {len(a)}")
    return len(b), int(np.sum(a & ~b)), int(np.sum(b & ~a))


def _boot_deltas(n: int, gained: int, lost: int, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """``n_boot`` bootstrap replicates of ``mean(after) − mean(before)``.

    Resampling ``n`` images with replacement only changes the delta through how many "gained"
    (wrong → right) and "lost" (right → wrong) images are drawn, so drawing those counts from one
    multinomial is exactly the image bootstrap, at O(n_boot) cost instead of O(n_boot · n)."""
    p = np.array([gained, lost, n - gained - lost], dtype=float) / n
    counts = rng.multinomial(n, p, size=n_boot)
    return (counts[:, 0] - counts[:, 1]) / n


def _percentile_interval(samples: np.ndarray, level: float) -> list[float]:
    lo, hi = np.quantile(samples, [(1 - level) / 2, 1 - (1 - level) / 2])
    return [float(lo), float(hi)]


def paired_bootstrap_delta(correct_before: Any, correct_after: Any, seed: int = 0, *, n_boot: int = N_BOOT,
                           level: float = LEVEL) -> list[float] | None:
    """95 % percentile-bootstrap interval ``[lo, hi]`` of accuracy after − before on the same images.

    ``correct_before`` / ``correct_after``: per-image 0/1 (or bool) vectors in the same image order.
    None when either is missing or empty."""
    if correct_before is None or correct_after is None:
        return None
    n, gained, lost = _pair_counts(correct_before, correct_after)
    if n == 0:
        return None
    rng = np.random.default_rng(seed)
    return _percentile_interval(_boot_deltas(n, gained, lost, rng, n_boot), level)


def paired_bootstrap_mean_delta(pairs: Iterable[tuple[Any, Any]], seed: int = 0, *, n_boot: int = N_BOOT,
                                level: float = LEVEL) -> list[float] | None:
    """95 % interval of the mean over datasets of (accuracy after − before).

    ``pairs``: one ``(correct_before, correct_after)`` per dataset. Each dataset's test images are
    resampled on their own (datasets are fixed, images are the sample), so the interval reflects how
    many images each dataset has. None when there is no pair."""
    counts = [_pair_counts(b, a) for b, a in pairs if b is not None and a is not None]
    counts = [c for c in counts if c[0] > 0]
    if not counts:
        return None
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for n, gained, lost in counts:
        total += _boot_deltas(n, gained, lost, rng, n_boot)
    return _percentile_interval(total / len(counts), level)


def _boot_score_means(scores: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """``n_boot`` bootstrap replicates of ``mean(scores)`` for per-image scores that take a few integer
    values: resampling images only changes how many images of each value are drawn (one multinomial,
    exactly the image bootstrap, as in ``_boot_deltas``)."""
    values, counts = np.unique(scores, return_counts=True)
    draws = rng.multinomial(len(scores), counts / len(scores), size=n_boot)
    return draws @ values.astype(float) / len(scores)


def _run_scores(before: Any, after: Any) -> np.ndarray:
    """A run's per-image change (after − before: −1, 0 or 1), or its per-image correctness (0/1) when
    ``before`` is None (to compare two runs' accuracies rather than their changes)."""
    a = _bool_vector(after).astype(np.int8)
    return a if before is None else a - _bool_vector(before).astype(np.int8)


def paired_bootstrap_run_difference(pairs: Iterable[tuple[tuple[Any, Any], tuple[Any, Any]]], seed: int = 0, *,
                                    n_boot: int = N_BOOT, level: float = LEVEL) -> list[float] | None:
    """95 % interval of how much run A's change exceeds run B's, averaged over datasets, when both runs
    were scored on the *same* test images of each dataset.

    ``pairs``: per dataset ``((before_a, after_a), (before_b, after_b))`` correctness vectors in the
    same image order (a ``before`` may be None: that run's accuracy instead of its change). The
    statistic is the mean over datasets of ``mean_i[(after_a − before_a) − (after_b − before_b)]``;
    each dataset's images are resampled on their own, keeping an image's four scores together, so
    what the two runs share (the same hard images) cancels out. None when there is no pair; raises
    ``ValueError`` when two vectors of one dataset differ in length (not the same test images)."""
    diffs = []
    for (ba, aa), (bb, ab) in pairs:
        sa, sb = _run_scores(ba, aa), _run_scores(bb, ab)
        if len(sa) != len(sb):
            raise ValueError(f"the two runs were not scored on the same test images: {len(sa)} vs {len(sb)}")
        if len(sa):
            diffs.append(sa - sb)
    if not diffs:
        return None
    rng = np.random.default_rng(seed)
    total = np.zeros(n_boot)
    for d in diffs:
        total += _boot_score_means(d, rng, n_boot)
    return _percentile_interval(total / len(diffs), level)


def covers_zero(ci: Sequence[float] | None) -> bool | None:
    """True when the interval includes 0 (the change is within noise), None without an interval."""
    if ci is None:
        return None
    return ci[0] <= 0.0 <= ci[1]


# ---- seed repeats ----------------------------------------------------------------------------
SUMMARY_KEYS = ("mean_delta_zs_controls", "mean_delta_lp_controls", "target_gain")
METRIC_KEYS = ("zs_acc", "zs_ece", "lp_acc", "lp_ece")


def mean_sd(values: Iterable[float | None]) -> dict[str, Any]:
    """``{"mean", "sd", "n", "values"}`` of the numbers among ``values`` (None entries are gaps).

    ``sd`` is the sample standard deviation (n − 1), None with fewer than two numbers; ``mean`` is
    None when there is no number at all."""
    vals = list(values)
    nums = [float(v) for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)]
    mean = sum(nums) / len(nums) if nums else None
    sd = float(np.std(nums, ddof=1)) if len(nums) >= 2 else None
    return {"mean": mean, "sd": sd, "n": len(nums), "values": [None if v is None else v for v in vals]}


def aggregate_runs(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean ± sd across seed repeats of the same spec, for every number the report headlines.

    ``results``: the ``results.json`` dicts of the repeats (order kept in each ``values`` list).
    Returns ``{"n_runs", "seeds", "target", "target_head_acc": {"before", "after", "gain"},
    "summary": {key: stat}, "datasets": {name: {"before": {metric: stat}, "after": {metric: stat},
    "delta_zs": stat, "delta_lp": stat}}}`` where every ``stat`` is ``mean_sd``'s dict. A dataset
    missing from some runs is aggregated over the runs that have it."""
    runs = [r for r in results if isinstance(r, Mapping)]
    if not runs:
        raise ValueError("aggregate_runs: no results to aggregate")

    def get(r: Mapping, *path: str) -> Any:
        node: Any = r
        for p in path:
            if not isinstance(node, Mapping):
                return None
            node = node.get(p)
        return node

    def diff(a: Any, b: Any) -> float | None:
        return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None

    names: list[str] = []
    for r in runs:
        names += [k for k in (r.get("datasets") or {}) if k not in names]
    datasets = {}
    for name in names:
        have = [r for r in runs if name in (r.get("datasets") or {})]
        entry: dict[str, Any] = {side: {m: mean_sd(get(r, "datasets", name, side, m) for r in have)
                                        for m in METRIC_KEYS} for side in ("before", "after")}
        for m, out in (("zs_acc", "delta_zs"), ("lp_acc", "delta_lp")):
            entry[out] = mean_sd(diff(get(r, "datasets", name, "after", m), get(r, "datasets", name, "before", m))
                                 for r in have)
        entry["role"] = get(have[0], "datasets", name, "role")
        datasets[name] = entry
    heads = {side: mean_sd(get(r, "target_head_acc", side) for r in runs) for side in ("before", "after")}
    heads["gain"] = mean_sd(diff(get(r, "target_head_acc", "after"), get(r, "target_head_acc", "before"))
                            for r in runs)
    return {
        "n_runs": len(runs),
        "seeds": [get(r, "spec", "seed") for r in runs],
        "target": runs[0].get("target"),
        "target_head_acc": heads,
        "summary": {k: mean_sd(get(r, "summary", k) for r in runs) for k in SUMMARY_KEYS},
        "datasets": datasets,
    }
