"""Compare finished runs: Δ heatmap, gain-vs-forgetting scatter with the Pareto front, config diff."""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import charts, forms, story, text
from ..charts import RunEntry
from ..context import AppContext, on_page_load, user_errors
from .common import DONE, PRIVATE, Names, bind

MAX_RUNS = 12
DEFAULT_RUNS = 6
SUMMARY_HEADERS = ["Run", "Method", "Target", "Target gain (points)", "Average change on controls (points)",
                   "Worst control", "On Pareto front"]


def summary_rows(runs: Sequence[RunEntry]) -> list[list[str]]:
    pts = [charts.run_point(r.results) for r in runs]
    complete = [i for i, (g, m) in enumerate(pts) if g is not None and m is not None]
    front = {complete[i] for i in charts.pareto_front([pts[i] for i in complete])}  # type: ignore[misc]
    rows = []
    for i, (r, (gain, mean)) in enumerate(zip(runs, pts)):
        s = story.forgetting_summary(r.results)
        worst = ""
        if s["worst"]:
            title = ((r.results.get("datasets") or {}).get(s["worst"]) or {}).get("title") or s["worst"]
            worst = f"{title} {text.points(s['worst_delta'])}"
        rows.append([r.label, r.method, str(r.results.get("target", "")),
                     text.points(None if gain is None else gain / 100),
                     text.points(None if mean is None else mean / 100), worst or "—", "yes" if i in front else ""])
    return rows


DIFF_HEADERS = ["Run", "Compared with", "Trained classifier on the target (points)",
                "Average change on controls (points)", "Reading"]


def reference_index(runs: Sequence[RunEntry]) -> int:
    """Which picked run the others are measured against: the first plain fine-tuning (CE) run, else
    the first run picked."""
    return next((i for i, r in enumerate(runs) if str(r.results.get("method")) == "ce"), 0)


def _diff_cell(cell: Any) -> str:
    """'+27.7 (26.7 to 28.8)' from a difference cell (fractions); '—' when there is none."""
    if not cell or story.ci(cell.get("ci")) is None:
        return "—"
    lo, hi = story.ci(cell["ci"])
    return f"{text.points(cell['diff'])} ({text.points(lo)} to {text.points(hi)})"


def _reading(d: dict, ref_label: str, head: str) -> str:
    cell = (d.get("controls") or {}).get(head)
    if d.get("note") or not cell or story.ci(cell.get("ci")) is None:
        return f"Not compared: {d.get('note') or 'no control measured by both runs'}."
    lo, hi = story.ci(cell["ci"])
    if story.covers_zero((lo, hi)):
        return f"No clear difference in forgetting from {ref_label} ({story.NOISE_WORDS})."
    n = len(cell.get("datasets") or [])
    return (f"Forgot {text.points(cell['diff'], sign=False)} points {'less' if cell['diff'] > 0 else 'more'} than "
            f"{ref_label} on the {n} control{'s' if n != 1 else ''} both measured (same test images).")


def difference_rows(ctx: AppContext, user: str, runs: Sequence[RunEntry], metric: str) -> list[list[str]]:
    """Each picked run minus the reference run (``reference_index``) on the same test images, with 95 %
    paired-bootstrap intervals from ``api.compare_runs``: a positive change difference = lost less."""
    if len(runs) < 2:
        return []
    ref = runs[reference_index(runs)]
    head = "lp" if metric == "lp_acc" else "zs"
    rows = []
    for r in runs:
        if r.id == ref.id:
            continue
        try:
            d = ctx.api.compare_runs(user, r.id, ref.id)
        except Exception:  # noqa: BLE001 — a pair that cannot be read is shown as not compared
            d = {"note": "its results could not be read"}
        rows.append([r.label, ref.label, _diff_cell(d.get("target_head")),
                     _diff_cell((d.get("controls") or {}).get(head)), _reading(d, ref.label, head)])
    return rows


def _cell(v: Any) -> str:
    if isinstance(v, (dict, list)):
        return json.dumps(v, sort_keys=True)
    return "—" if v is None else str(v)


