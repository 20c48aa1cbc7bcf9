"""The forgetting report of one finished run: headline, key numbers, charts, table, downloads.

Which run is shown is decided in one place, the picker's value, and every path into the Report sets
it in the same response that opens the tab (Jobs → Open report, a ``?run=<id>`` link, the dropdown).
The tab's own refresh only adds new runs to the list: it never replaces a selection, so it cannot
race a path that just chose a run.
"""
from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import charts, story, text
from ..context import AppContext, on_page_load, user_errors
from ..downloads import PrivateDownloadButton, download_url
from ..text import GLOSSARY, html_escape
from . import merge_runs, share
from .common import DONE, PRIVATE, Names, bind

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_RUNS = 200

# Keep the address bar in step with the run shown, so a reload or a copied link shows the same run.
URL_SET = """(id) => { const u = new URL(window.location.href);
  if (id) { u.searchParams.set('run', id); } else { u.searchParams.delete('run'); }
  window.history.replaceState(null, '', u); return id; }"""
URL_SET_2 = """(id, wanted) => { const u = new URL(window.location.href);
  if (id) { u.searchParams.set('run', id); window.history.replaceState(null, '', u); } return [id, wanted]; }"""
URL_CLEAR = """() => { const u = new URL(window.location.href);
  if (u.searchParams.has('run')) { u.searchParams.delete('run'); window.history.replaceState(null, '', u); } }"""


# ---- pure helpers ------------------------------------------------------------------------------------
def stat_cards_html(results: Mapping[str, Any], reference: Mapping[str, Any] | None = None,
                    difference: Mapping[str, Any] | None = None) -> str:
    """The summary cards with a tooltip (title attribute) each; every user string is escaped."""
    body = "".join(
        f'<div class="stat-card {kind}" title="{html_escape(tip)}"><div class="stat-label">{html_escape(label)}'
        f'<span class="tip" aria-hidden="true">?</span></div><div class="stat-value">{html_escape(value)}</div>'
        + (f'<div class="stat-note">{html_escape(note)}</div>' if note else "") + "</div>"
        for label, value, note, tip, kind in story.stat_cards(results, reference, difference)
    )
    return f'<div class="stat-cards">{body}</div>'


def glossary_markdown() -> str:
    return "\n".join(f"- **{text.md_escape(name)}** — {text.md_escape(v)}" for name, v in text.glossary_items())


def done_choices(jobs: Any, names: Names | None = None) -> list[tuple[str, str]]:
    return (names or Names({}, {})).run_choices(jobs)


# ---- layout ------------------------------------------------------------------------------------------
@dataclass
class ReportTab:
    picker: gr.Dropdown
    refresh: gr.Button
    outputs: list
    checkpoint: gr.Button
    checkpoint_dl: gr.DownloadButton
    wanted: gr.State  # the run last asked for by a link or Jobs → Open report (server-side)
    share: Any = None  # Share on the Hub (tabs/share.py)
    use_setting: gr.Button | None = None  # forgetting budget: open New run with the recommended setting


def _budget_view() -> tuple[list, gr.Button]:
    """The forgetting-budget answer (shown for a run that is a trial of a budget search)."""
    with gr.Column(visible=False, elem_id="report-budget") as col:
        gr.Markdown("### Forgetting budget: the best setting found")
        answer = gr.Markdown(elem_id="budget-answer", elem_classes="headline")
        use = gr.Button("Use this setting", variant="primary", size="sm", elem_id="budget-use")
        plot = gr.Plot(show_label=False, elem_id="budget-chart")
        gr.Markdown(text.CHART_CAPTIONS["budget"], elem_classes="caption")
        table = gr.Dataframe(headers=charts.BUDGET_COLUMNS, value=[], interactive=False, wrap=True,
                             label="Every candidate tried", elem_id="budget-table")
    return [col, answer, plot, table], use


