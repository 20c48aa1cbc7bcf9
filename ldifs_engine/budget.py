"""Forgetting budget: find the setting that learns the most while forgetting at most N points.

Pure (no torch): the service layer and the app import it. The pieces, in the order a search uses them:

* ``BudgetSpec`` — the ``budget:`` block of a run spec (validated with the rest of the spec, ``check``).
* ``trial_spec(spec, value)`` — the run spec of one trial: the searched method parameter set to
  ``value`` (the budget block stays, so the trial knows when it is clearly over budget and stops early).
* ``next_trials(budget, grid, known)`` — the search as a state machine: a coarse log-spaced grid first
  (plus plain fine-tuning, strength 0, where the method allows it), then geometric bisection between the
  last value within budget and the first one over it; returns the values to run now (empty: wait for
  the running ones) or ``DONE``.
* ``candidates(results, run, budget)`` — a finished trial and each of its WiSE-FT mixes with the
  pre-trained weights, as candidates.
* ``budget_document(...)`` — the answer: the recommendation (most target accuracy within budget, else
  the closest), every candidate, a plain sentence; ``write_budget`` writes it as ``budget.json``.

A larger strength (LDIFS alpha, L2-SP strength) is assumed to forget less; the search only relies on
that near the boundary, and every candidate is judged on its own measured numbers.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .fields import param

SCHEMA = "ldifs.budget/1"
METRICS = ("mean_zs_controls", "worst_zs_control")
SEARCHES = ("alpha", "strength", "none")
DEFAULT_MIXES = (0.0, 0.25, 0.5, 0.75, 1.0)  # WiSE-FT mixes of each trial when the spec asks for none
DONE = "done"  # what ``next_trials`` returns once the search has nothing more to run
MAX_EXTEND = 2  # grid steps the search may go beyond the coarse grid when every value is on one side


@dataclass(frozen=True)
class BudgetSpec:
    max_forgetting_points: float = param(
        5.0, "The largest acceptable loss, in accuracy points, on what the model already knew.", min_excl=0.0,
        max=100.0)
    metric: str = param("mean_zs_controls", "How forgetting is measured: mean_zs_controls = mean zero-shot change over "
                        "the control datasets; worst_zs_control = the control that lost the most.", choices=METRICS)
    search: str | None = param(None, "The method parameter to search (alpha for LDIFS, strength for L2-SP) or none "
                               "(only WiSE-FT mixes are searched); empty = the method's own.", choices=SEARCHES)
    low: float | None = param(None, "Smallest value of the coarse grid (empty = the method's default).", min_excl=0.0)
    high: float | None = param(None, "Largest value of the coarse grid (empty = the method's default).", min_excl=0.0)
    grid_points: int = param(4, "Values in the coarse log-spaced grid.", min=2, max=10)
    refine_steps: int = param(2, "Bisections of the grid step around the budget boundary.", min=0, max=6)
    plain: bool = param(True, "Also try strength 0 (plain fine-tuning) as the other end of the scale.")
    max_trials: int = param(10, "At most this many fine-tunes.", min=1, max=40)
    early_stop_margin_points: float | None = param(
        2.0, "Stop a trial early once an intermediate evaluation already forgets this many points more than the "
        "budget (empty = never).", min=0.0, max=100.0)


# ---- the spec side ---------------------------------------------------------------------------------
def method_class(spec: Any) -> Any:
    from .methods import METHODS

    return METHODS.get(spec.method.name)


def search_param(spec: Any) -> str | None:
    """The method parameter the search varies (None: only WiSE-FT mixes are searched)."""
    chosen = spec.budget.search
    if chosen is None:
        return getattr(method_class(spec), "budget_param", None)
    return None if chosen == "none" else chosen


def check(spec: Any) -> list[str]:
    """Problems of a spec's ``budget`` block that span fields (``"field: message"``)."""
    b = spec.budget
    if b is None:
        return []
    p: list[str] = []
    own = getattr(method_class(spec), "budget_param", None)
    if b.search not in (None, "none") and b.search != own:
        allowed = ", ".join(x for x in (own, "none") if x)
        p.append(f"budget.search: {spec.method.name} has no strength parameter {b.search!r}; allowed for "
                 f"{spec.method.name}: {allowed}")
    if b.low is not None and b.high is not None and b.low >= b.high:
        p.append(f"budget.low: {b.low:g} must be smaller than budget.high ({b.high:g})")
    if spec.seeds:
        p.append("seeds: a budget search runs one seed; remove seeds (or budget)")
    if spec.data.sequence:
        p.append("budget: a budget search is for one task; remove data.sequence (or budget)")
    if not spec.data.controls:
        p.append("data.controls: a forgetting budget needs at least one control dataset to measure forgetting on")
    if not spec.eval.zero_shot:
        p.append("eval.zero_shot: a forgetting budget is measured with zero-shot accuracy; turn it on")
    return p


