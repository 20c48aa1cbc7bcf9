"""Results → plotly figures. Pure functions over plain dicts (``results.json``, step events): no gradio.

Conventions: accuracies arrive as fractions and are drawn as percent / percentage points; a value
that was not computed is ``None`` and is drawn as a gap, never as a zero; every user-supplied
string (dataset titles, run names) goes through ``html_escape`` before it becomes a label or hover.
"""
from __future__ import annotations

import hashlib
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import story, text
from .text import html_escape

BEFORE = "#6b7280"  # hollow grey circle: ≥ 4.5:1 on white
BETTER = "#1a7f37"
WORSE = "#c62828"
SAME = "#1d4ed8"  # "after" with no change: still a filled, coloured dot (never the grey of "before")
NEUTRAL = "#595959"
TARGET = "#3366cc"
# Okabe–Ito + Tableau mix: distinguishable, colour-blind friendly for the first eight.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000",
           "#8C564B", "#17BECF", "#BCBD22", "#7F7F7F")
SYMBOLS = ("circle", "diamond", "square", "triangle-up", "x", "star", "cross", "triangle-down")
METRIC_NAMES = {"zs_acc": "Zero-shot accuracy", "lp_acc": "Linear-probe accuracy"}
_FONT = dict(family="Inter, system-ui, -apple-system, Segoe UI, sans-serif", size=13)


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _pctv(x: Any) -> float | None:
    v = _num(x)
    return None if v is None else v * 100.0


def _layout(fig: go.Figure, title: str, height: int, subtitle: str = "", **kw: Any) -> go.Figure:
    """The common look; ``subtitle`` (pre-escaped, lines joined by ``<br>``) goes under the title and
    makes room for itself."""
    lines = subtitle.count("<br>") + 1 if subtitle else 0
    head = dict(text=title, x=0.0, xanchor="left", font=dict(size=16), automargin=True)
    if subtitle:
        head["subtitle"] = dict(text=subtitle, font=dict(size=12, color=NEUTRAL))
    base: dict[str, Any] = dict(
        title=head,
        template="plotly_white", height=height, font=_FONT, margin=dict(l=10, r=20, t=60, b=70),
        hoverlabel=dict(font_size=12),
        # The legend goes under the plot: above it, it ran into the title and the toolbar on a phone.
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0.0, xanchor="left"),
    )
    base["height"] = height + 17 * lines
    if lines:
        base["margin"] = dict(base["margin"], t=60 + 17 * lines)
    fig.update_layout(**{**base, **kw})
    fig.update_xaxes(automargin=True)  # axis titles are never clipped on a narrow screen
    fig.update_yaxes(automargin=True)
    return fig