def _charts() -> list:
    """The chart area; returns its outputs in the order ``select_run`` fills them."""
    with gr.Row(elem_classes="report-charts"):
        zs_plot = gr.Plot(show_label=False, elem_id="report-dumbbell")
        lp_plot = gr.Plot(show_label=False, visible=False, elem_id="report-dumbbell-lp")
    gr.Markdown(text.CHART_CAPTIONS["dumbbell"], elem_classes="caption")
    delta_plot = gr.Plot(show_label=False, elem_id="report-delta")
    gr.Markdown(text.CHART_CAPTIONS["delta"], elem_classes="caption")
    # A merge had no training: its λ sweep takes the place of the training curves.
    with gr.Column() as curves_col:
        curves_plot = gr.Plot(show_label=False, elem_id="report-curves")
        gr.Markdown(text.CHART_CAPTIONS["curves"], elem_classes="caption")
    with gr.Column(visible=False, elem_id="report-merge-col") as merge_col:
        merge_plot = gr.Plot(show_label=False, elem_id="report-merge")
        gr.Markdown(text.CHART_CAPTIONS["merge"], elem_classes="caption")
    with gr.Column(visible=False) as wise_col:
        wise_plot = gr.Plot(show_label=False, elem_id="report-wiseft")
        gr.Markdown(text.CHART_CAPTIONS["wise_ft"], elem_classes="caption")
    with gr.Column(visible=False) as seq_col:
        seq_plot = gr.Plot(show_label=False, elem_id="report-continual")
        gr.Markdown(text.CHART_CAPTIONS["continual"], elem_classes="caption")
    return [zs_plot, lp_plot, delta_plot, curves_col, curves_plot, merge_col, merge_plot, wise_col, wise_plot,
            seq_col, seq_plot]


def _downloads() -> tuple[list, gr.Button, gr.DownloadButton]:
    gr.Markdown("### Downloads")
    with gr.Row():
        # Served to the signed-in user only, for a limited time (app/downloads.py).
        csv_dl = PrivateDownloadButton("CSV", size="sm", elem_id="dl-csv")
        json_dl = PrivateDownloadButton("JSON (results.json)", size="sm", elem_id="dl-json")
        html_dl = PrivateDownloadButton("HTML report (works offline)", size="sm", elem_id="dl-html")
        yaml_dl = PrivateDownloadButton("Spec (YAML)", size="sm", elem_id="dl-yaml")
        ckpt_btn = gr.Button("Prepare checkpoint (safetensors, zipped)", size="sm", elem_id="ckpt-prepare")
        ckpt_dl = PrivateDownloadButton("Download checkpoint", size="sm", visible=False, variant="primary",
                                        elem_id="dl-ckpt")
    return [csv_dl, json_dl, html_dl, yaml_dl, ckpt_dl], ckpt_btn, ckpt_dl


def layout() -> ReportTab:
    with gr.Row():
        picker = gr.Dropdown(choices=[], value=None, label="Finished run", scale=4, elem_id="report-picker")
        refresh = gr.Button("Refresh list", size="sm", scale=0, min_width=120, elem_id="report-refresh")
    empty = gr.Markdown(text.EMPTY_REPORT, elem_id="report-empty")
    with gr.Column(visible=False, elem_id="report-body") as body:
        run_title = gr.Markdown(elem_id="report-run")
        budget_outputs, use = _budget_view()
        headline = gr.Markdown(elem_id="report-headline", elem_classes="headline")
        cards = gr.HTML(elem_id="report-cards")
        chart_outputs = _charts()
        table = gr.Dataframe(headers=charts.REPORT_COLUMNS, value=[], interactive=False, label="All numbers",
                             wrap=True, elem_id="report-table", pinned_columns=1)
        gr.Markdown(text.TABLE_CAPTION, elem_classes="caption")
        dl_outputs, ckpt_btn, ckpt_dl = _downloads()
        share_section = share.layout()
    with gr.Accordion("What do these numbers mean?", open=False, elem_id="glossary"):
        gr.Markdown(glossary_markdown())
    outputs = [empty, body, run_title, headline, cards] + chart_outputs + [table] + dl_outputs + budget_outputs
    return ReportTab(picker, refresh, outputs, ckpt_btn, ckpt_dl, gr.State(""), share_section, use)