def grid(spec: Any) -> tuple[float, ...]:
    """The coarse grid of the searched parameter (``(None,)`` when only WiSE-FT mixes are searched)."""
    name = search_param(spec)
    if name is None:
        return (None,)
    b = spec.budget
    lo_d, hi_d = getattr(method_class(spec), "budget_range", (1.0, 1000.0))
    lo, hi = b.low or lo_d, b.high or hi_d
    if b.low and not b.high and lo >= hi:
        hi = lo * 1000
    if b.high and not b.low and lo >= hi:
        lo = hi / 1000
    values = [nice(lo * (hi / lo) ** (i / (b.grid_points - 1))) for i in range(b.grid_points)]
    return ((0.0,) if b.plain else ()) + tuple(values)


def nice(v: float) -> float:
    """Three significant digits: 31.6, not 31.622776601683793 (what a person would type)."""
    return float(f"{v:.3g}")


def trial_spec(spec: Any, value: float | None) -> Any:
    """The run spec of the trial at ``value`` of the searched parameter (``spec`` as is for None)."""
    name = search_param(spec)
    base = spec.name or f"Budget {spec.budget.max_forgetting_points:g} pts: {spec.method.name} on {spec.data.target}"
    changes: dict[str, Any] = {}
    if not spec.eval.wise_ft_alphas:
        changes["eval.wise_ft_alphas"] = list(DEFAULT_MIXES)
    if name is not None and value is not None:
        changes[f"method.params.{name}"] = value
        changes["name"] = f"{base} · {value_label(name, value)}"[:120]
    return spec.replace(**changes) if changes else spec


def value_label(name: str | None, value: float | None) -> str:
    if name is None or value is None:
        return "as specified"
    return f"{name} {value:g}" + (" (plain fine-tuning)" if value == 0 else "")


# ---- forgetting as the budget measures it ----------------------------------------------------------
def forgetting_points(metric: str, mean_delta: float | None, worst_delta: float | None) -> float | None:
    """Points forgotten by ``metric`` (positive = forgot; None = not measurable)."""
    d = mean_delta if metric == "mean_zs_controls" else worst_delta
    return None if d is None else -100.0 * d


def deltas_now(before: Mapping[str, float | None], now: Mapping[str, float | None],
               controls: Iterable[str]) -> tuple[float | None, float | None]:
    """(mean, worst) zero-shot change over ``controls`` between two accuracy maps (gaps left out)."""
    d = [now[k] - before[k] for k in controls if now.get(k) is not None and before.get(k) is not None]
    return (sum(d) / len(d), min(d)) if d else (None, None)


def early_stop_reason(budget: BudgetSpec, forgetting: Sequence[float | None]) -> str | None:
    """Why a trial should stop at this intermediate evaluation (None: keep going).

    ``forgetting``: points forgotten at each intermediate evaluation so far, this one last. A trial stops
    only when it already forgets more than budget + margin *and* is still getting worse: a regularised
    run forgets most early on and then recovers as the learning rate decays (LDIFS alpha 50 on quadrant:
    9.3 points after a quarter of training, 7.6, 6.6, then 5.9 at the end), while plain fine-tuning keeps
    forgetting (15.7, 31.4, 33.3, 33.6). So the first evaluation never stops a trial on its own."""
    if budget.early_stop_margin_points is None or len(forgetting) < 2:
        return None
    now, before = forgetting[-1], forgetting[-2]
    limit = budget.max_forgetting_points + budget.early_stop_margin_points
    if now is None or before is None or now <= limit or now < before:
        return None
    return (f"already forgets {now:.1f} points and still more than at the previous evaluation ({before:.1f}): "
            f"over the {budget.max_forgetting_points:g}-point budget by more than the "
            f"{budget.early_stop_margin_points:g}-point margin")