def warm_up() -> None:
    """Build and serialise one figure of each kind once. Plotly loads its validators and templates
    lazily; on a busy machine the first figure of a process took 15 s, which would otherwise be paid by
    the first user who selects a run."""
    fig = make_subplots(rows=2, cols=1)
    fig.add_trace(go.Scatter(x=[0], y=[0], error_x=dict(array=[1])), row=1, col=1)
    fig.add_trace(go.Bar(x=[1], y=["a"], orientation="h"), row=2, col=1)
    fig.add_trace(go.Heatmap(z=[[0]]))
    _layout(fig, "warm-up", 200).to_json()


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank chart that says why it is blank (better than an empty box)."""
    # One invisible point: a figure without traces is drawn by some front-ends as "no plot" at all.
    fig = go.Figure(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(opacity=0), hoverinfo="skip",
                               showlegend=False))
    fig.add_annotation(text=html_escape(message), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=14, color=NEUTRAL))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, "", height)


# ---- one run: the per-dataset table ---------------------------------------------------------------
@dataclass(frozen=True)
class DatasetRow:
    """One dataset of a run, metrics as fractions (None = not computed)."""

    key: str
    label: str  # escaped, unique display label
    title: str  # raw title (for tables that escape themselves)
    role: str
    before: Mapping[str, Any]
    after: Mapping[str, Any]
    entry: Mapping[str, Any] = field(default_factory=dict)

    def delta(self, metric: str) -> float | None:
        b, a = _num(self.before.get(metric)), _num(self.after.get(metric))
        return None if b is None or a is None else a - b

    def delta_ci(self, metric: str) -> tuple[float, float] | None:
        return story.ci(self.entry.get(f"delta_{metric.split('_')[0]}_ci"))

    def side_ci(self, side: str, metric: str) -> tuple[float, float] | None:
        return story.ci((self.before if side == "before" else self.after).get(f"{metric}_ci"))

    def gap(self, metric: str) -> str:
        """Why there is no number: 'not measurable: <reason>' or 'not measured'."""
        note = self.entry.get("zs_note") if metric.startswith("zs") else None
        return f"not measurable: {note}" if note else "not measured"


def dataset_rows(results: Mapping[str, Any], sort_metric: str = "zs_acc") -> list[DatasetRow]:
    """Target first, then controls from the largest drop to the largest gain; not-measured last."""
    datasets = results.get("datasets") or {}
    target = results.get("target")
    titles = [str((e or {}).get("title") or k) for k, e in datasets.items()]
    rows = []
    for (key, entry), title in zip(datasets.items(), titles):
        entry = entry or {}
        role = "target" if key == target or entry.get("role") == "target" else \
            "sequence" if entry.get("role") == "sequence" else "control"
        label = title if titles.count(title) == 1 else f"{title} ({key})"
        label += {"target": " · target", "sequence": " · learned earlier"}.get(role, "")
        rows.append(DatasetRow(key, html_escape(label), title, role, dict(entry.get("before") or {}),
                               dict(entry.get("after") or {}), dict(entry)))

    def order(r: DatasetRow) -> tuple:
        d = r.delta(sort_metric)
        return (r.role != "target", d is None, d if d is not None else 0.0, r.title)

    return sorted(rows, key=order)


def metric_computed(results: Mapping[str, Any], metric: str) -> bool:
    """Whether any dataset has this metric on either side."""
    for entry in (results.get("datasets") or {}).values():
        for side in ("before", "after"):
            if _num(((entry or {}).get(side) or {}).get(metric)) is not None:
                return True
    return False


# ---- one run: charts -------------------------------------------------------------------------------
def _error(values: Sequence[float | None], cis: Sequence[tuple[float, float] | None], colour: str) -> dict:
    """Asymmetric plotly error bars (in %) from fraction intervals; rows without one get none."""
    plus = [None if v is None or c is None else max(c[1] * 100 - v, 0.0) for v, c in zip(values, cis)]
    minus = [None if v is None or c is None else max(v - c[0] * 100, 0.0) for v, c in zip(values, cis)]
    if all(p is None for p in plus):
        return dict(visible=False)
    return dict(type="data", symmetric=False, array=plus, arrayminus=minus, color=colour, thickness=1.5, width=4)


def _after_colour(delta: float | None, tol: float = 5e-4) -> str:
    if delta is None:
        return SAME
    return BETTER if delta > tol else WORSE if delta < -tol else SAME


def _gap_notes(fig: go.Figure, rows: Sequence[DatasetRow], metric: str) -> str:
    """Mark each row without a number with a short "not measurable" / "not measured" inside the plot,
    from its left edge (a gap row is empty, and the text never runs over the row labels), with
    the full reason on hover; returns the reasons as a wrapped line under the chart's title ("" if none).

    A full reason in the row ran across the row label on a laptop and off the plot on a phone."""
    reasons: list[str] = []
    for r in rows:
        if r.delta(metric) is not None:
            continue
        gap = r.gap(metric)
        short, _, why = gap.partition(": ")
        fig.add_annotation(x=0, xref="x domain", y=r.label, text=html_escape(short), hovertext=html_escape(gap),
                           showarrow=False, xanchor="left", xshift=4, font=dict(color=NEUTRAL, size=11))
        if why:
            reasons.append(f"{r.title}: {why}")
    if not reasons:
        return ""
    return "<br>".join(html_escape(s) for s in textwrap.wrap("Not measurable on " + "; ".join(reasons), 44))


def dumbbell(results: Mapping[str, Any], metric: str = "zs_acc") -> go.Figure:
    """Before → after per dataset: hollow grey circle before, filled dot after (green better, red worse,
    blue unchanged), 95 % intervals as whiskers; unmeasurable values are a gap with the reason."""
    rows = dataset_rows(results, metric)
    if not rows:
        return empty_figure("No datasets in this run's results.")
    y = [r.label for r in rows]
    before = [_pctv(r.before.get(metric)) for r in rows]
    after = [_pctv(r.after.get(metric)) for r in rows]
    seg_x: list[float | None] = []
    seg_y: list[str | None] = []
    for label, b, a in zip(y, before, after):
        if b is not None and a is not None:
            seg_x += [b, a, None]
            seg_y += [label, label, None]
    colours = [_after_colour(r.delta(metric)) for r in rows]
    shown = {c for c, a in zip(colours, after) if a is not None}  # a gap has no "after" colour to explain
    custom = [[text.pct(r.before.get(metric), 1), text.pct(r.after.get(metric), 1), text.points(r.delta(metric))]
              for r in rows]
    name = METRIC_NAMES.get(metric, metric)
    hover = ("<b>%{y}</b><br>Before: %{customdata[0]}<br>After: %{customdata[1]}<br>"
             "Change: %{customdata[2]} points<extra>" + name + "</extra>")
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=seg_x, y=seg_y, mode="lines", line=dict(color="#c7cbd1", width=4),
                             hoverinfo="skip", showlegend=False, connectgaps=False))
    fig.add_trace(go.Scatter(x=before, y=y, mode="markers", name="Before fine-tuning",
                             marker=dict(color=BEFORE, size=12, symbol="circle-open", line=dict(width=2.5)),
                             error_x=_error(before, [r.side_ci("before", metric) for r in rows], BEFORE),
                             customdata=custom, hovertemplate=hover))
    fig.add_trace(go.Scatter(x=after, y=y, mode="markers", name="After fine-tuning", showlegend=False,
                             marker=dict(color=colours, size=13, line=dict(color="white", width=1)),
                             error_x=_error(after, [r.side_ci("after", metric) for r in rows], "#333"),
                             customdata=custom, hovertemplate=hover))
    # The legend names each "after" colour that occurs (one swatch for an array of colours would show
    # only the first row's colour, whatever the others are).
    for colour, words in ((BETTER, "After: better"), (WORSE, "After: worse"), (SAME, "After: no change")):
        if colour in shown:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=words, hoverinfo="skip",
                                     marker=dict(color=colour, size=13)))
    note = _gap_notes(fig, rows, metric)
    fig.update_xaxes(title_text="Accuracy (%)", range=[-2, 102], ticksuffix=" %", automargin=True)
    # The row order is the rows' order, not the order in which the traces first name each row (the
    # target, drawn only by the marker traces when it has no segment, used to sink to the bottom).
    fig.update_yaxes(autorange="reversed", type="category", categoryorder="array", categoryarray=y,
                     automargin=True)
    return _layout(fig, f"{name}: before and after", 140 + 38 * len(rows), subtitle=note)


def delta_bars(results: Mapping[str, Any], metric: str = "zs_acc") -> go.Figure:
    """Change per dataset in percentage points, worst first, green/red by sign, 95 % intervals as whiskers.

    Each value label sits on the free side of the zero line (left of it for a gain, right for a loss):
    a label outside a short bar's end ran over the dataset names on a phone."""
    rows = dataset_rows(results, metric)
    if not rows:
        return empty_figure("No datasets in this run's results.")
    rows = sorted(rows, key=lambda r: (r.delta(metric) is None, r.delta(metric) or 0.0))
    y = [r.label for r in rows]
    x = [None if r.delta(metric) is None else r.delta(metric) * 100 for r in rows]
    cis = [r.delta_ci(metric) for r in rows]
    colours = [NEUTRAL if v is None else BETTER if v > 0.05 else WORSE if v < -0.05 else NEUTRAL for v in x]
    labels = ["" if v is None else text.points(v / 100) for v in x]
    custom = [[text.pct(r.before.get(metric), 1), text.pct(r.after.get(metric), 1),
               "got better" if (v or 0) > 0.05 else "got worse" if (v or 0) < -0.05 else "no change",
               story.interval_points(c) or "no interval"]
              for r, v, c in zip(rows, x, cis)]
    name = METRIC_NAMES.get(metric, metric)
    fig = go.Figure(go.Bar(
        x=x, y=y, orientation="h", marker_color=colours, text=labels, textposition="none", customdata=custom,
        name="Change",
        error_x=dict(type="data", symmetric=False, color="#333", thickness=1.5, width=4,
                     array=[None if v is None or c is None else max(c[1] * 100 - v, 0) for v, c in zip(x, cis)],
                     arrayminus=[None if v is None or c is None else max(v - c[0] * 100, 0) for v, c in zip(x, cis)],
                     visible=any(c is not None for c in cis)),
        hovertemplate="<b>%{y}</b><br>%{customdata[2]}: %{text} points (%{customdata[3]})<br>"
                      "Before %{customdata[0]} → after %{customdata[1]}<extra>" + name + "</extra>",
    ))
    fig.add_trace(go.Scatter(x=[0.0 if v is not None else None for v in x], y=y, mode="text", text=labels,
                             textposition=["middle left" if (v or 0) > 0 else "middle right" for v in x],
                             textfont=dict(color=colours, size=12), hoverinfo="skip", showlegend=False,
                             cliponaxis=False))
    note = _gap_notes(fig, rows, metric)
    fig.add_vline(x=0, line_color="#444", line_width=1)
    ends = [abs(v) for v in x if v is not None] + [abs(c[i]) * 100 for c in cis if c for i in (0, 1)]
    span = max(ends + [1.0]) * 1.15
    fig.update_xaxes(title_text="Change (points)", range=[-span, span], zeroline=False, automargin=True)
    fig.update_yaxes(autorange="reversed", type="category", automargin=True)
    return _layout(fig, f"{name}: change", 130 + 34 * len(rows), showlegend=False, subtitle=note)