# ---- handlers ----------------------------------------------------------------------------------------
def _export(ctx: AppContext, request: gr.Request | None, user: str, job_id: str, kind: str) -> str | None:
    try:
        path = ctx.api.export_artifact(user, job_id, kind)
    except Exception:  # noqa: BLE001 — a missing optional artifact must not hide the report
        return None
    return download_url(request, user, path)  # served to this user only, for a limited time


def _not_shown(n_outputs: int, message: str) -> list:
    return [gr.Markdown(message, visible=True), gr.Column(visible=False)] + [gr.skip()] * (n_outputs - 2)


def _finished(ctx: AppContext, user: str) -> list:
    return [j for j in ctx.api.list_jobs(user, states=(DONE,), limit=MAX_RUNS) if j.method != "push"]  # uploads


def find_reference(ctx: AppContext, user: str, job: Any, results: Mapping[str, Any]) -> tuple[str, dict] | None:
    """The newest plain fine-tuning (CE) run of this user on the same target and model, for the
    verdict: its id and results."""
    if results.get("method") == "ce":
        return None
    backbone = (results.get("spec") or {}).get("backbone")
    for j in _finished(ctx, user):
        if str(j.id) == str(job.id) or j.method != "ce" or j.target != results.get("target"):
            continue
        if (getattr(j, "spec", None) or {}).get("backbone") not in (None, backbone):
            continue
        try:
            ref = ctx.api.get_results(user, str(j.id))
        except Exception:  # noqa: BLE001 — a reference that cannot be read is simply not used
            continue
        if ref and story.matches_reference(results, ref):
            return str(j.id), ref
    return None


def reference_difference(ctx: AppContext, user: str, job_id: str, ref_id: str) -> dict | None:
    """This run minus the CE reference on the same test images (None when they cannot be compared)."""
    try:
        return ctx.api.compare_runs(user, job_id, ref_id)
    except Exception:  # noqa: BLE001 — the interval is extra; the verdict still reads without it
        return None


def group_summary(ctx: AppContext, user: str, job: Any) -> str:
    """'Repeated over 3 seeds: …' for a run that is one of a group of seed repeats (else empty)."""
    group = getattr(job, "group", None)
    if not group or not hasattr(ctx.api, "group_results"):
        return ""
    try:
        g = ctx.api.group_results(user, group) or {}
    except Exception:  # noqa: BLE001 — the group line is extra; the run's own report still shows
        return ""
    return story.group_line(g.get("aggregate"), int(g.get("n_done") or 0))


def report_views(ctx: AppContext, user: str, job: Any, results: Mapping[str, Any],
                 request: gr.Request | None = None) -> list:
    """Every output of the report body for one finished run (without the empty-state pair)."""
    names = Names.load(ctx.api, user)
    job_id = str(job.id)
    title = names.title(job)
    found = find_reference(ctx, user, job, results)
    reference, difference = (found[1], reference_difference(ctx, user, job_id, found[0])) if found else (None, None)
    html_path = ctx.scratch_file(f"ldifs-report-{job_id if _ID.match(job_id) else 'run'}.html")
    html_path.write_text(charts.report_html(results, title, reference, difference), encoding="utf-8")
    facts = "  \n".join(x for x in (text.run_facts(results, names.method(job.method)),
                                     text.md_escape(group_summary(ctx, user, job))) if x)
    has_lp = charts.metric_computed(results, "lp_acc")
    w = charts.wise_ft(results)
    m = charts.continual_matrix(results)
    lam = charts.merge_lambdas(results)  # a merge: its λ sweep instead of training curves
    merge = merge_runs.merge_summary(results)  # a merge: each task next to its own run
    facts += f"\n\n{merge}" if merge else ""
    return [f"## {text.md_escape(title)}\n\n{facts}",
            story.headline(results, reference=reference, difference=difference),
            stat_cards_html(results, reference, difference),
            charts.dumbbell(results, "zs_acc"),
            gr.Plot(charts.dumbbell(results, "lp_acc") if has_lp else None, visible=has_lp),
            charts.delta_bars(results), gr.Column(visible=lam is None), charts.curves(results) if lam is None else None,
            gr.Column(visible=lam is not None), lam, gr.Column(visible=w is not None), w,
            gr.Column(visible=m is not None), m, charts.report_table(results),
            _export(ctx, request, user, job_id, "csv"), _export(ctx, request, user, job_id, "results"),
            download_url(request, user, html_path), _export(ctx, request, user, job_id, "yaml"),
            gr.DownloadButton(visible=False)] + budget_views(ctx, user, job)