# ---- the search ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Outcome:
    """What the search knows of one trial: still running, or its own forgetting (points, None = not
    measurable / failed) and whether it was stopped early."""

    finished: bool
    forgetting: float | None = None
    early_stopped: bool = False


def next_trials(budget: BudgetSpec, coarse: Sequence[float | None], known: Mapping[float | None, Outcome],
                ) -> list[float | None] | str:
    """The values to run now (empty: wait for running trials), or ``DONE``.

    ``coarse`` is ``grid(spec)``; ``known`` maps every value tried or running to its ``Outcome``. Idempotent:
    the same knowledge gives the same answer, so a restarted driver never runs a value twice."""
    missing = [v for v in coarse if v not in known][: max(0, budget.max_trials - len(known))]
    if missing:
        return missing
    if any(not o.finished for o in known.values()):
        return []
    if tuple(coarse) == (None,) or len(known) >= budget.max_trials:
        return DONE
    step = _step(coarse)
    inside = sorted(v for v, o in known.items() if _within(budget, o))
    over = sorted(v for v, o in known.items() if _over(budget, o))
    pos_grid = [v for v in coarse if v]
    if not inside:  # everything forgets too much: go stronger, at most MAX_EXTEND steps past the grid
        top = max((v for v in known if v), default=None)
        if top is None or top >= pos_grid[-1] * step ** MAX_EXTEND / 1.01:
            return DONE
        return _fresh(nice(top * step), known)
    v_in = inside[0]
    below = [v for v in over if v < v_in]
    if not below:  # nothing weaker was over budget
        if v_in == 0 or v_in <= pos_grid[0] / step ** MAX_EXTEND * 1.01:
            return DONE  # plain fine-tuning is within budget, or we went far enough down
        return _fresh(nice(v_in / step), known)
    v_out = below[-1]
    low_end = v_out if v_out > 0 else v_in / step  # plain fine-tuning sits one grid step below the lowest value
    if math.log(v_in / low_end) <= math.log(step) / 2 ** budget.refine_steps * 1.01:
        return DONE
    return _fresh(nice(math.sqrt(v_in * low_end)), known)


def _step(coarse: Sequence[float | None]) -> float:
    pos = [v for v in coarse if v]
    return (pos[-1] / pos[0]) ** (1 / (len(pos) - 1)) if len(pos) > 1 else 10.0


def _fresh(v: float | None, known: Mapping[float | None, Outcome]) -> list[float | None] | str:
    return DONE if v is None or v in known else [v]


def _within(budget: BudgetSpec, o: Outcome) -> bool:
    return o.finished and not o.early_stopped and o.forgetting is not None and o.forgetting <= budget.max_forgetting_points


def _over(budget: BudgetSpec, o: Outcome) -> bool:
    return o.finished and (o.early_stopped or o.forgetting is not None and o.forgetting > budget.max_forgetting_points)


def outcome(results: Mapping[str, Any] | None, budget: BudgetSpec) -> Outcome:
    """A trial's ``Outcome`` from its ``results.json`` (None: it has none, e.g. it failed)."""
    if results is None:
        return Outcome(finished=True)
    s = results.get("summary") or {}
    worst = (s.get("worst_control") or {}).get("delta_zs")
    return Outcome(True, forgetting_points(budget.metric, s.get("mean_delta_zs_controls"), worst),
                   bool((results.get("training") or {}).get("stopped_early")))


def full_grid_size(spec: Any) -> int:
    """Fine-tunes a full grid at the search's final resolution would take over the same range."""
    coarse = grid(spec)
    if coarse == (None,):
        return 1
    pos = [v for v in coarse if v]
    return (len(pos) - 1) * 2 ** spec.budget.refine_steps + 1 + (1 if 0.0 in coarse else 0)


