"""The forgetting report of one finished run: headline, key numbers, charts, table, downloads."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import charts, text
from ..context import AppContext, on_page_load, user_errors
from ..downloads import PrivateDownloadButton, download_url
from ..text import GLOSSARY, html_escape

PRIVATE = dict(api_visibility="private")
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def stat_cards_html(results: Mapping[str, Any]) -> str:
    """Four summary cards with a tooltip (title attribute) each; every user string is escaped."""
    before, after = text.target_accuracy(results)
    s = text.forgetting_summary(results)
    worst_title = ""
    if s["worst"]:
        entry = (results.get("datasets") or {}).get(s["worst"]) or {}
        worst_title = str(entry.get("title") or s["worst"])
    cards = [
        ("Target accuracy", f"{text.pct(before)} → {text.pct(after)}", GLOSSARY["target_acc"], "target"),
        ("Average change on controls", f"{text.points(s['mean'])} points" if s["mean"] is not None else "not measured",
         GLOSSARY["mean_forgetting"], "bad" if (s["mean"] or 0) < -0.0005 else "good"),
        ("Worst control",
         (f"{worst_title} {text.points(s['worst_delta'])}" if (s["worst_delta"] or 0) < -0.0005 else "none got worse")
         if s["worst"] else "—",
         GLOSSARY["worst"], "bad" if (s["worst_delta"] or 0) < -0.0005 else "good"),
        ("Verdict", text.verdict(results), GLOSSARY["verdict"], "neutral"),
    ]
    body = "".join(
        f'<div class="stat-card {kind}" title="{html_escape(tip)}"><div class="stat-label">{html_escape(label)}'
        f'<span class="tip" aria-hidden="true">?</span></div><div class="stat-value">{html_escape(value)}</div></div>'
        for label, value, tip, kind in cards
    )
    return f'<div class="stat-cards">{body}</div>'


def glossary_markdown() -> str:
    names = {"zs_acc": "Zero-shot accuracy", "lp_acc": "Linear-probe accuracy", "delta": "Change (points)",
             "target_acc": "Target accuracy", "mean_forgetting": "Average change on controls",
             "worst": "Worst control", "ece": "Calibration error (ECE)", "wise_ft": "WiSE-FT",
             "pareto": "Pareto front", "target_gain": "Target gain"}
    return "\n".join(f"- **{names.get(k, k)}** — {text.md_escape(v)}" for k, v in GLOSSARY.items())


def done_choices(jobs: Any) -> list[tuple[str, str]]:
    return [(f"{j.title} · {j.method} on {j.target} · {str(j.id)[:8]}", str(j.id)) for j in jobs]


@dataclass
class ReportTab:
    picker: gr.Dropdown
    headline: gr.Markdown
    refresh_fn: Any
    refresh_outputs: list


def build(ctx: AppContext, nav: Any) -> ReportTab:
    api = ctx.api
    with gr.Row():
        picker = gr.Dropdown(choices=[], value=None, label="Finished run", scale=4, elem_id="report-picker")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    empty = gr.Markdown(text.EMPTY_REPORT, elem_id="report-empty")
    with gr.Column(visible=False) as body:
        headline = gr.Markdown(elem_id="report-headline", elem_classes="headline")
        cards = gr.HTML(elem_id="report-cards")
        with gr.Row():
            zs_plot = gr.Plot(show_label=False, elem_id="report-dumbbell")
            lp_plot = gr.Plot(show_label=False, visible=False, elem_id="report-dumbbell-lp")
        gr.Markdown(text.CHART_CAPTIONS["dumbbell"], elem_classes="caption")
        delta_plot = gr.Plot(show_label=False, elem_id="report-delta")
        gr.Markdown(text.CHART_CAPTIONS["delta"], elem_classes="caption")
        curves_plot = gr.Plot(show_label=False, elem_id="report-curves")
        gr.Markdown(text.CHART_CAPTIONS["curves"], elem_classes="caption")
        with gr.Column(visible=False) as wise_col:
            wise_plot = gr.Plot(show_label=False, elem_id="report-wiseft")
            gr.Markdown(text.CHART_CAPTIONS["wise_ft"], elem_classes="caption")
        with gr.Column(visible=False) as seq_col:
            seq_plot = gr.Plot(show_label=False, elem_id="report-continual")
            gr.Markdown(text.CHART_CAPTIONS["continual"], elem_classes="caption")
        table = gr.Dataframe(headers=charts.REPORT_COLUMNS, value=[], interactive=False, label="All numbers",
                             wrap=True, elem_id="report-table")
        gr.Markdown("**Zero-shot**: accuracy from text prompts alone · **Linear probe**: accuracy of a linear "
                    "classifier on the image features · **change**: after − before, in percentage points · "
                    "**ECE**: calibration error, lower is better. Details under *What do these numbers mean?*",
                    elem_classes="caption")
        gr.Markdown("#### Downloads")
        with gr.Row():
            csv_dl = PrivateDownloadButton("CSV", size="sm", elem_id="dl-csv")
            json_dl = PrivateDownloadButton("JSON (results.json)", size="sm", elem_id="dl-json")
            html_dl = PrivateDownloadButton("HTML report (works offline)", size="sm", elem_id="dl-html")
            yaml_dl = PrivateDownloadButton("Spec (YAML)", size="sm", elem_id="dl-yaml")
            ckpt_btn = gr.Button("Prepare checkpoint (safetensors, zipped)", size="sm", elem_id="ckpt-prepare")
            ckpt_dl = PrivateDownloadButton("Download checkpoint", size="sm", visible=False, variant="primary",
                                        elem_id="dl-ckpt")
    with gr.Accordion("What do these numbers mean?", open=False, elem_id="glossary"):
        gr.Markdown(glossary_markdown())

    outputs = [empty, body, headline, cards, zs_plot, lp_plot, delta_plot, curves_plot, wise_col, wise_plot, seq_col,
               seq_plot, table,
               csv_dl, json_dl, html_dl, yaml_dl, ckpt_dl]

    def _export(user: str, job_id: str, kind: str, request: gr.Request | None = None) -> str | None:
        try:
            path = api.export_artifact(user, job_id, kind)
        except Exception:  # noqa: BLE001 — a missing optional artifact must not hide the report
            return None
        return download_url(request, user, path)  # served to this user only, for a limited time

    @user_errors
    def on_select(job_id: str | None, request: gr.Request) -> list:
        user = ctx.user(request)
        if not job_id:
            return [gr.Markdown(visible=True), gr.Column(visible=False)] + [gr.skip()] * (len(outputs) - 2)
        results = api.get_results(user, job_id)  # owner-checked: another user's job is "not found"
        if results is None:
            job = api.get_job(user, job_id)
            msg = f"This run is **{text.md_escape(job.state.lower())}**; its report appears when it finishes."
            return [gr.Markdown(msg, visible=True), gr.Column(visible=False)] + [gr.skip()] * (len(outputs) - 2)
        job = api.get_job(user, job_id)
        html_path = ctx.scratch_file(f"ldifs-report-{job_id if _ID.match(job_id) else 'run'}.html")
        html_path.write_text(charts.report_html(results, str(job.title)), encoding="utf-8")
        has_lp = charts.metric_computed(results, "lp_acc")
        w = charts.wise_ft(results)
        m = charts.continual_matrix(results)
        return [gr.Markdown(visible=False), gr.Column(visible=True), text.headline(results), stat_cards_html(results),
                charts.dumbbell(results, "zs_acc"),
                gr.Plot(charts.dumbbell(results, "lp_acc") if has_lp else None, visible=has_lp),
                charts.delta_bars(results), charts.curves(results), gr.Column(visible=w is not None), w,
                gr.Column(visible=m is not None), m,
                charts.report_table(results),
                _export(user, job_id, "csv", request), _export(user, job_id, "results", request), download_url(request, user, html_path),
                _export(user, job_id, "yaml", request), gr.DownloadButton(visible=False)]

    @user_errors
    def on_checkpoint(job_id: str | None, request: gr.Request) -> Any:
        if not job_id:
            raise gr.Error("Select a finished run first.")
        user = ctx.user(request)
        path = api.export_artifact(user, job_id, "checkpoint")
        gr.Info("Checkpoint ready: press Download checkpoint.")
        return gr.DownloadButton(value=download_url(request, user, path), visible=True)

    @user_errors
    def on_refresh(job_id: str | None, request: gr.Request) -> Any:
        jobs = api.list_jobs(ctx.user(request), states=("DONE",), limit=200)
        ids = [str(j.id) for j in jobs]
        keep = job_id if job_id in ids else (ids[0] if ids else None)
        return gr.Dropdown(choices=done_choices(jobs), value=keep)

    @user_errors
    def on_focus(job_id: str | None, request: gr.Request) -> Any:
        if not job_id:
            return gr.skip()
        jobs = api.list_jobs(ctx.user(request), states=("DONE",), limit=200)
        return gr.Dropdown(choices=done_choices(jobs), value=job_id)

    picker.change(on_select, picker, outputs, api_name="report_select", **PRIVATE)
    refresh.click(on_refresh, picker, picker, api_name="report_refresh", **PRIVATE)
    nav.demo.load(on_page_load(on_refresh, 1), picker, picker, api_name="report_load", **PRIVATE)
    nav.focus_report.change(on_focus, nav.focus_report, picker, api_name="report_focus", **PRIVATE)
    ckpt_btn.click(on_checkpoint, picker, ckpt_dl, api_name="report_checkpoint", **PRIVATE)
    return ReportTab(picker, headline, on_refresh, [picker])