def diff_table(specs: Sequence[dict], labels: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the config diff: only fields that differ between the runs."""
    rows = [[text.label_for(path) + f" ({path})"] + [_cell(v) for v in vals] for path, vals in forms.config_diff(specs)]
    return ["Setting"] + list(labels), rows


@dataclass
class CompareTab:
    picker: gr.Dropdown
    metric: gr.Radio
    refresh: gr.Button
    outputs: list


def layout() -> CompareTab:
    gr.Markdown("Which method gives the most gain for the least forgetting? Pick finished runs "
                "(each keeps its colour everywhere).", elem_classes="tab-intro")
    with gr.Row():
        picker = gr.Dropdown(choices=[], value=[], multiselect=True, max_choices=MAX_RUNS, label="Runs to compare",
                             scale=4, elem_id="compare-picker")
        metric = gr.Radio([("Zero-shot", "zs_acc"), ("Linear probe", "lp_acc")], value="zs_acc", label="Metric",
                          scale=1, elem_id="compare-metric")
        refresh = gr.Button("Refresh list", size="sm", scale=0, min_width=120, elem_id="compare-refresh")
    empty = gr.Markdown(text.EMPTY_COMPARE, elem_id="compare-empty")
    with gr.Column(visible=False) as body:
        scatter = gr.Plot(show_label=False, elem_id="compare-scatter")
        gr.Markdown(text.CHART_CAPTIONS["scatter"], elem_classes="caption")
        heat = gr.Plot(show_label=False, elem_id="compare-heatmap")
        gr.Markdown(text.CHART_CAPTIONS["heatmap"], elem_classes="caption")
        summary = gr.Dataframe(headers=SUMMARY_HEADERS, value=[], interactive=False, label="Summary", wrap=True,
                               elem_id="compare-summary", pinned_columns=1)
        differences = gr.Dataframe(headers=DIFF_HEADERS, value=[], interactive=False, wrap=True,
                                   label="Difference from the reference run (95 % intervals, same test images)",
                                   elem_id="compare-differences", pinned_columns=1)
        gr.Markdown(text.CHART_CAPTIONS["differences"], elem_classes="caption")
        diff = gr.Dataframe(value=[], interactive=False, label="Settings that differ", wrap=True,
                            elem_id="compare-diff", pinned_columns=1)
    return CompareTab(picker, metric, refresh, [empty, body, scatter, heat, summary, differences, diff])


def _runs(ctx: AppContext, user: str, ids: Sequence[str]) -> tuple[list[RunEntry], dict[str, str]]:
    """The picked finished runs (coloured) and, for those that are seed repeats, their group ids."""
    names = Names.load(ctx.api, user)
    runs, groups = [], {}
    for jid in list(ids or [])[:MAX_RUNS]:
        res = ctx.api.get_results(user, jid)
        if res is None:
            continue
        job = ctx.api.get_job(user, jid)
        runs.append(RunEntry(str(jid), names.title(job), res))
        if getattr(job, "group", None):
            groups[str(jid)] = str(job.group)
    colours = charts.run_colours([r.id for r in runs])
    return [RunEntry(r.id, r.label, r.results, colours[r.id]) for r in runs], groups


def group_rows(runs: Sequence[RunEntry], groups: dict[str, str]) -> list[list[str]]:
    """One extra summary row per seed-repeat group with two or more picked runs: mean ± sd (points)."""
    members: dict[str, list[RunEntry]] = {}
    for r in runs:
        if r.id in groups:
            members.setdefault(groups[r.id], []).append(r)
    rows = []
    for _group, rs in members.items():
        if len(rs) < 2:
            continue
        pts = [charts.run_point(r.results) for r in rs]
        gains = story.mean_sd([p[0] for p in pts])
        means = story.mean_sd([p[1] for p in pts])
        rows.append([f"{rs[0].label} — {len(rs)} seeds, mean ± sd", rs[0].method, str(rs[0].results.get("target", "")),
                     story.mean_sd_points(None if gains is None else {k: v / 100 for k, v in gains.items()}),
                     story.mean_sd_points(None if means is None else {k: v / 100 for k, v in means.items()}), "", ""])
    return rows


@user_errors
def draw(ctx: AppContext, ids: Sequence[str], metric_v: str, request: gr.Request) -> list:
    user = ctx.user(request)
    runs, groups = _runs(ctx, user, ids)
    if len(runs) < 2:
        msg = text.EMPTY_COMPARE if not runs else "Pick at least one more finished run."
        return [gr.Markdown(msg, visible=True), gr.Column(visible=False)] + [gr.skip()] * 5
    labels = [f"{r.label} ({r.id[:8]})" for r in runs]
    headers, rows = diff_table([r.results.get("spec") or {} for r in runs], labels)
    if not rows:
        headers, rows = ["Setting"], [["The runs have identical settings (except the seed, if any)."]]
    return [gr.Markdown(visible=False), gr.Column(visible=True), charts.tradeoff_scatter(runs),
            charts.compare_heatmap(runs, metric_v), summary_rows(runs) + group_rows(runs, groups),
            difference_rows(ctx, user, runs, metric_v), gr.Dataframe(value=rows, headers=headers)]


@user_errors
def refresh_list(ctx: AppContext, ids: Sequence[str], request: gr.Request) -> Any:
    """New finished runs join the list; the runs picked stay picked (the newest few when none is)."""
    user = ctx.user(request)
    jobs = [j for j in ctx.api.list_jobs(user, states=(DONE,), limit=200) if j.method != "push"]  # not uploads
    valid = {str(j.id) for j in jobs}
    choices = Names.load(ctx.api, user).run_choices(jobs)
    keep = [i for i in (ids or []) if i in valid]
    if keep and len(keep) == len(ids or []):
        return gr.Dropdown(choices=choices)
    return gr.Dropdown(choices=choices, value=keep or [str(j.id) for j in jobs[:DEFAULT_RUNS]])


@user_errors
def list_only(ctx: AppContext, request: gr.Request) -> Any:
    user = ctx.user(request)
    return gr.Dropdown(choices=Names.load(ctx.api, user).run_choices(
        [j for j in ctx.api.list_jobs(user, states=(DONE,), limit=200) if j.method != "push"]))


def wire(ctx: AppContext, nav: Any, tab: CompareTab) -> None:
    gr.on([tab.picker.change, tab.metric.change], bind(draw, ctx), [tab.picker, tab.metric], tab.outputs,
          api_name="compare_draw", trigger_mode="always_last", **PRIVATE)
    refresh = bind(refresh_list, ctx)
    tab.refresh.click(refresh, tab.picker, tab.picker, api_name="compare_refresh", **PRIVATE)
    # On page load only the list; the default runs are picked (and drawn) when the tab is first opened.
    nav.demo.load(on_page_load(bind(list_only, ctx), 1), None, tab.picker, api_name="compare_load", **PRIVATE)


def wire_tab(ctx: AppContext, tab_component: gr.Tab, tab: CompareTab) -> None:
    tab_component.select(bind(refresh_list, ctx), tab.picker, tab.picker, api_name="compare_tab", **PRIVATE)


def build(ctx: AppContext, nav: Any) -> CompareTab:
    tab = layout()
    wire(ctx, nav, tab)
    return tab
