"""Plain-text tables of results for the terminal (``ldifs train``, ``ldifs eval``, ``ldifs demo``)."""
from __future__ import annotations


def summary_table(results_by_method: dict) -> str:
    """Before/after table of one or several runs (ZS accuracy per dataset, target head, means)."""
    lines = []
    first = next(iter(results_by_method.values()))
    keys = [k for k in first["datasets"] if k != first["target"]]
    head = f"{'method':<8}{'target acc':>16}" + "".join(f"{k[:10]:>11}" for k in keys) + f"{'mean ΔZS':>10}{'mean ΔLP':>10}"
    lines.append(head)
    before = f"{'(before)':<8}{_pct(first['target_head_acc']['before']):>16}" + "".join(
        f"{_pct(first['datasets'][k]['before']['zs_acc']):>11}" for k in keys)
    lines.append(before)
    for name, r in results_by_method.items():
        s = r["summary"]
        row = f"{name:<8}{_pct(r['target_head_acc']['after']):>16}" + "".join(
            f"{_pct(r['datasets'][k]['after']['zs_acc']):>11}" for k in keys)
        row += f"{_pts(s['mean_delta_zs_controls']):>10}{_pts(s['mean_delta_lp_controls']):>10}"
        lines.append(row)
    return "\n".join(lines)


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
    return "\n".join(lines)


def _pct(v) -> str:
    return "—" if v is None else f"{100 * v:.1f}%"


def _pts(v) -> str:
    return "—" if v is None else f"{100 * v:+.1f}"


def fmt_metric(v) -> str:
    return "—" if v is None else f"{v:.3f}"
