"""One story per run: the headline, the summary cards and the verdict, all from the same numbers.

The target is told by the accuracy of the trained classifier (what fine-tuning optimises; zero-shot
when a run has none), the forgetting by the mean change of zero-shot accuracy on the control datasets.
Where ``results.json`` carries 95 % intervals (``*_ci``), a change whose interval covers 0 is called
"within noise"; small test sets are named; a dataset whose zero-shot accuracy is not measurable
(``zs_note``) is left out of every mean and named with its reason, never shown as a number.
Old results without intervals still read (without the noise words).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from . import text
from .text import GLOSSARY, _ok, html_escape, md_escape, pct, points

SMALL_TEST = 200  # fewer test images than this: a few images more or less move the accuracy visibly
NOISE_WORDS = "within noise"


# ---- reading results ------------------------------------------------------------------------------
def ci(x: Any) -> tuple[float, float] | None:
    """A ``[lo, hi]`` interval, or None when absent or malformed."""
    if isinstance(x, (list, tuple)) and len(x) == 2 and all(_ok(v) for v in x) and x[0] <= x[1]:
        return float(x[0]), float(x[1])
    return None


def covers_zero(interval: tuple[float, float] | None) -> bool:
    return interval is not None and interval[0] <= 0.0 <= interval[1]


def interval_points(interval: tuple[float, float] | None) -> str:
    """'95 % interval −7.1 to −4.9 points' (empty when there is no interval)."""
    if interval is None:
        return ""
    return f"95 % interval {points(interval[0])} to {points(interval[1])} points"


def title_of(results: Mapping[str, Any], key: str) -> str:
    entry = (results.get("datasets") or {}).get(key) or {}
    return str(entry.get("title") or key)


def zs_note(entry: Mapping[str, Any]) -> str | None:
    """Why zero-shot accuracy is not a number for this dataset (None when it is measurable)."""
    note = entry.get("zs_note")
    return str(note) if note else None


def target_numbers(results: Mapping[str, Any]) -> dict[str, Any]:
    """The target's before/after with intervals, and which measure they are ('trained classifier' or
    'zero-shot'). The headline, the cards, the table and the compare charts all read this."""
    head = results.get("target_head_acc") or {}
    if _ok(head.get("before")) and _ok(head.get("after")):
        return {"measure": "trained classifier", "before": head["before"], "after": head["after"],
                "before_ci": ci(head.get("before_ci")), "after_ci": ci(head.get("after_ci")),
                "delta_ci": ci(head.get("delta_ci"))}
    entry = (results.get("datasets") or {}).get(results.get("target")) or {}
    b, a = (entry.get("before") or {}).get("zs_acc"), (entry.get("after") or {}).get("zs_acc")
    return {"measure": "zero-shot", "before": b if _ok(b) else None, "after": a if _ok(a) else None,
            "before_ci": ci((entry.get("before") or {}).get("zs_acc_ci")),
            "after_ci": ci((entry.get("after") or {}).get("zs_acc_ci")), "delta_ci": ci(entry.get("delta_zs_ci"))}


def target_accuracy(results: Mapping[str, Any]) -> tuple[float | None, float | None]:
    t = target_numbers(results)
    return t["before"], t["after"]


def _delta(entry: Mapping[str, Any], metric: str) -> float | None:
    b = (entry.get("before") or {}).get(metric)
    a = (entry.get("after") or {}).get(metric)
    return a - b if _ok(a) and _ok(b) else None


def forgetting_summary(results: Mapping[str, Any], metric: str = "zs_acc") -> dict[str, Any]:
    """Mean change over the control datasets where both sides exist, the worst one, and the gaps.

    Computed from ``datasets`` (not ``summary``) so the sentence and the charts always agree;
    ``unmeasurable`` maps a control to the reason its zero-shot accuracy is not a number.
    """
    deltas: dict[str, float] = {}
    missing: list[str] = []
    unmeasurable: dict[str, str] = {}
    for key, entry in (results.get("datasets") or {}).items():
        entry = entry or {}
        if entry.get("role") in ("target", "sequence") or key == results.get("target"):
            continue  # forgetting is measured on controls only, not on tasks fine-tuned on
        d = _delta(entry, metric)
        if d is not None:
            deltas[key] = d
        elif metric == "zs_acc" and zs_note(entry):
            unmeasurable[key] = zs_note(entry) or ""
        else:
            missing.append(key)
    mean = sum(deltas.values()) / len(deltas) if deltas else None
    worst = min(deltas, key=deltas.get) if deltas else None  # type: ignore[arg-type]
    summary = results.get("summary") or {}
    mean_ci = ci(summary.get(f"mean_delta_{metric.split('_')[0]}_controls_ci")) if mean is not None else None
    worst_ci = ci(((results.get("datasets") or {}).get(worst) or {}).get(f"delta_{metric.split('_')[0]}_ci")) \
        if worst else None
    return {"mean": mean, "n": len(deltas), "worst": worst, "worst_delta": deltas.get(worst) if worst else None,
            "missing": missing, "deltas": deltas, "unmeasurable": unmeasurable, "mean_ci": mean_ci,
            "worst_ci": worst_ci}


def small_test_splits(results: Mapping[str, Any]) -> dict[str, int | None]:
    """Datasets whose test split has fewer than ``SMALL_TEST`` images → their size (None if unknown)."""
    out: dict[str, int | None] = {}
    datasets = results.get("datasets") or {}
    for key, entry in datasets.items():
        n = (entry or {}).get("n_test")
        if isinstance(n, int) and not isinstance(n, bool) and 0 < n < SMALL_TEST:
            out[key] = n
    for key in (results.get("summary") or {}).get("small_test_splits") or []:
        if key in datasets:
            out.setdefault(str(key), None)
    return out


# ---- the CE reference ----------------------------------------------------------------------------------
def matches_reference(results: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    """``other`` is a plain fine-tuning (CE) run on the same target and model as ``results``."""
    spec, ospec = results.get("spec") or {}, other.get("spec") or {}
    return (str(other.get("method") or (ospec.get("method") or {}).get("name")) == "ce"
            and other.get("target") == results.get("target")
            and ospec.get("backbone") == spec.get("backbone"))


def kept_share(results: Mapping[str, Any], reference: Mapping[str, Any] | None) -> float | None:
    """How much of what the CE reference lost this run kept (1 = lost nothing, 0 = lost as much)."""
    if not reference or results.get("method") == "ce":
        return None
    mine, ref = forgetting_summary(results)["mean"], forgetting_summary(reference)["mean"]
    if mine is None or ref is None or ref > -0.005:  # CE lost (almost) nothing: no share to speak of
        return None
    return max(min(1.0 - mine / ref, 1.0), -9.99)


def reference_sentence(results: Mapping[str, Any], reference: Mapping[str, Any] | None,
                       difference: Mapping[str, Any] | None = None) -> str:
    """How this run's forgetting compares with the CE reference's, and (``difference``: the
    ``compare_runs`` result of this run minus the reference) whether that gap is more than noise."""
    share = kept_share(results, reference)
    if share is None or reference is None:
        return ""
    ref_mean = forgetting_summary(reference)["mean"]
    if share < 0:
        out = f"Forgot more than plain fine-tuning on the same target and model ({points(ref_mean)} points)."
    else:
        out = (f"Kept {share * 100:.0f} % of what plain fine-tuning lost on the same target and model "
               f"({points(ref_mean)} points).")
    extra = difference_sentence(difference, "plain fine-tuning")
    return f"{out} {extra}" if extra else out


def difference_sentence(difference: Mapping[str, Any] | None, other: str, metric: str = "zs") -> str:
    """'On the same test images it forgot 27.7 points less than <other> (95 % interval 26.7 to 28.8).',
    or that the difference is within noise; empty when the two runs could not be paired."""
    cell = ((difference or {}).get("controls") or {}).get(metric) or {}
    interval = ci(cell.get("ci"))
    if interval is None or not _ok(cell.get("diff")):
        return ""
    span = f"95 % interval {points(interval[0])} to {points(interval[1])} points"
    if covers_zero(interval):
        return f"On the same test images, the difference from {other} is {NOISE_WORDS} ({span})."
    more_less = "less" if cell["diff"] > 0 else "more"
    return (f"On the same test images it forgot {points(cell['diff'], sign=False)} points {more_less} "
            f"than {other} on average ({span}).")


# ---- the headline -----------------------------------------------------------------------------------------
def _target_clause(results: Mapping[str, Any], em) -> str:
    tname = title_of(results, results.get("target") or "") if results.get("target") else "the target"
    t = target_numbers(results)
    before, after = t["before"], t["after"]
    what = "the accuracy of its trained classifier" if t["measure"] == "trained classifier" else \
        "its zero-shot accuracy"
    if before is not None and after is not None:
        noise = f" ({NOISE_WORDS})" if covers_zero(t["delta_ci"]) else ""
        if abs(after - before) < 5e-4:
            return f"Fine-tuning on {em(tname)} kept {what} at {pct(after)}{noise}"
        verb = "raised" if after > before else "lowered"
        return f"Fine-tuning on {em(tname)} {verb} {what} from {pct(before)} to {pct(after)}{noise}"
    if after is not None:
        return f"After fine-tuning on {em(tname)} {what} is {pct(after)}"
    return f"Fine-tuning on {em(tname)}: the target accuracy was not measured"


def _forgetting_clause(results: Mapping[str, Any], em) -> str:
    s = forgetting_summary(results)
    if s["n"] == 0:
        gaps = len(s["missing"]) + len(s["unmeasurable"])
        return ("no other datasets were measured, so forgetting is unknown" if not gaps
                else f"forgetting was not measured on the {gaps} other datasets")
    others = f"{s['n']} other dataset" + ("s" if s["n"] != 1 else "")
    mean = s["mean"]
    if covers_zero(s["mean_ci"]):
        clause = (f"on the {others} its zero-shot accuracy changed by {points(mean)} points on average, "
                  f"{NOISE_WORDS} ({interval_points(s['mean_ci'])})")
    elif abs(mean) < 5e-4:
        clause = f"the model held steady on the {others} (average change ±0.0 points)"
    else:
        verb = "lost" if mean < 0 else "gained"
        clause = f"the model {verb} on average {points(abs(mean), sign=False)} points on the {others}"
        if s["mean_ci"]:
            clause += f" ({interval_points(s['mean_ci'])})"
    wd = s["worst_delta"]
    if s["n"] > 1 and wd is not None and wd < -5e-4:
        clause += f", worst {em(title_of(results, s['worst']))} {points(wd)}"
        if covers_zero(s["worst_ci"]):
            clause += f" ({NOISE_WORDS})"
    if s["missing"]:
        clause += f" ({len(s['missing'])} more not measured)"
    return clause


def merge_forgetting(results: Mapping[str, Any], esc: Any = md_escape) -> str:
    """A merge's forgetting next to each of its runs' (each over its own controls), and where λ was chosen;
    ``esc`` escapes the names for the markup (Markdown by default). Empty for anything that is not a merge."""
    m = results.get("merge")
    if not isinstance(m, Mapping) or not m.get("tasks"):
        return ""
    own = ", ".join(f"{points(t.get('run_mean_delta_zs_controls'))} ({esc(t.get('dataset'))} run)"
                    for t in m["tasks"] if isinstance(t, Mapping))
    merged = points((results.get("summary") or {}).get("mean_delta_zs_controls"))
    return (f"Mean zero-shot change on the controls: {merged} points for the merge; {own} in the runs (each over "
            f"its own controls). λ chosen on {esc(m.get('selected_on'))} images.")


def _merge_clause(merge: Mapping[str, Any], em) -> str:
    """'Merging the runs on *Quadrant* and *Count* (task arithmetic, λ = 0.4): their classifiers score 95 %
    and 90 % on the merged model (100 % and 98 % in their own runs)'."""
    tasks = [t for t in merge.get("tasks") or [] if isinstance(t, Mapping)]
    names = [em(str(t.get("title") or t.get("dataset") or "?")) for t in tasks]
    joined = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    how = str(merge.get("method") or "").replace("_", " ")
    lam = merge.get("chosen_lambda")
    lam_text = f", λ = {lam:g}" if isinstance(lam, (int, float)) else ""
    merged = " and ".join(pct(t.get("merged")) for t in tasks)
    own = " and ".join(pct(t.get("run_after")) for t in tasks)
    who = "their classifiers score" if len(tasks) > 1 else "its classifier scores"
    return f"Merging the runs on {joined} ({how}{lam_text}): {who} {merged} on the merged model ({own} in their own runs)"


