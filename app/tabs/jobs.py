"""Jobs: the live queue, and per job its progress, training charts, log, frozen spec and controls.

Everything shown comes from the job store through ``tasks.api``, so a refreshed page or a new
browser re-attaches. The timer handler is cheap and read-only: it fetches only new metric points
and skips every output that did not change.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import charts, forms, text
from ..context import AppContext, on_page_load, quiet, user_errors

PRIVATE = dict(api_visibility="private")
ACTIVE = ("QUEUED", "RUNNING")
FINISHED = ("DONE", "FAILED", "CANCELLED", "INTERRUPTED")
FILTERS = {"Active": ACTIVE, "Finished": FINISHED, "All": None}
PHASES = {"starting": "starting the engine", "load": "loading the model and datasets",
          "before_eval": "measuring the model before fine-tuning", "sanity": "checking one training step",
          "train": "fine-tuning", "after_eval": "measuring the fine-tuned model", "wise_ft": "computing WiSE-FT mixes",
          "done": "writing the report"}
TABLE_HEADERS = ["Run", "State", "Progress", "ETA", "Method", "Target", "Created", "ID"]


# ---- pure helpers -------------------------------------------------------------------------------------
def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(ts).strftime("%d %b %H:%M")


def jobs_table(jobs: Sequence[Any]) -> list[list[str]]:
    """Rows for the job table (plain text cells: titles are shown as text, never as markup)."""
    rows = []
    for j in jobs:
        eta = text.duration(j.eta_s) if j.state == "RUNNING" else "—"
        prog = text.progress_bar(j.step, j.total_steps) if j.state != "QUEUED" else "waiting"
        rows.append([str(j.title), text.state_badge(j.state), prog, eta, str(j.method), str(j.target),
                     _when(j.created_at), str(j.id)[:8]])
    return rows


def job_choices(jobs: Sequence[Any]) -> list[tuple[str, str]]:
    return [(f"{j.title} · {text.state_badge(j.state)} · {str(j.id)[:8]}", str(j.id)) for j in jobs]


def pick_default(jobs: Sequence[Any]) -> str | None:
    """Re-attach: the running job if any, else the newest queued, else the newest."""
    for states in (("RUNNING",), ("QUEUED",), None):
        for j in jobs:  # newest first
            if states is None or j.state in states:
                return str(j.id)
    return None


def progress_html(job: Any) -> str:
    """A progress bar built from numbers only (no user text reaches this HTML)."""
    total = int(job.total_steps or 0)
    step = int(job.step or 0)
    frac = min(max(step / total, 0.0), 1.0) if total else (1.0 if job.state == "DONE" else 0.0)
    pct = int(round(frac * 100))
    parts = [f"{pct} %"]
    if total:
        parts.append(f"step {step}/{total}")
    if job.state == "RUNNING" and job.eta_s is not None:
        parts.append(f"about {text.duration(job.eta_s)} left")
    cls = {"DONE": "done", "FAILED": "failed", "CANCELLED": "stopped", "INTERRUPTED": "stopped"}.get(job.state, "")
    anim = " running" if job.state == "RUNNING" else ""
    return (f'<div class="ldifs-progress {cls}{anim}" role="progressbar" aria-valuemin="0" aria-valuemax="100" '
            f'aria-valuenow="{pct}"><div class="fill" style="width:{pct}%"></div>'
            f'<span class="label">{text.html_text(" · ".join(parts))}</span></div>')


def job_summary(job: Any) -> str:
    """Markdown: title, state and the numbers a user watches."""
    lines = [f"### {text.md_escape(job.title)}",
             f"{text.state_badge(job.state)} · {text.md_escape(job.method)} on {text.md_escape(job.target)} · "
             f"job `{text.md_escape(job.id)}`"]
    facts = []
    if job.samples_per_s:
        facts.append(f"{job.samples_per_s:,.0f} images/s")
    if job.checkpoint_step:
        facts.append(f"last checkpoint at step {job.checkpoint_step}")
    if job.attempts and job.attempts > 1:
        facts.append(f"attempt {job.attempts}")
    if job.started_at:
        facts.append(f"started {_when(job.started_at)}")
    if job.finished_at:
        facts.append(f"finished {_when(job.finished_at)}")
    for b in job.backoffs or []:
        micro = b.get("micro_batch", "?") if isinstance(b, Mapping) else "?"
        facts.append(f"out-of-memory back-off: micro-batch {micro}")
    if facts:
        lines.append(" · ".join(facts))
    phase = getattr(job, "phase", None)
    if job.state == "RUNNING" and phase in PHASES:
        lines.append(f"Now: {PHASES[phase]}")
    if job.state == "RUNNING" and getattr(job, "cancel_requested", None):
        lines.append("⚠ Stop requested: the run is saving a checkpoint and will stop shortly."
                     if job.cancel_requested == "stop" else "⚠ Kill requested.")
    duplicate = job.state == "RUNNING" and phase in PHASES and PHASES[phase] in job.message.lower()
    if job.message and not duplicate:
        icon = "✗" if job.state == "FAILED" else "ℹ"
        lines.append(f"\n{icon} {text.md_escape(job.message)}")
    return "\n\n".join(lines)


BUTTONS = (("stop", "Stop & save", "secondary", "Ask the run to save a checkpoint and stop; it can be resumed."),
           ("kill", "Kill", "stop", "Stop at once without saving (the last checkpoint is kept)."),
           ("cancel", "Cancel", "stop", "Remove this run from the queue."),
           ("resume", "Resume", "primary", "Continue from the last checkpoint."),
           ("report", "Open report", "primary", "See what this run learned and forgot."),
           ("clone", "Edit a copy", "secondary", "Load this run's settings into New run."))


def button_states(state: str | None) -> dict[str, bool]:
    """Which controls make sense for a job in ``state`` (derived from the record, never UI memory)."""
    return {
        "stop": state == "RUNNING",
        "kill": state == "RUNNING",
        "cancel": state == "QUEUED",
        "resume": state in ("CANCELLED", "INTERRUPTED", "FAILED"),
        "report": state == "DONE",
        "clone": state is not None,
    }


def button_help(state: str | None) -> str:
    """One line per control that is visible for this state."""
    vis = button_states(state)
    return "\n".join(f"- **{label}**: {tip}" for key, label, _v, tip in BUTTONS if vis[key])


def merge_points(cached: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Append new step events, dropping repeats (a resumed run re-emits steps after its checkpoint)."""
    by_step = {int(p["step"]): dict(p) for p in cached if "step" in p}
    for p in new:
        if "step" in p:
            by_step[int(p["step"])] = dict(p)
    return [by_step[k] for k in sorted(by_step)]