# ---- candidates and the answer ------------------------------------------------------------------------
def candidates(results: Mapping[str, Any], run: str, budget: BudgetSpec) -> list[dict[str, Any]]:
    """The trial itself and each of its WiSE-FT mixes (``θ = (1 − a)·θ0 + a·θ_ft``; a = 0 is the pre-trained
    model with the starting head) as candidates, judged against ``budget``."""
    spec = results.get("spec") or {}
    params = dict((spec.get("method") or {}).get("params") or {})
    s, th = results.get("summary") or {}, results.get("target_head_acc") or {}
    early = bool((results.get("training") or {}).get("stopped_early"))
    own = {"params": params, "wise_ft_alpha": None, "target_acc": th.get("after"),
           "mean_delta_zs_controls": s.get("mean_delta_zs_controls"),
           "worst_delta_zs_control": (s.get("worst_control") or {}).get("delta_zs"), "run": run,
           "target_acc_ci": th.get("after_ci"), "mean_delta_zs_controls_ci": s.get("mean_delta_zs_controls_ci"),
           "early_stopped": early}
    out = [own]
    w = results.get("wise_ft") or {}
    n_test = ((results.get("datasets") or {}).get(results.get("target")) or {}).get("n_test")
    worst = w.get("worst_delta_zs_control") or [None] * len(w.get("alphas") or [])
    for a, acc, mean, wd in zip(w.get("alphas") or [], w.get("target_head_acc") or [],
                                w.get("mean_delta_zs_controls") or [], worst):
        if a >= 1.0:  # the fine-tuned model itself: already the trial's own candidate
            continue
        out.append({"params": params, "wise_ft_alpha": float(a), "target_acc": acc, "mean_delta_zs_controls": mean,
                    "worst_delta_zs_control": wd, "run": run, "target_acc_ci": _wilson(acc, n_test),
                    "mean_delta_zs_controls_ci": None, "early_stopped": early})
    for c in out:
        c["forgetting_points"] = forgetting_points(budget.metric, c["mean_delta_zs_controls"],
                                                   c["worst_delta_zs_control"])
        c["within_budget"] = c["forgetting_points"] is not None and c["forgetting_points"] <= budget.max_forgetting_points
    return out


def _wilson(acc: float | None, n: int | None) -> list[float] | None:
    if acc is None or not n:
        return None
    from .stats import wilson

    return wilson(round(acc * n), n)


def recommend(cands: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, bool]:
    """(the recommended candidate, whether it meets the budget): the most target accuracy within budget
    (ties: less forgetting, then no mixing); else the one that forgets least. A candidate from a trial
    stopped early never meets the budget (a full-length run of that setting was never measured); it is
    shown as the closest only when every trial was stopped early."""
    measured = [c for c in cands if c.get("target_acc") is not None and c.get("forgetting_points") is not None]
    full = [c for c in measured if not c.get("early_stopped")]
    inside = [c for c in full if c.get("within_budget")]
    if inside:
        return max(inside, key=lambda c: (c["target_acc"], -c["forgetting_points"], c["wise_ft_alpha"] is None)), True
    pool = full or measured
    if pool:
        return min(pool, key=lambda c: (c["forgetting_points"], -c["target_acc"])), False
    return None, False