def headline(results: Mapping[str, Any], markup: str = "md",
             reference: Mapping[str, Any] | None = None, difference: Mapping[str, Any] | None = None) -> str:
    """The report's first sentence(s), for someone who reads only this; ``markup`` is "md" or "html".

    "Fine-tuning on *Quadrant* raised the accuracy of its trained classifier from 31 % to 97 %; the
    model lost on average 4.2 points on the 5 other datasets, worst *Colour* −11.0."
    """
    def em(raw: str) -> str:
        return f"<em>{html_escape(raw)}</em>" if markup == "html" else f"*{md_escape(raw)}*"

    first, second = _target_clause(results, em), _forgetting_clause(results, em)
    seq = (results.get("continual") or {}).get("sequence") or []
    if len(seq) > 1:  # say what came before the last task, and where the per-task story is
        first = f"Continual fine-tuning on {' → '.join(em(title_of(results, k)) for k in seq)}. Its last stage: " \
            + first[0].lower() + first[1:]
        second += "; the accuracy matrix below shows every task after every stage"
    if isinstance(results.get("merge"), Mapping) and (results["merge"].get("tasks")):
        first = _merge_clause(results["merge"], em)
    out = f"{first}; {second}."
    for extra in (reference_sentence(results, reference, difference), *notes(results, em)):
        if extra:
            out += " " + extra
    return out