def _series(values: Any, n: int) -> list[float | None]:
    vals = list(values or [])[:n]
    vals += [None] * (n - len(vals))
    return [_pctv(v) for v in vals]


def curves(results: Mapping[str, Any]) -> go.Figure:
    """Accuracy vs training step per dataset (zero-shot), plus the target's trained head."""
    c = results.get("curves") or {}
    steps = [s for s in (c.get("steps") or [])]
    if not steps:
        return empty_figure("No evaluations were made during training (evaluations during training = 0).")
    n = len(steps)
    rows = {r.key: r for r in dataset_rows(results)}
    fig = go.Figure()
    head = c.get("target_head_acc")
    if head:
        fig.add_trace(go.Scatter(x=steps, y=_series(head, n), mode="lines+markers", connectgaps=False,
                                 name="Target (trained head)", line=dict(color=TARGET, width=4),
                                 hovertemplate="step %{x}: %{y:.1f} %<extra>Target, trained head</extra>"))
    for i, (key, vals) in enumerate((c.get("zs_acc") or {}).items()):
        row = rows.get(key)
        label = row.label if row else html_escape(key)
        is_target = row is not None and row.role == "target"
        fig.add_trace(go.Scatter(
            x=steps, y=_series(vals, n), mode="lines+markers", connectgaps=False, name=label,
            line=dict(color=PALETTE[i % len(PALETTE)], width=3 if is_target else 2, dash="dot" if is_target else None),
            hovertemplate="step %{x}: %{y:.1f} %<extra>" + label + "</extra>",
        ))
    fig.update_xaxes(title_text="Training step")
    _step_axis(fig, max((s for s in steps if _num(s) is not None), default=None))
    fig.update_yaxes(title_text="Zero-shot accuracy (%)", range=[-2, 102], ticksuffix=" %")
    return _layout(fig, "Accuracy during training", 420)


def wise_ft(results: Mapping[str, Any]) -> go.Figure | None:
    """Target accuracy and mean control change vs the WiSE-FT mixing ratio (None if not computed)."""
    w = results.get("wise_ft")
    if not w or not w.get("alphas"):
        return None
    alphas = [_num(a) for a in w["alphas"]]
    n = len(alphas)
    tgt = _series(w.get("target_head_acc"), n)
    ctl = [None if v is None else v for v in _series(w.get("mean_delta_zs_controls"), n)]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("Target accuracy", "Average change on controls"))
    fig.add_trace(go.Scatter(x=alphas, y=tgt, mode="lines+markers", connectgaps=False, name="Target accuracy",
                             line=dict(color=TARGET, width=3),
                             hovertemplate="mix %{x:.2f}: %{y:.1f} %<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=alphas, y=ctl, mode="lines+markers", connectgaps=False, name="Control change",
                             line=dict(color=WORSE, width=3),
                             hovertemplate="mix %{x:.2f}: %{y:+.1f} points<extra></extra>"), row=2, col=1)
    fig.add_hline(y=0, line_color="#444", line_width=1, row=2, col=1)
    fig.update_xaxes(title_text="Mix (0 = original, 1 = fine-tuned)", row=2, col=1)
    fig.update_yaxes(ticksuffix=" %", row=1, col=1)
    fig.update_yaxes(title_text="points", row=2, col=1)
    return _layout(fig, "WiSE-FT weight mixes", 480, showlegend=False)


def continual_matrix(results: Mapping[str, Any]) -> go.Figure | None:
    """A continual run's accuracy matrix: rows = after each stage, columns = the tasks (None if one task).

    Cells are the trained head's accuracy once a task has been learned (on and below the diagonal) and
    zero-shot accuracy before that."""
    c = results.get("continual")
    if not c or not c.get("sequence") or not c.get("task_acc"):
        return None
    titles = {k: str(((results.get("datasets") or {}).get(k) or {}).get("title") or k) for k in c["sequence"]}
    cols = [html_escape(titles[k]) for k in c["sequence"]]
    rows = ["Pre-trained"] + [f"{i + 1}. after {html_escape(titles[k])}" for i, k in enumerate(c["sequence"])]
    z = [[None if _num(v) is None else _num(v) * 100 for v in row] for row in c["task_acc"]]
    cell = [["" if v is None else f"{v:.1f} %" + (" ●" if 0 < i and j < i else "") for j, v in enumerate(row)]
            for i, row in enumerate(z)]
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, text=cell, texttemplate="%{text}", zmin=0, zmax=100, colorscale="Blues",
        hoverongaps=False, colorbar=dict(title="%"), hovertemplate="<b>%{y}</b><br>%{x}: %{text}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="top")
    title = (f"Accuracy after each stage (● = learned task, its head) · Transfer {text.pct(c.get('transfer'))} · "
             f"Avg {text.pct(c.get('avg'))} · Last {text.pct(c.get('last'))}")
    return _layout(fig, title, 170 + 46 * len(rows), margin=dict(l=10, r=20, t=110, b=20))