def dedupe_pretrained(cands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep one a = 0 mix: it is the pre-trained model with the starting head, the same for every trial."""
    seen, out = False, []
    for c in cands:
        if c.get("wise_ft_alpha") == 0.0:
            if seen:
                continue
            seen = True
        out.append(c)
    return out


def budget_document(spec: Any, trials: Sequence[tuple[str, Mapping[str, Any]]], *, complete: bool,
                    wall_s: float | None = None, stopped: bool = False) -> dict[str, Any]:
    """The ``budget.json`` document (``ldifs.budget/1``) of a search whose finished trials are ``trials``
    (run folder or job id, results); ``stopped``: the user stopped the search before it was done."""
    b = spec.budget
    cands = dedupe_pretrained([c for run, res in trials for c in candidates(res, run, b)])
    for c in cands:
        c["setting"] = setting_words(spec.method.name, search_param(spec), c)
    rec, met = recommend(cands)
    plain = next((res for _, res in trials if _plain(res, search_param(spec))), None)
    doc = {"schema": SCHEMA, "max_forgetting_points": b.max_forgetting_points, "metric": b.metric,
           "met": met, "recommended": dict(rec) if rec is not None else None, "candidates": cands,
           "search": search_param(spec), "method": spec.method.name, "target": spec.data.target,
           "n_finetunes": len(trials), "n_early_stopped": sum(bool((r.get("training") or {}).get("stopped_early"))
                                                               for _, r in trials),
           "full_grid_finetunes": full_grid_size(spec), "complete": complete, "stopped": stopped, "wall_s": wall_s,
           "target_acc_before": next(((r.get("target_head_acc") or {}).get("before") for _, r in trials), None)}
    doc["sentence"] = sentence(doc, _title(trials, spec.data.target), plain)
    return doc


def _plain(res: Mapping[str, Any], name: str | None) -> bool:
    params = ((res.get("spec") or {}).get("method") or {}).get("params") or {}
    return name is not None and params.get(name) == 0


def _title(trials: Sequence[tuple[str, Mapping[str, Any]]], target: str) -> str:
    for _, res in trials:
        t = ((res.get("datasets") or {}).get(target) or {}).get("title")
        if t:
            return t
    return target


def setting_words(method: str, search: str | None, c: Mapping[str, Any]) -> str:
    """"LDIFS with alpha 316" / "… mixed 50 % with the pre-trained weights" / "the pre-trained model"."""
    if c.get("wise_ft_alpha") == 0.0:
        return "the pre-trained model (no fine-tuning, its starting head)"
    label = {"ldifs": "LDIFS", "l2sp": "L2-SP", "ce": "plain fine-tuning"}.get(method, method)
    words = label
    if search is not None:
        v = (c.get("params") or {}).get(search)
        words = "plain fine-tuning" if v == 0 else f"{label} with {search} {v:g}"
    a = c.get("wise_ft_alpha")
    if a is not None:
        words += f", mixed {a * 100:.0f} % fine-tuned / {100 - a * 100:.0f} % pre-trained (WiSE-FT {a:g})"
    return words


def sentence(doc: Mapping[str, Any], target_title: str, plain: Mapping[str, Any] | None = None) -> str:
    """The answer in one or two plain sentences."""
    b, rec = doc["max_forgetting_points"], doc.get("recommended")
    what = "mean zero-shot" if doc["metric"] == "mean_zs_controls" else "worst zero-shot"
    if rec is None:
        return f"No trial has finished with measurable forgetting yet (budget: {b:g} points of {what} accuracy)."
    if rec.get("early_stopped"):
        words = setting_words(doc["method"], doc.get("search"), rec)
        return (f"No setting tried stays within a {b:g}-point budget: every trial already forgot more than the "
                f"budget part-way through and was stopped early; the closest, {words}, had forgotten "
                f"{rec['forgetting_points']:.1f} points by then. Try a larger budget or a stronger setting range.")
    words = setting_words(doc["method"], doc.get("search"), rec)
    acc, f = rec["target_acc"] * 100, rec["forgetting_points"]
    if doc["met"]:
        out = (f"Within a {b:g}-point budget, {words} reaches {acc:.1f} % on {target_title} and forgets "
               f"{f:.1f} points ({what} accuracy on the control datasets).")
    else:
        out = (f"No setting tried stays within a {b:g}-point budget; the closest, {words}, forgets {f:.1f} points "
               f"and reaches {acc:.1f} % on {target_title}.")
    if plain is not None:
        pc = candidates(plain, "", BudgetSpec(max_forgetting_points=b, metric=doc["metric"]))[0]
        if pc["target_acc"] is not None and pc["forgetting_points"] is not None:
            when = " (stopped early)" if pc["early_stopped"] else ""
            out += (f" Plain fine-tuning reaches {pc['target_acc'] * 100:.1f} % but forgets "
                    f"{pc['forgetting_points']:.1f} points{when}.")
    return out


def recommended_spec(search_spec: Mapping[str, Any], c: Mapping[str, Any]) -> dict[str, Any]:
    """A plain run spec (no budget block) of candidate ``c`` — what "Use this setting" fills in: the search's
    spec with the candidate's method parameters, and its WiSE-FT mix in the sweep when it is a mix."""
    import copy

    d = copy.deepcopy(dict(search_spec))
    budget = d.pop("budget", None) or {}
    d.setdefault("method", {})["params"] = dict(c.get("params") or {})
    a = c.get("wise_ft_alpha")
    if a is not None:
        d.setdefault("eval", {})["wise_ft_alphas"] = sorted({0.0, float(a), 1.0})
    method = (d.get("method") or {}).get("name", "")
    name = setting_words(method, _searched(method, budget), c)
    pts = budget.get("max_forgetting_points")
    d["name"] = (name[:1].upper() + name[1:] + (f" (best within {pts:g} points)" if pts else ""))[:120]
    return d


def _searched(method: str, budget: Mapping[str, Any]) -> str | None:
    chosen = budget.get("search")
    if chosen == "none":
        return None
    if chosen:
        return chosen
    from .methods import METHODS

    return getattr(METHODS.get(method), "budget_param", None) if method in METHODS else None


# ---- budget.json -----------------------------------------------------------------------------------
CANDIDATE_KEYS = ("params", "wise_ft_alpha", "target_acc", "mean_delta_zs_controls", "worst_delta_zs_control", "run")


def budget_problems(doc: Any) -> list[str]:
    """Every way ``doc`` breaks ``ldifs.budget/1`` (empty = valid)."""
    if not isinstance(doc, dict):
        return ["budget: expected an object"]
    p = []
    if doc.get("schema") != SCHEMA:
        p.append(f"schema: expected {SCHEMA!r}")
    if not isinstance(doc.get("max_forgetting_points"), (int, float)) or doc["max_forgetting_points"] <= 0:
        p.append("max_forgetting_points: expected a number > 0")
    if doc.get("metric") not in METRICS:
        p.append(f"metric: expected one of {', '.join(METRICS)}")
    if not isinstance(doc.get("met"), bool):
        p.append("met: expected true or false")
    cands = doc.get("candidates")
    if not isinstance(cands, list):
        return p + ["candidates: expected a list"]
    for i, c in enumerate(cands + ([doc["recommended"]] if doc.get("recommended") is not None else [])):
        where = f"candidates[{i}]" if i < len(cands) else "recommended"
        p += _candidate_problems(c, where)
    if doc.get("recommended") is not None and doc["recommended"] not in cands:
        p.append("recommended: expected one of the candidates")
    return p


def _candidate_problems(c: Any, where: str) -> list[str]:
    if not isinstance(c, dict):
        return [f"{where}: expected an object"]
    p = [f"{where}.{k}: missing" for k in CANDIDATE_KEYS if k not in c]
    if not isinstance(c.get("params"), dict):
        p.append(f"{where}.params: expected an object")
    a = c.get("wise_ft_alpha")
    if a is not None and not (isinstance(a, (int, float)) and 0 <= a <= 1):
        p.append(f"{where}.wise_ft_alpha: expected a number from 0 to 1 or null")
    for k, lo in (("target_acc", 0.0), ("mean_delta_zs_controls", -1.0), ("worst_delta_zs_control", -1.0)):
        v = c.get(k)
        if v is not None and not (isinstance(v, (int, float)) and math.isfinite(v) and lo <= v <= 1.0):
            p.append(f"{where}.{k}: expected a fraction or null")
    if not isinstance(c.get("run"), str):
        p.append(f"{where}.run: expected a run folder or job id")
    return p


def write_budget(path: str | Path, doc: Mapping[str, Any]) -> Path:
    """Check ``doc`` against ``ldifs.budget/1`` and write it atomically."""
    from .files import atomic_write_json

    problems = budget_problems(doc)
    if problems:
        raise ValueError("budget.json does not match ldifs.budget/1: " + "; ".join(problems))
    return atomic_write_json(Path(path), dict(doc))