def budget_search(ctx: AppContext, user: str, job: Any) -> dict | None:
    """The budget search this run is a trial of (``tasks.api.budget_results``), else None."""
    group = getattr(job, "group", None)
    if not group or "budget" not in (getattr(job, "spec", None) or {}) or not hasattr(ctx.api, "budget_results"):
        return None
    try:
        return ctx.api.budget_results(user, group)
    except Exception:  # noqa: BLE001 — the budget view is extra; the run's own report still shows
        return None


def budget_views(ctx: AppContext, user: str, job: Any) -> list:
    """The budget column's outputs: hidden for an ordinary run."""
    out = budget_search(ctx, user, job)
    doc = (out or {}).get("document")
    if not doc:
        return [gr.Column(visible=False), "", None, []]
    def words(c: Mapping[str, Any]) -> str:
        return str(c.get("setting") or "")

    return [gr.Column(visible=True), story.budget_answer(out), charts.budget_chart(doc, words),
            charts.budget_table(doc, words)]


@user_errors
def use_setting(ctx: AppContext, job_id: str | None, request: gr.Request) -> tuple:
    """"Use this setting": New run, filled with the recommended setting as a plain run."""
    user = ctx.user(request)
    if not job_id:
        raise gr.Error("Select a finished run first.")
    out = budget_search(ctx, user, ctx.api.get_job(user, job_id))
    if not (out or {}).get("recommended_spec"):
        raise gr.Error("This search has no recommended setting yet.")
    return gr.Tabs(selected="new"), {"spec": out["recommended_spec"], "nonce": time.time()}


@user_errors
def select_run(ctx: AppContext, n_outputs: int, job_id: str | None, request: gr.Request) -> list:
    """The picker changed: draw that run's report (owner-checked: another user's run is 'not found')."""
    user = ctx.user(request)
    if not job_id:
        return _not_shown(n_outputs, text.EMPTY_REPORT)
    results = ctx.api.get_results(user, job_id)
    job = ctx.api.get_job(user, job_id)
    if results is None:
        return _not_shown(n_outputs, f"This run is **{text.md_escape(text.state_badge(job.state).lower())}**; "
                                     "its report appears when it finishes.")
    return [gr.Markdown(visible=False), gr.Column(visible=True)] + report_views(ctx, user, job, results, request)


@user_errors
def refresh_list(ctx: AppContext, job_id: str | None, wanted: str | None, request: gr.Request) -> Any:
    """New finished runs join the list. A valid selection is never replaced (no value is sent), so this
    cannot overwrite a run another path has just chosen. An empty picker gets the run last asked for
    (``wanted``, kept on the server, so it is current even when the picker value sent along is stale),
    else the newest run."""
    user = ctx.user(request)
    jobs = _finished(ctx, user)
    choices = Names.load(ctx.api, user).run_choices(jobs)
    ids = [str(j.id) for j in jobs]
    if job_id and job_id in ids:
        return gr.Dropdown(choices=choices)
    return gr.Dropdown(choices=choices, value=wanted if wanted in ids else ids[0] if ids else None)