MERGE_METHODS = {"task_arithmetic": "task arithmetic", "ties": "TIES"}


def _merge_task_label(t: Mapping[str, Any]) -> str:
    """'Count' for a run's trained head, 'Count (zero-shot)' for a run scored zero-shot (escaped)."""
    title = str(t.get("title") or t.get("dataset") or "?")
    return html_escape(title + ("" if t.get("classifier") in (None, "trained head") else f" ({t['classifier']})"))


def merge_lambdas(results: Mapping[str, Any]) -> go.Figure | None:
    """A merge's λ sweep ("what each λ kept"): top, each run's target scored with that run's own
    classifier on the merged model (test images; dotted, the accuracy in its own run); bottom, the mean
    zero-shot change on the controls; the λ kept marked on both. None for anything that is not a merge."""
    m = results.get("merge")
    if not isinstance(m, Mapping) or not m.get("per_lambda"):
        return None
    points = [p for p in m["per_lambda"] if _num((p or {}).get("lambda")) is not None]
    lams = [_num(p["lambda"]) for p in points]
    tasks = list(m.get("tasks") or [])
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.14, row_heights=[0.62, 0.38],
                        subplot_titles=("Each run's task (own classifier)", "Average change on controls"))
    for a in fig.layout.annotations:  # left, small: centred, the chosen λ's line ran through them
        a.update(x=0.0, xanchor="left", font=dict(size=13))
    for j, t in enumerate(tasks):
        label, colour = _merge_task_label(t), PALETTE[j % len(PALETTE)]
        acc = [_pctv(list(p.get("task_acc") or [])[j]) if j < len(p.get("task_acc") or []) else None for p in points]
        fig.add_trace(go.Scatter(x=lams, y=acc, mode="lines+markers", connectgaps=False, name=label,
                                 legendgroup=label, line=dict(color=colour, width=3),
                                 marker=dict(symbol=SYMBOLS[j % len(SYMBOLS)], size=8),
                                 hovertemplate="λ %{x:g}: %{y:.1f} %<extra>" + label + "</extra>"), row=1, col=1)
        own = _pctv(t.get("run_after"))
        if own is not None and lams:
            fig.add_trace(go.Scatter(x=[min(lams), max(lams)], y=[own, own], mode="lines", legendgroup=label,
                                     showlegend=False, line=dict(color=colour, width=1.5, dash="dot"),
                                     hovertemplate=f"its own run: {own:.1f} %<extra>{label}</extra>"), row=1, col=1)
    if any(_pctv(t.get("run_after")) is not None for t in tasks):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="dotted: in its own run",
                                 line=dict(color=NEUTRAL, width=1.5, dash="dot"), hoverinfo="skip"), row=1, col=1)
    ctl = [_pctv(p.get("mean_delta_zs_controls")) for p in points]
    fig.add_trace(go.Scatter(x=lams, y=ctl, mode="lines+markers", connectgaps=False, name="Control change",
                             showlegend=False, line=dict(color=WORSE, width=3),
                             hovertemplate="λ %{x:g}: %{y:+.1f} points<extra>mean zero-shot change on the controls"
                                           "</extra>"), row=2, col=1)
    fig.add_hline(y=0, line_color="#444", line_width=1, row=2, col=1)
    chosen = _num(m.get("chosen_lambda"))
    if chosen is not None:
        where = "validation" if m.get("selected_on") == "validation" else str(m.get("selected_on") or "?")
        fig.add_vline(x=chosen, line_color="#333", line_dash="dash", line_width=1.5, row="all", col=1)
        # Low in the accuracy panel, right of the line: the top is taken by the panel's title.
        fig.add_annotation(x=chosen, y=2, xref="x", yref="y", xanchor="left", yanchor="bottom", xshift=4,
                           showarrow=False, text=html_escape(f"kept: λ = {chosen:g}"), bgcolor="rgba(255,255,255,0.8)",
                           font=dict(size=12, color="#333"), hovertext=html_escape(f"chosen on the {where} images"))
    fig.update_xaxes(title_text="λ (0 = the pre-trained model)", row=2, col=1)
    if lams and len(lams) <= 11:
        fig.update_xaxes(tickvals=lams, row=2, col=1)
    fig.update_yaxes(range=[-2, 102], ticksuffix=" %", row=1, col=1)
    fig.update_yaxes(title_text="points", row=2, col=1)
    method = MERGE_METHODS.get(str(m.get("method")), str(m.get("method") or "merge"))
    sub = "<br>".join(html_escape(s) for s in textwrap.wrap(
        f"{method}; λ kept: the best mean task accuracy on the "
        f"{'held-out validation' if m.get('selected_on') == 'validation' else 'test'} images", 44))
    return _layout(fig, "What each λ kept", 500 + 20 * max(len(tasks) - 2, 0), subtitle=sub,
                   margin=dict(l=10, r=20, t=80, b=90))


MERGE_COLUMNS = ["Task", "Classifier", "Before", "Its own run", "Merged"]


def merge_table(results: Mapping[str, Any]) -> list[list[str]]:
    """A merge's tasks: accuracy before, in the run that learned it and on the merged model (with its 95 %
    interval); raw titles (tables escape themselves). Empty for anything that is not a merge."""
    m = results.get("merge")
    if not isinstance(m, Mapping):
        return []
    out = []
    for t in m.get("tasks") or []:
        ci = story.ci(t.get("merged_ci"))
        merged = text.pct(t.get("merged"), 1) + (f" [{text.pct(ci[0], 1)}, {text.pct(ci[1], 1)}]" if ci else "")
        out.append([str(t.get("title") or t.get("dataset") or "?"), str(t.get("classifier") or "—"),
                    text.pct(t.get("before"), 1), text.pct(t.get("run_after"), 1), merged])
    return out