def notes(results: Mapping[str, Any], em=None) -> list[str]:
    """Warnings a reader needs next to the numbers: small test sets, unmeasurable zero-shot."""
    em = em or (lambda raw: f"*{md_escape(raw)}*")
    out = []
    small = small_test_splits(results)
    if small:
        items = ", ".join(em(title_of(results, k)) + (f" ({n} images)" if n else "") for k, n in small.items())
        out.append(f"Small test set{'s' if len(small) > 1 else ''}: {items}; a few images more or less move "
                   f"{'their' if len(small) > 1 else 'its'} accuracy by several points.")
    gaps = forgetting_summary(results)["unmeasurable"]
    target_entry = (results.get("datasets") or {}).get(results.get("target")) or {}
    if zs_note(target_entry):
        gaps = {results.get("target"): zs_note(target_entry), **gaps}
    if gaps:
        reasons = sorted(set(gaps.values()))
        out.append(f"Zero-shot accuracy is not measurable on {', '.join(em(title_of(results, k)) for k in gaps)} "
                   f"({'; '.join(reasons)}), so it is left out.")
    return out


# ---- the verdict and the cards ----------------------------------------------------------------------------
# (lowest mean change on the controls, in points, that still earns the label), best first
VERDICTS: tuple[tuple[float, str], ...] = (
    (-1.0, "Little or no forgetting"),
    (-5.0, "Some forgetting"),
    (-15.0, "Clear forgetting"),
    (-float("inf"), "Strong forgetting"),
)