# ---- the tab ----------------------------------------------------------------------------------------------
@dataclass
class JobsTab:
    table: gr.Dataframe
    picker: gr.Dropdown
    summary: gr.Markdown
    progress: gr.HTML
    plot: gr.Plot
    timer: gr.Timer


def build(ctx: AppContext, nav: Any) -> JobsTab:
    api = ctx.api
    with gr.Row():
        flt = gr.Radio(list(FILTERS), value="All", label="Show", scale=2, elem_id="jobs-filter")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    empty = gr.Markdown(text.EMPTY_JOBS, visible=True, elem_id="jobs-empty")
    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, wrap=True, elem_id="jobs-table",
                         column_widths=["22%", "11%", "18%", "9%", "8%", "10%", "12%", "10%"], max_height=360)
    picker = gr.Dropdown(choices=[], value=None, label="Selected run", elem_id="job-picker", allow_custom_value=False)
    with gr.Group(visible=False) as panel:
        with gr.Row():
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="job-summary", padding=True)
                progress = gr.HTML(elem_id="job-progress")
            with gr.Column(scale=1, min_width=220):
                btns = {key: gr.Button(label, variant=variant, size="sm", visible=False, elem_id=f"job-{key}")
                        for key, label, variant, _tip in BUTTONS}
                help_md = gr.Markdown("", elem_classes="button-help")
        plot = gr.Plot(label="Training", elem_id="job-plot", show_label=False)
        with gr.Row():
            smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Smoothing",
                                  info="Exponential moving average of the loss (0 = raw).")
            log_y = gr.Checkbox(value=False, label="Log-scale loss", info="Useful when the loss spans decades.")
        with gr.Row():
            with gr.Column():
                logs = gr.Code(label="Last log lines", language=None, lines=12, max_lines=40, interactive=False,
                               elem_id="job-logs")
            with gr.Column():
                spec_box = gr.Code(label="Spec (frozen at submit time)", language="yaml", lines=12, max_lines=60,
                                   interactive=False)
    timer = gr.Timer(ctx.poll_s, active=True)
    cache = gr.State({})
    ids = gr.State([])  # full job ids in table order (the table shows short ones)

    def _points(user: str, job_id: str, cache_v: Mapping[str, Any]) -> tuple[list[dict], bool]:
        cached = cache_v.get("points", []) if cache_v.get("job") == job_id else []
        last = int(cached[-1]["step"]) if cached else 0
        new = api.job_metrics(user, job_id, after_step=last)
        return merge_points(cached, new), bool(new)

    def panel_updates(user: str, job_id: str | None, smooth: float, logy: bool) -> tuple[list, dict]:
        """Every per-job output, fully refreshed (selection change, button press)."""
        if not job_id:
            return [gr.Group(visible=False), "", "", charts.empty_figure(text.SELECT_JOB), "", "", ""] + \
                   [gr.Button(visible=False) for _ in BUTTONS], {}
        job = api.get_job(user, job_id)
        pts, _ = _points(user, job_id, {})
        vis = button_states(job.state)
        new_cache = {"job": job_id, "points": pts, "state": job.state, "step": job.step, "msg": job.message}
        return ([gr.Group(visible=True), job_summary(job), progress_html(job),
                 charts.live_training(pts, smooth, logy), _logs(user, job_id),
                 forms.spec_yaml(forms.canonical(job.spec)), button_help(job.state)]
                + [gr.Button(visible=vis[k]) for k, *_ in BUTTONS], new_cache)

    def _logs(user: str, job_id: str) -> str:
        return "\n".join(api.job_logs(user, job_id, n=40)) or "(no log lines yet)"

    panel_outputs = [panel, summary, progress, plot, logs, spec_box, help_md] + [btns[k] for k, *_ in BUTTONS]

    def list_for(user: str, flt_v: str) -> list:
        return api.list_jobs(user, states=FILTERS.get(flt_v), limit=200)

    @user_errors
    def on_select(job_id: str | None, smooth: float, logy: bool, request: gr.Request) -> list:
        ups, c = panel_updates(ctx.user(request), job_id, smooth, logy)
        return ups + [c]

    def tick(flt_v: str, job_id: str | None, cache_v: dict, smooth: float, logy: bool, request: gr.Request) -> list:
        """Cheap poll: table + the selected job's new points; unchanged outputs are skipped."""
        user = ctx.user(request)
        jobs = list_for(user, flt_v)
        rows = jobs_table(jobs)
        sig = hash(str(rows))
        out: list = []
        if sig != cache_v.get("table_sig"):
            out += [rows, gr.Dropdown(choices=job_choices(jobs)), gr.Markdown(visible=not jobs),
                    [str(j.id) for j in jobs]]
        else:
            out += [gr.skip()] * 4
        new_cache = dict(cache_v, table_sig=sig)
        if not job_id or job_id != cache_v.get("job"):
            return out + [gr.skip()] * len(panel_outputs) + [new_cache]
        job = next((j for j in jobs if str(j.id) == job_id), None) or api.get_job(user, job_id)
        pts, got_new = _points(user, job_id, cache_v)
        changed = (job.state, job.step, job.message) != (cache_v.get("state"), cache_v.get("step"), cache_v.get("msg"))
        if not got_new and not changed:
            return out + [gr.skip()] * len(panel_outputs) + [new_cache]
        vis = button_states(job.state)
        new_cache.update(points=pts, state=job.state, step=job.step, msg=job.message)
        return out + [gr.skip(), job_summary(job), progress_html(job),
                      charts.live_training(pts, smooth, logy) if got_new or changed else gr.skip(),
                      _logs(user, job_id), gr.skip(),
                      button_help(job.state) if job.state != cache_v.get("state") else gr.skip()] + \
            [gr.Button(visible=vis[k]) for k, *_ in BUTTONS] + [new_cache]

    tick_outputs = [table, picker, empty, ids] + panel_outputs + [cache]
    timer.tick(quiet(tick, lambda *a, **k: [gr.skip()] * len(tick_outputs)),
               [flt, picker, cache, smoothing, log_y], tick_outputs, api_name="jobs_tick", concurrency_limit=None,
               show_progress="hidden", queue=False, **PRIVATE)

    @user_errors
    def on_refresh(flt_v: str, job_id: str | None, request: gr.Request) -> list:
        user = ctx.user(request)
        jobs = list_for(user, flt_v)
        job_ids = [str(j.id) for j in jobs]
        keep = job_id if job_id in job_ids else pick_default(jobs)
        return [jobs_table(jobs), gr.Dropdown(choices=job_choices(jobs), value=keep), gr.Markdown(visible=not jobs),
                job_ids]

    list_outputs = [table, picker, empty, ids]
    refresh.click(on_refresh, [flt, picker], list_outputs, api_name="jobs_refresh", **PRIVATE)
    flt.change(on_refresh, [flt, picker], list_outputs, api_name="jobs_filter", **PRIVATE)
    nav.demo.load(on_page_load(on_refresh, len(list_outputs)), [flt, picker], list_outputs, api_name="jobs_load",
                  **PRIVATE)
    picker.change(on_select, [picker, smoothing, log_y], panel_outputs + [cache], api_name="jobs_select",
                  show_progress="hidden", **PRIVATE)

    def on_replot(cache_v: dict, smooth: float, logy: bool) -> Any:
        return charts.live_training(cache_v.get("points", []), smooth, logy) if cache_v.get("job") else gr.skip()

    gr.on([smoothing.release, log_y.input], on_replot, [cache, smoothing, log_y], plot, api_name="jobs_replot",
          show_progress="hidden", **PRIVATE)

    def on_row(evt: gr.SelectData, ids_v: list) -> Any:
        try:
            return ids_v[evt.index[0]]
        except (IndexError, TypeError, KeyError):
            return gr.skip()

    table.select(on_row, ids, picker, api_name="jobs_row", **PRIVATE)

    def action(kind: str):
        @user_errors
        def run(job_id: str | None, smooth: float, logy: bool, request: gr.Request) -> list:
            user = ctx.user(request)
            if not job_id:
                raise gr.Error("Select a run first.")
            if kind == "resume":
                api.resume(user, job_id)
                gr.Info("Resuming from the last checkpoint.")
            else:
                mode = "kill" if kind == "kill" else "stop"
                api.cancel(user, job_id, mode=mode)
                gr.Info({"stop": "Stop requested: the run saves a checkpoint and stops.",
                         "kill": "Kill requested.", "cancel": "Removed from the queue."}[kind])
            ups, c = panel_updates(user, job_id, smooth, logy)
            return ups + [c]
        return run

    for kind in ("stop", "kill", "cancel", "resume"):
        btns[kind].click(action(kind), [picker, smoothing, log_y], panel_outputs + [cache], api_name=f"jobs_{kind}",
                         concurrency_limit=4, **PRIVATE)

    btns["report"].click(lambda j: (gr.Tabs(selected="report"), j), picker, [nav.tabs, nav.focus_report],
                         api_name="jobs_open_report", **PRIVATE)

    @user_errors
    def on_clone(job_id: str | None, request: gr.Request) -> tuple:
        job = api.get_job(ctx.user(request), job_id)
        return gr.Tabs(selected="new"), {"spec": job.spec, "nonce": dt.datetime.now().timestamp()}

    btns["clone"].click(on_clone, picker, [nav.tabs, nav.clone_spec], api_name="jobs_clone", **PRIVATE)

    @user_errors
    def on_focus(job_id: str | None, flt_v: str, request: gr.Request) -> list:
        """A run was just submitted elsewhere: list it and select it."""
        if not job_id:
            return [gr.skip()] * 4
        jobs = list_for(ctx.user(request), "All")
        return [jobs_table(jobs), gr.Dropdown(choices=job_choices(jobs), value=job_id), gr.Markdown(visible=not jobs),
                [str(j.id) for j in jobs]]

    nav.focus_job.change(on_focus, [nav.focus_job, flt], list_outputs, api_name="jobs_focus", **PRIVATE)
    return JobsTab(table, picker, summary, progress, plot, timer)