# ---- live training charts --------------------------------------------------------------------------
def ema(values: Sequence[float | None], weight: float) -> list[float | None]:
    """TensorBoard-style exponential smoothing with debiasing; gaps stay gaps."""
    if not 0 < weight < 1:
        return list(values)
    out: list[float | None] = []
    acc, norm = 0.0, 0.0
    for v in values:
        if v is None:
            out.append(None)
            continue
        acc = acc * weight + (1 - weight) * v
        norm = norm * weight + (1 - weight)
        out.append(acc / norm)
    return out


def downsample(points: Sequence[Mapping[str, Any]], max_points: int = 2000) -> list[Mapping[str, Any]]:
    """Every k-th point (always keeping the last) so long runs stay cheap to draw."""
    n = len(points)
    if n <= max_points:
        return list(points)
    k = math.ceil(n / max_points)
    out = list(points[::k])
    if out[-1] is not points[-1]:
        out.append(points[-1])
    return out


def live_training(points: Sequence[Mapping[str, Any]], smoothing: float = 0.0, log_y: bool = False) -> go.Figure:
    """Task loss, regulariser term and total loss (top) and learning rate (bottom) over the whole run."""
    pts = downsample([p for p in points if _num(p.get("step")) is not None])
    if not pts:
        return empty_figure("Waiting for the first training step…")
    steps = [int(p["step"]) for p in pts]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08, row_heights=[0.7, 0.3])
    series = [("loss", "Total loss", "#333333"), ("task_loss", "Task loss", TARGET),
              ("reg_loss", "Regulariser term", "#E69F00")]
    for key, name, colour in series:
        raw = [_num(p.get(key)) for p in pts]
        if all(v is None for v in raw) or (key == "reg_loss" and all(not v for v in raw)):
            continue
        if key == "loss" and all(_num(p.get("reg_loss")) in (None, 0.0) for p in pts):
            continue  # without a regulariser the total is the task loss: one line is enough
        if smoothing > 0:
            fig.add_trace(go.Scatter(x=steps, y=raw, mode="lines", line=dict(color=colour, width=1),
                                     opacity=0.25, showlegend=False, hoverinfo="skip"), row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=ema(raw, smoothing), mode="lines", name=name,
                                 line=dict(color=colour, width=2), connectgaps=False,
                                 hovertemplate="step %{x}: %{y:.4g}<extra>" + name + "</extra>"), row=1, col=1)
    lr = [_num(p.get("lr")) for p in pts]
    fig.add_trace(go.Scatter(x=steps, y=lr, mode="lines", name="Learning rate", line=dict(color="#009E73", width=2),
                             hovertemplate="step %{x}: %{y:.3g}<extra>Learning rate</extra>"), row=2, col=1)
    total = next((int(p["total_steps"]) for p in reversed(pts) if _num(p.get("total_steps"))), None)
    if total:
        fig.update_xaxes(range=[0, total], row=1, col=1)
        fig.update_xaxes(range=[0, total], row=2, col=1)
    _step_axis(fig, total or max(steps))
    fig.update_xaxes(title_text="Training step", row=2, col=1)
    fig.update_yaxes(title_text="loss", type="log" if log_y else "linear", row=1, col=1)
    fig.update_yaxes(title_text="LR", exponentformat="e", row=2, col=1)
    return _layout(fig, "Training", 460)


# ---- several runs ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunEntry:
    """A finished run as the compare charts see it."""

    id: str
    label: str  # raw (escaped when drawn)
    results: Mapping[str, Any]
    colour: str = ""

    @property
    def method(self) -> str:
        return str(self.results.get("method") or (self.results.get("spec") or {}).get("method", {}).get("name", "?"))


def run_colours(run_ids: Sequence[str]) -> dict[str, str]:
    """A colour per run that depends on the run id (stable across pages), unique within the set."""
    taken: set[int] = set()
    out = {}
    for rid in run_ids:
        h = int(hashlib.sha256(str(rid).encode()).hexdigest(), 16) % len(PALETTE)
        for k in range(len(PALETTE)):
            idx = (h + k) % len(PALETTE)
            if idx not in taken or len(taken) >= len(PALETTE):
                break
        taken.add(idx)
        out[rid] = PALETTE[idx]
    return out


def _unique_labels(runs: Sequence[RunEntry]) -> list[str]:
    labels = [r.label or r.id for r in runs]
    return [html_escape(lab if labels.count(lab) == 1 else f"{lab} ({r.id[:8]})") for lab, r in zip(labels, runs)]


