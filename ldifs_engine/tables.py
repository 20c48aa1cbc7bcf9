"""Plain-text tables of results for the terminal (``ldifs train``, ``ldifs eval``, ``ldifs demo``)."""
from __future__ import annotations


def summary_table(results_by_method: dict) -> str:
    """Before/after table of one or several runs (target head, zero-shot per dataset, mean changes),
    with each accuracy's 95 % Wilson half-width (±) and each mean change's 95 % bootstrap interval."""
    lines = []
    first = next(iter(results_by_method.values()))
    keys = [k for k in first["datasets"] if k != first["target"]]
    name_w = max(8, *(len(n) + 1 for n in results_by_method))
    lines.append(f"{'method':<{name_w}}{'target acc':>13}" + "".join(f"{k[:10]:>12}" for k in keys)
                 + f"{'mean ΔZS [95% CI]':>22}{'mean ΔLP [95% CI]':>22}")
    th = first["target_head_acc"]
    lines.append(f"{'(before)':<{name_w}}{_pm(th['before'], th.get('before_ci')):>13}" + "".join(
        f"{_pm(first['datasets'][k]['before']['zs_acc'], first['datasets'][k]['before'].get('zs_acc_ci')):>12}"
        for k in keys))
    for name, r in results_by_method.items():
        s, th = r["summary"], r["target_head_acc"]
        row = f"{name:<{name_w}}{_pm(th['after'], th.get('after_ci')):>13}" + "".join(
            f"{_pm(r['datasets'][k]['after']['zs_acc'], r['datasets'][k]['after'].get('zs_acc_ci')):>12}" for k in keys)
        row += (f"{_pts_ci(s['mean_delta_zs_controls'], s.get('mean_delta_zs_controls_ci')):>22}"
                f"{_pts_ci(s['mean_delta_lp_controls'], s.get('mean_delta_lp_controls_ci')):>22}")
        lines.append(row)
    if any(r["target_head_acc"].get("after_ci") for r in results_by_method.values()):
        lines.append("accuracy % ± the wider side of its 95 % Wilson interval; [lo, hi]: 95 % paired bootstrap over "
                     "the same test images (within noise when it contains 0)")
    notes = {k: d["zs_note"] for r in results_by_method.values() for k, d in r["datasets"].items() if d.get("zs_note")}
    for k, note in notes.items():
        lines.append(f"zero-shot on {k} is not measurable: {note}")
    small = sorted({k for r in results_by_method.values() for k in (r["summary"].get("small_test_splits") or [])})
    if small:
        lines.append(f"small test split (< 200 images, numbers are noisy): {', '.join(small)}")
    return "\n".join(lines)


def repeats_line(agg: dict) -> str:
    """``mean ± sd over N seeds`` of the headline numbers of ``stats.aggregate_runs``."""
    def pm(stat: dict, pct: bool) -> str:
        if stat["mean"] is None:
            return "—"
        m, sd = 100 * stat["mean"], 100 * stat["sd"] if stat["sd"] is not None else None
        text = f"{m:.1f}" if pct else f"{m:+.1f}"
        return text + (f" ± {sd:.1f}" if sd is not None else "") + ("%" if pct else " points")

    s = agg["summary"]
    return (f"mean ± sd over {agg['n_runs']} seeds ({', '.join(map(str, agg['seeds']))}): "
            f"target {pm(agg['target_head_acc']['after'], True)} · mean ΔZS on controls "
            f"{pm(s['mean_delta_zs_controls'], False)} · mean ΔLP {pm(s['mean_delta_lp_controls'], False)}")


def _pm(v, ci) -> str:
    """``45.5 ±2.6``: a percentage and the wider side of its interval (— when not measurable)."""
    if v is None:
        return "—"
    if not ci:
        return f"{100 * v:.1f}%"
    return f"{100 * v:.1f} ±{100 * max(v - ci[0], ci[1] - v):.1f}"


def _pts_ci(v, ci) -> str:
    if v is None:
        return "—"
    if not ci:
        return f"{100 * v:+.1f}"
    return f"{100 * v:+.1f} [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]"


def continual_table(results: dict) -> str:
    """A continual run's accuracy matrix (rows: after each stage; columns: the tasks) and summaries."""
    c = results["continual"]
    tasks = c["sequence"]
    lines = [f"{'after':<16}" + "".join(f"{t[:10]:>11}" for t in tasks)]
    for i, row in enumerate(c["task_acc"]):
        label = "(pre-trained)" if i == 0 else f"{i}. {tasks[i - 1]}"
        lines.append(f"{label[:16]:<16}" + "".join(f"{_pct(v):>11}" for v in row))
    lines.append(f"Transfer {_pct(c['transfer'])} · Avg {_pct(c['avg'])} · Last {_pct(c['last'])} "
                 "(learned tasks: their trained head; tasks not yet learned: zero-shot)")
    if c.get("transfer_note"):
        lines.append(c["transfer_note"])
    return "\n".join(lines)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _pts(v) -> str:
    return "—" if v is None else f"{100 * v:+.1f}"


def fmt_metric(v) -> str:
    return "—" if v is None else f"{v:.3f}"