@user_errors
def open_run(ctx: AppContext, job_id: str | None, request: gr.Request) -> list:
    """Jobs → Open report: the list with that run selected, and the Report tab, in one response."""
    if not job_id:
        raise gr.Error("Select a finished run first.")
    user = ctx.user(request)
    job = ctx.api.get_job(user, job_id)  # owner-checked
    jobs = _finished(ctx, user)
    return [gr.Dropdown(choices=Names.load(ctx.api, user).run_choices(jobs), value=str(job.id)),
            gr.Tabs(selected="report"), str(job.id)]


def load_page(ctx: AppContext, request: gr.Request) -> list:
    """Page load: the run named in ``?run=`` (Report tab opened on it). Otherwise only the list: the
    report is drawn when the tab is first opened, so a page load does not wait for charts nobody sees."""
    user = ctx.user(request)
    jobs = _finished(ctx, user)
    choices = Names.load(ctx.api, user).run_choices(jobs)
    wanted = (dict(getattr(request, "query_params", {}) or {}).get("run") or "").strip()
    ids = [str(j.id) for j in jobs]
    if wanted:
        match = [i for i in ids if i == wanted or (len(wanted) >= 8 and i.startswith(wanted))]
        if len(match) == 1:
            return [gr.Dropdown(choices=choices, value=match[0]), gr.Tabs(selected="report"), match[0]]
        gr.Warning(f"The linked run {text.html_text(wanted[:40])} is not among your finished runs.")
    return [gr.Dropdown(choices=choices), gr.skip(), gr.skip()]


@user_errors
def prepare_checkpoint(ctx: AppContext, job_id: str | None, request: gr.Request) -> Any:
    if not job_id:
        raise gr.Error("Select a finished run first.")
    user = ctx.user(request)
    path = ctx.api.export_artifact(user, job_id, "checkpoint")
    gr.Info("Checkpoint ready: press Download checkpoint.")
    return gr.DownloadButton(value=download_url(request, user, path), visible=True)


# ---- wiring ------------------------------------------------------------------------------------------
def wire(ctx: AppContext, nav: Any, tab: ReportTab) -> None:
    n = len(tab.outputs)
    tab.picker.change(bind(select_run, ctx, n), tab.picker, tab.outputs, api_name="report_select", js=URL_SET,
                      **PRIVATE)
    tab.refresh.click(bind(refresh_list, ctx), [tab.picker, tab.wanted], tab.picker, api_name="report_refresh",
                      **PRIVATE)
    nav.demo.load(on_page_load(bind(load_page, ctx), 3), None, [tab.picker, nav.tabs, tab.wanted],
                  api_name="report_load", **PRIVATE)
    tab.checkpoint.click(bind(prepare_checkpoint, ctx), tab.picker, tab.checkpoint_dl, api_name="report_checkpoint",
                         **PRIVATE)
    if tab.share is not None:
        share.wire(ctx, nav, tab.share, tab.picker)
    if tab.use_setting is not None and hasattr(nav, "clone_spec"):
        tab.use_setting.click(bind(use_setting, ctx), tab.picker, [nav.tabs, nav.clone_spec],
                              api_name="report_use_setting", **PRIVATE)


def wire_open(ctx: AppContext, nav: Any, tab: ReportTab, button: gr.Button, source: gr.Dropdown) -> None:
    """A button elsewhere (Jobs → Open report) that shows the run selected in ``source``."""
    button.click(bind(open_run, ctx), source, [tab.picker, nav.tabs, tab.wanted], api_name="jobs_open_report",
                 **PRIVATE)


def wire_tab(ctx: AppContext, tab_component: gr.Tab, tab: ReportTab) -> None:
    """Entering the tab: new runs join the list (selection kept), and the address names the run."""
    tab_component.select(bind(refresh_list, ctx), [tab.picker, tab.wanted], tab.picker, api_name="report_tab",
                         js=URL_SET_2, **PRIVATE)


def build(ctx: AppContext, nav: Any) -> ReportTab:
    tab = layout()
    wire(ctx, nav, tab)
    return tab