def run_point(results: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(target gain, mean control change) in percentage points; None where not measured."""
    t = story.target_numbers(results)
    gain = None if t["before"] is None or t["after"] is None else (t["after"] - t["before"]) * 100
    mean = story.forgetting_summary(results)["mean"]
    return gain, None if mean is None else mean * 100


def run_point_ci(results: Mapping[str, Any]) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """The 95 % intervals of ``run_point`` (points), where results.json has them."""
    t = story.target_numbers(results)
    m = story.forgetting_summary(results)["mean_ci"]
    scale = (lambda c: None if c is None else (c[0] * 100, c[1] * 100))
    return scale(t["delta_ci"]), scale(m)


def compare_heatmap(runs: Sequence[RunEntry], metric: str = "zs_acc") -> go.Figure:
    """Runs × datasets, the change in points, diverging colours centred on zero; blank = not measured."""
    if not runs:
        return empty_figure(text.EMPTY_COMPARE)
    keys: list[str] = []
    titles: dict[str, str] = {}
    for r in runs:
        for k, e in (r.results.get("datasets") or {}).items():
            if k not in titles:
                keys.append(k)
                titles[k] = str((e or {}).get("title") or k)
    tl = list(titles.values())
    cols = [html_escape(t if tl.count(t) == 1 else f"{t} ({k})") for k, t in titles.items()]
    z: list[list[float | None]] = []
    cell_text: list[list[str]] = []
    for r in runs:
        zrow, trow = [], []
        for k in keys:
            e = (r.results.get("datasets") or {}).get(k)
            d = None
            if e:
                b, a = _num((e.get("before") or {}).get(metric)), _num((e.get("after") or {}).get(metric))
                d = None if b is None or a is None else (a - b) * 100
            zrow.append(d)
            mark = " ★" if k == r.results.get("target") else ""
            trow.append("" if d is None else text.points(d / 100) + mark)
        z.append(zrow)
        cell_text.append(trow)
    finite = [abs(v) for row in z for v in row if v is not None]
    span = max(finite + [1.0])
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=_unique_labels(runs), text=cell_text, texttemplate="%{text}", zmid=0, zmin=-span, zmax=span,
        colorscale="RdBu", hoverongaps=False, colorbar=dict(title="points"),
        hovertemplate="<b>%{y}</b><br>%{x}: %{text} points<extra></extra>",
    ))
    fig.update_yaxes(autorange="reversed", type="category")
    fig.update_xaxes(type="category", side="top")
    return _layout(fig, f"Change in {METRIC_NAMES.get(metric, metric).lower()} (★ = the run's target)",
                   160 + 42 * len(runs), margin=dict(l=10, r=20, t=110, b=20))


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both coordinates (both maximised), by x ascending."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 >= x and y2 >= y) and (x2 > x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


def _label_positions(pts: Sequence[tuple[float, float]], xr: Sequence[float], yr: Sequence[float]) -> list[str]:
    """A text position per marker so labels of nearby runs do not sit on each other."""
    cycle = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left")
    w, h = (xr[1] - xr[0]) or 1.0, (yr[1] - yr[0]) or 1.0
    out: list[str] = []
    for i, (x, y) in enumerate(pts):
        near = [j for j in range(i) if abs(pts[j][0] - x) / w < 0.12 and abs(pts[j][1] - y) / h < 0.08]
        taken = {out[j] for j in near}
        out.append(next((c for c in cycle if c not in taken), cycle[len(near) % len(cycle)]))
    return out


def _jitter(pts: Sequence[tuple[float, float]], xr: Sequence[float], yr: Sequence[float]
            ) -> list[tuple[float, float]]:
    """Identical points drawn side by side (a few pixels apart) so every marker stays visible; the
    hover and the table keep the true values."""
    seen: dict[tuple[float, float], int] = {}
    out = []
    for x, y in pts:
        key = (round(x, 2), round(y, 2))
        k = seen.get(key, 0)
        seen[key] = k + 1
        out.append((x + k * 0.015 * (xr[1] - xr[0]), y))
    return out


def tradeoff_scatter(runs: Sequence[RunEntry]) -> go.Figure:
    """x = gain on the target, y = mean change on the controls; one marker per run with 95 % whiskers,
    the Pareto front joined (drawn on top, so near-identical runs cannot hide it)."""
    pts, kept, cis = [], [], []
    for r in runs:
        gx, my = run_point(r.results)
        if gx is not None and my is not None:
            pts.append((gx, my))
            kept.append(r)
            cis.append(run_point_ci(r.results))
    if not kept:
        return empty_figure("These runs have no target gain and control change to plot yet.")
    labels = _unique_labels(kept)
    colours = run_colours([r.id for r in kept])
    methods = sorted({r.method for r in kept})
    xs = [p[0] for p in pts] + [c[0][i] for c in cis if c[0] for i in (0, 1)]
    ys = [p[1] for p in pts] + [0.0] + [c[1][i] for c in cis if c[1] for i in (0, 1)]
    xr, yr = _padded(xs, 0.25, 5.0), _padded(ys, 0.3, 2.0)
    shown = _jitter(pts, xr, yr)
    positions = _label_positions(shown, xr, yr)
    fig = go.Figure()
    for r, lab, (gx, my), (sx, sy), pos, (cx, cy) in zip(kept, labels, pts, shown, positions, cis):
        fig.add_trace(go.Scatter(
            x=[sx], y=[sy], mode="markers+text", name=lab, text=[lab], textposition=pos,
            marker=dict(color=r.colour or colours[r.id], size=15,
                        symbol=SYMBOLS[methods.index(r.method) % len(SYMBOLS)], line=dict(color="white", width=1)),
            error_x=dict(type="data", symmetric=False, array=[max(cx[1] - gx, 0)], arrayminus=[max(gx - cx[0], 0)],
                         color="#888", thickness=1) if cx else None,
            error_y=dict(type="data", symmetric=False, array=[max(cy[1] - my, 0)], arrayminus=[max(my - cy[0], 0)],
                         color="#888", thickness=1) if cy else None,
            customdata=[[html_escape(r.method), text.points(gx / 100), text.points(my / 100)]],
            hovertemplate="<b>%{text}</b><br>method %{customdata[0]}<br>target gain %{customdata[1]} points<br>"
                          "control change %{customdata[2]} points<extra></extra>",
        ))
    front = pareto_front(pts)
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[shown[i][0] for i in front], y=[shown[i][1] for i in front], mode="lines",
                                 name="Pareto front", line=dict(color="#333", dash="dash", width=2),
                                 hoverinfo="skip"))
    fig.add_hline(y=0, line_color="#888", line_width=1, annotation_text="no forgetting",
                  annotation_position="bottom right")
    fig.update_xaxes(title_text="Gain on the target (points)", range=xr, automargin=True)
    fig.update_yaxes(title_text="Change on controls (points)", range=yr, automargin=True)
    return _layout(fig, "Gain vs forgetting (right and up is better)", 480, margin=dict(l=60, r=30, t=70, b=90))


def _padded(values: Sequence[float], frac: float, min_span: float = 1.0) -> list[float]:
    """An axis range around ``values`` with room for the markers' labels, at least ``min_span`` wide
    (two near-identical runs must not zoom the axis to a fraction of a point)."""
    lo, hi = min(values), max(values)
    pad = max((hi - lo) * frac, (min_span - (hi - lo)) / 2, 0.5)
    return [lo - pad, hi + pad]


def _step_axis(fig: go.Figure, max_step: int | None, **where: Any) -> None:
    """Whole-number step ticks (no '0.5 steps' on short runs)."""
    if max_step is not None and max_step <= 10:
        fig.update_xaxes(tick0=0, dtick=1, **where)


# ---- the report table and the self-contained HTML report ------------------------------------------
REPORT_COLUMNS = ["Dataset", "Measure", "Before", "After", "Change (points)", "95 % interval", "ECE before",
                  "ECE after"]
MEASURES = (("zs_acc", "Zero-shot", "zs_ece"), ("lp_acc", "Linear probe", "lp_ece"))


def _row_name(r: DatasetRow) -> str:
    return r.title + {"target": " (target)", "sequence": " (learned earlier)"}.get(r.role, "")


def report_table(results: Mapping[str, Any]) -> list[list[str]]:
    """One row per dataset and measure (display strings; raw titles: the table shows them as text).

    The target's first row is the trained classifier, the same numbers as the headline and the cards.
    A measure a run did not compute is left out; one that is not measurable says so, with the reason.
    """
    out = []
    t = story.target_numbers(results)
    if t["measure"] == "trained classifier":
        tgt = results.get("target")
        title = next((_row_name(r) for r in dataset_rows(results) if r.key == tgt), f"{tgt} (target)")
        delta = t["after"] - t["before"]
        out.append([title, "Trained classifier", text.pct(t["before"], 1), text.pct(t["after"], 1), text.points(delta),
                    _interval(t["delta_ci"]), "—", "—"])
    for r in dataset_rows(results):
        for metric, measure, ece in MEASURES:
            b, a = _num(r.before.get(metric)), _num(r.after.get(metric))
            gap = r.gap(metric) if metric == "zs_acc" else ""
            if b is None and a is None and not gap.startswith("not measurable"):
                continue
            if gap.startswith("not measurable") and b is None and a is None:
                out.append([_row_name(r), measure, "not measurable", "not measurable", "—", gap.split(": ", 1)[-1],
                            "—", "—"])
                continue
            out.append([_row_name(r), measure, text.pct(b, 1), text.pct(a, 1), text.points(r.delta(metric)),
                        _interval(r.delta_ci(metric)), _ece(r.before.get(ece)), _ece(r.after.get(ece))])
    return out


def _interval(c: tuple[float, float] | None) -> str:
    if c is None:
        return "—"
    return f"{text.points(c[0])} to {text.points(c[1])}" + (" (within noise)" if story.covers_zero(c) else "")


def _ece(x: Any) -> str:
    v = _num(x)
    return "—" if v is None else f"{v:.3f}"


def report_figures(results: Mapping[str, Any]) -> list[tuple[str, go.Figure]]:
    """The report's charts in reading order, with the caption that explains each."""
    figs = [(text.CHART_CAPTIONS["dumbbell"], dumbbell(results, "zs_acc"))]
    if metric_computed(results, "lp_acc"):
        figs.append((text.CHART_CAPTIONS["dumbbell"], dumbbell(results, "lp_acc")))
    figs.append((text.CHART_CAPTIONS["delta"], delta_bars(results, "zs_acc")))
    if (results.get("curves") or {}).get("steps"):
        figs.append((text.CHART_CAPTIONS["curves"], curves(results)))
    lam = merge_lambdas(results)
    if lam is not None:
        figs.append((text.CHART_CAPTIONS["merge"], lam))
    w = wise_ft(results)
    if w is not None:
        figs.append((text.CHART_CAPTIONS["wise_ft"], w))
    m = continual_matrix(results)
    if m is not None:
        figs.append((text.CHART_CAPTIONS["continual"], m))
    return figs


def _cell(value: Any) -> str:
    """A table cell of the HTML report: escaped, "31.0 %" kept on one line (a phone broke it before the %)."""
    return html_escape(value).replace(" %", "&nbsp;%")


def _html_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A table of the HTML report in a box that scrolls sideways on a phone instead of widening the page."""
    head = "".join(f"<th>{html_escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


def report_html(results: Mapping[str, Any], run_label: str = "", reference: Mapping[str, Any] | None = None,
                difference: Mapping[str, Any] | None = None) -> str:
    """A self-contained HTML report (plotly.js inlined once, so it opens offline): headline, the
    summary cards with the verdict, the charts, every number and the glossary in the app's words."""
    parts = []
    first = True
    for caption, fig in report_figures(results):
        parts.append(f"<p class='cap'>{html_escape(caption)}</p>")
        parts.append(fig.to_html(full_html=False, include_plotlyjs=first, config={"displaylogo": False}))
        first = False
    gloss = "".join(f"<dt>{html_escape(k)}</dt><dd>{html_escape(v)}</dd>" for k, v in text.glossary_items())
    cards = "".join(f"<div class='card'><div class='lab'>{html_escape(label)}</div><div class='val'>"
                    f"{html_escape(value)}</div>" + (f"<div class='note'>{html_escape(note)}</div>" if note else "")
                    + "</div>" for label, value, note, _tip, _kind in story.stat_cards(results, reference, difference))
    merge = ""
    merge_rows = merge_table(results)
    if merge_rows:
        lam = _num((results.get("merge") or {}).get("chosen_lambda"))
        merge = (f"<h2>Each run's task in the merge{'' if lam is None else f' (λ = {lam:g})'}</h2>"
                 f"{_html_table(MERGE_COLUMNS, merge_rows)}<p>{story.merge_forgetting(results, html_escape)}</p>")
    spec = results.get("spec") or {}
    title = run_label or spec.get("name") or f"{results.get('method', '')} on {results.get('target', '')}"
    timing = results.get("timing") or {}
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html_escape(text.APP_TITLE)} report: {html_escape(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:Inter,system-ui,-apple-system,'Segoe UI',sans-serif;max-width:980px;margin:2rem auto;
  padding:0 1rem;color:#1f2328}}
h1{{font-size:1.5rem}}
.headline{{font-size:1.25rem;line-height:1.5;background:#f6f8fa;border-left:4px solid #3366cc;padding:.8rem 1rem}}
.cap{{color:#57606a;margin:1.5rem 0 0}} table{{border-collapse:collapse;width:100%;font-size:.9rem}}
td,th{{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left}} dt{{font-weight:600;margin-top:.5rem}}
.meta{{color:#57606a;font-size:.85rem}} .cards{{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));
  gap:.6rem}} .card{{border:1px solid #d0d7de;border-radius:8px;padding:.6rem .8rem}} .lab{{font-size:.8rem;color:#57606a}}
.val{{font-size:1.2rem;font-weight:600}} .note{{font-size:.8rem;color:#57606a}}
.scroll{{overflow-x:auto}} /* a wide table scrolls sideways on a phone instead of widening the page */
</style></head><body>
<h1>{html_escape(text.APP_TITLE)} · forgetting report: {html_escape(title)}</h1>
<p class="meta">Method {html_escape(results.get('method', '?'))} · model {html_escape(spec.get('backbone', '?'))} ·
finished {html_escape(timing.get('finished_at', '?'))} · spec {html_escape(str(results.get('spec_hash', ''))[:12])}</p>
<p class="headline">{story.headline(results, markup='html', reference=reference, difference=difference)}</p>
<div class="cards">{cards}</div>
{merge}
{''.join(parts)}
<h2>All numbers</h2>{_html_table(REPORT_COLUMNS, report_table(results))}
<h2>What the numbers mean</h2><dl>{gloss}</dl>
</body></html>"""


# ---- forgetting budget ---------------------------------------------------------------------------------
def budget_points(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The candidates of a budget document as chart points: x = gain on the target (points; accuracy when
    the starting accuracy is unknown), y = change on the controls by the budget's metric (points)."""
    before = _num(doc.get("target_acc_before"))
    out = []
    for c in doc.get("candidates") or []:
        acc, f = _num(c.get("target_acc")), _num(c.get("forgetting_points"))
        if acc is None or f is None:
            continue
        out.append({"x": (acc - before) * 100 if before is not None else acc * 100, "y": -f, "c": c})
    return out


def budget_chart(doc: Mapping[str, Any], words: Any) -> go.Figure:
    """Every candidate of a forgetting-budget search on the gain-vs-forgetting plane, the budget as a line,
    the Pareto front of the full-length candidates, the recommendation as a star. ``words(candidate)`` names
    a candidate for its hover."""
    pts = budget_points(doc)
    if not pts:
        return empty_figure("No trial of this search has finished yet.")
    limit = -float(doc["max_forgetting_points"])
    rec = doc.get("recommended")
    kinds = (("Fine-tuned", lambda c: c["wise_ft_alpha"] is None and not c.get("early_stopped"), "circle", True),
             ("Mixed with the original (WiSE-FT)", lambda c: c["wise_ft_alpha"] is not None, "circle-open", True),
             ("Stopped early (over budget)", lambda c: bool(c.get("early_stopped")) and c["wise_ft_alpha"] is None,
              "x", False))
    fig = go.Figure()
    for name, keep, symbol, _ in kinds:
        sel = [p for p in pts if keep(p["c"])]
        if not sel:
            continue
        fig.add_trace(go.Scatter(
            x=[p["x"] for p in sel], y=[p["y"] for p in sel], mode="markers", name=name,
            marker=dict(size=11, symbol=symbol, color=["#2a9d8f" if p["c"].get("within_budget") else "#e76f51"
                                                         for p in sel], line=dict(width=2, color="#555")),
            customdata=[[html_escape(words(p["c"]))] for p in sel],
            hovertemplate="<b>%{customdata[0]}</b><br>gain %{x:+.1f} points<br>control change %{y:+.1f} points"
                          "<extra></extra>"))
    full = [p for p in pts if not p["c"].get("early_stopped")]
    front = pareto_front([(p["x"], p["y"]) for p in full])
    if len(front) > 1:
        fig.add_trace(go.Scatter(x=[full[i]["x"] for i in front], y=[full[i]["y"] for i in front], mode="lines",
                                 name="Pareto front", line=dict(color="#333", dash="dash", width=2), hoverinfo="skip"))
    if rec is not None:
        r = next((p for p in pts if p["c"] == rec), None)
        if r is not None:
            fig.add_trace(go.Scatter(x=[r["x"]], y=[r["y"]], mode="markers", name="Recommended",
                                     marker=dict(size=22, symbol="star", color="#f4a261", line=dict(width=1.5, color="#333")),
                                     hovertemplate="<b>Recommended</b><extra></extra>"))
    fig.add_hline(y=limit, line_color="#c0392b", line_dash="dot", line_width=2,
                  annotation_text=f"budget: {limit:+g} points", annotation_position="bottom left")
    fig.add_hline(y=0, line_color="#888", line_width=1)
    xs, ys = [p["x"] for p in pts], [p["y"] for p in pts] + [limit, 0.0]
    gain = doc.get("target_acc_before") is not None
    fig.update_xaxes(title_text="Gain on the target (points)" if gain else "Accuracy on the target (%)",
                     range=_padded(xs, 0.15, 5.0), automargin=True)
    fig.update_yaxes(title_text="Change on controls (points)" if doc.get("metric") == "mean_zs_controls"
                     else "Change on the worst control (points)", range=_padded(ys, 0.2, 2.0), automargin=True)
    return _layout(fig, "Every candidate: gain vs forgetting, with the budget", 460,
                   margin=dict(l=60, r=30, t=70, b=90))


BUDGET_COLUMNS = ["Setting", "Accuracy on the target", "Forgetting (points)", "Within budget", "Note", "Run"]


def budget_table(doc: Mapping[str, Any], words: Any) -> list[list[str]]:
    """One row per candidate, the recommendation first, then by accuracy on the target."""
    rec = doc.get("recommended")
    rows = []
    cands = sorted(doc.get("candidates") or [], key=lambda c: (c != rec, -(_num(c.get("target_acc")) or -1.0)))
    for c in cands:
        acc, f = _num(c.get("target_acc")), _num(c.get("forgetting_points"))
        ci = c.get("target_acc_ci")
        acc_s = "—" if acc is None else f"{acc * 100:.1f} %" + (
            f" [{ci[0] * 100:.1f}, {ci[1] * 100:.1f}]" if isinstance(ci, list) and len(ci) == 2 else "")
        note = "recommended" if c == rec else "stopped early" if c.get("early_stopped") else ""
        rows.append([words(c), acc_s, "not measurable" if f is None else f"{f:.1f}",
                     "yes" if c.get("within_budget") else "no", note, str(c.get("run", ""))[:12]])
    return rows