def verdict(results: Mapping[str, Any]) -> str:
    """A few-word reading of the mean forgetting (``VERDICTS``); "within noise" when its interval covers 0."""
    s = forgetting_summary(results)
    if s["mean"] is None:
        return "Unknown"
    if covers_zero(s["mean_ci"]):
        return f"No clear forgetting ({NOISE_WORDS})"
    m = s["mean"] * 100
    return next(label for floor, label in VERDICTS if m >= floor)


def stat_cards(results: Mapping[str, Any], reference: Mapping[str, Any] | None = None,
               difference: Mapping[str, Any] | None = None) -> list[tuple[str, str, str, str, str]]:
    """(label, value, note, tooltip, kind) for the summary cards, from the same numbers as the headline."""
    t = target_numbers(results)
    s = forgetting_summary(results)
    label = "Target accuracy" + (" (trained classifier)" if t["measure"] == "trained classifier" else " (zero-shot)")
    t_note = f"{NOISE_WORDS}" if covers_zero(t["delta_ci"]) else (
        f"change {interval_points(t['delta_ci'])}" if t["delta_ci"] else "")
    worst_value = "—"
    if s["worst"]:
        worst_value = (f"{title_of(results, s['worst'])} {points(s['worst_delta'])}"
                       if (s["worst_delta"] or 0) < -0.0005 else "none got worse")
    bad = (s["mean"] or 0) < -0.0005 and not covers_zero(s["mean_ci"])
    return [
        (label, f"{pct(t['before'])} → {pct(t['after'])}", t_note, GLOSSARY["target_acc"], "target"),
        ("Average change on controls", f"{points(s['mean'])} points" if s["mean"] is not None else "not measured",
         NOISE_WORDS if covers_zero(s["mean_ci"]) else interval_points(s["mean_ci"]),
         GLOSSARY["mean_forgetting"], "bad" if bad else "good"),
        ("Worst control", worst_value, NOISE_WORDS if covers_zero(s["worst_ci"]) else interval_points(s["worst_ci"]),
         GLOSSARY["worst"], "bad" if (s["worst_delta"] or 0) < -0.0005 and not covers_zero(s["worst_ci"]) else "good"),
        ("Verdict", verdict(results), reference_sentence(results, reference, difference), GLOSSARY["verdict"],
         "neutral"),
    ]


def _stat(aggregate: Mapping[str, Any], *path: str) -> Mapping[str, Any] | None:
    node: Any = aggregate
    for p in path:
        node = node.get(p) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) and _ok(node.get("mean")) else None


def mean_sd(values: Sequence[float | None]) -> dict[str, float] | None:
    """Mean and sample sd of the numbers among ``values`` (sd 0 for a single number), None when none."""
    nums = [float(v) for v in values if _ok(v)]
    if not nums:
        return None
    m = sum(nums) / len(nums)
    sd = (sum((v - m) ** 2 for v in nums) / (len(nums) - 1)) ** 0.5 if len(nums) > 1 else 0.0
    return {"mean": m, "sd": sd}


def mean_sd_points(stat: Mapping[str, Any] | None) -> str:
    """'+61.0 ± 1.2' (points) from ``ldifs_engine.stats.mean_sd``'s dict; '—' without a mean."""
    if not stat:
        return "—"
    sd = stat.get("sd") if _ok(stat.get("sd")) else 0.0
    return f"{points(stat['mean'])} ± {points(sd, sign=False)}"


def group_line(aggregate: Mapping[str, Any] | None, n: int) -> str:
    """'Repeated over 3 seeds: target +61.0 ± 1.2 points, controls −6.0 ± 0.8 points (mean ± sd).'

    ``aggregate`` is ``tasks.api.group_results(...)["aggregate"]`` (``ldifs_engine.stats.aggregate_runs``)."""
    if not aggregate or n < 2:
        return ""
    parts = []
    for path, what in ((("target_head_acc", "gain"), "target"), (("summary", "mean_delta_zs_controls"), "controls")):
        stat = _stat(aggregate, *path)
        if stat:
            parts.append(f"{what} {mean_sd_points(stat)} points")
    if not parts:
        return ""
    return f"Repeated over {n} seeds: " + ", ".join(parts) + " (mean ± sd)."


__all__: Sequence[str] = ("headline", "verdict", "stat_cards", "forgetting_summary", "target_numbers", "notes",
                          "small_test_splits", "kept_share", "reference_sentence", "difference_sentence", "group_line",
                          "ci", "budget_answer")


def budget_answer(search: Mapping[str, Any]) -> str:
    """The forgetting-budget answer as Markdown: the sentence, how far the search got, what it cost."""
    doc = search.get("document") or {}
    trials = search.get("trials") or []
    running = sum(t.get("state") in ("QUEUED", "RUNNING", "INTERRUPTED") for t in trials)
    lines = [f"**{text.md_escape(doc.get('sentence', ''))}**"]
    status = ("Search finished" if search.get("complete") else
              "Search stopped by you; the best of the trials that finished" if search.get("stopped") else
              f"Search still running ({running} trial{'s' if running != 1 else ''} waiting or running); the answer "
              "so far")
    n = doc.get("n_finetunes", 0)
    lines.append(f"{status}: {n} fine-tune{'s' if n != 1 else ''} ({doc.get('n_early_stopped', 0)} stopped early), "
                 f"where a full grid at the same resolution takes {doc.get('full_grid_finetunes', '?')}.")
    rec = doc.get("recommended")
    if rec is not None and rec.get("target_acc_ci"):
        lo, hi = rec["target_acc_ci"]
        ci = rec.get("mean_delta_zs_controls_ci")
        extra = (f"; mean control change {rec['mean_delta_zs_controls'] * 100:+.1f} "
                 f"[{ci[0] * 100:+.1f}, {ci[1] * 100:+.1f}] points" if ci and rec.get("mean_delta_zs_controls")
                 is not None else "")
        lines.append(f"Accuracy on the target {rec['target_acc'] * 100:.1f} % [{lo * 100:.1f}, {hi * 100:.1f}]"
                     f"{extra} (95 % intervals).")
    return "  \n".join(lines)
