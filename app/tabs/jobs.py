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
from .common import ACTIVE, CANCELLED, DONE, FAILED, FINISHED, INTERRUPTED, PRIVATE, QUEUED, RUNNING, STOPPED, Names, bind

FILTERS = {"Active": ACTIVE, "Finished": FINISHED, "All": None}
# What the run is doing now, in words. Both the engine's progress phases (JobView.phase, issue 11) and
# the older event names are understood.
PHASES = {"starting": "starting the engine", "queued": "waiting for a worker",
          "loading": "loading the model and datasets", "load": "loading the model and datasets",
          "evaluating_before": "measuring the model before fine-tuning",
          "before_eval": "measuring the model before fine-tuning", "sanity": "checking one training step",
          "fine_tuning": "fine-tuning", "train": "fine-tuning",
          "evaluating_after": "measuring the fine-tuned model", "after_eval": "measuring the fine-tuned model",
          "wise_ft": "computing WiSE-FT mixes", "writing_results": "writing the report", "done": "writing the report",
          "stage": "fine-tuning the next dataset of the sequence",
          "merging": "merging the runs over the lambda grid", "uploading": "uploading to the Hugging Face Hub"}
TRAINING = ("fine_tuning", "train")
STARTING_NOTICE = "starting the engine"
TABLE_HEADERS = ["Run", "State", "Progress", "ETA", "Method", "Target", "Created", "ID"]


# ---- pure helpers -------------------------------------------------------------------------------------
def _when(ts: float | None) -> str:
    if not ts:
        return "—"
    return dt.datetime.fromtimestamp(ts).strftime("%d %b %H:%M")


def _phase(job: Any) -> str | None:
    p = getattr(job, "phase", None)
    return p if p in PHASES else None


def _progress_cell(j: Any) -> str:
    if j.state == QUEUED:
        return "waiting"
    phase = _phase(j)
    if j.state == RUNNING and phase and phase not in TRAINING and phase != "starting":
        pp = getattr(j, "phase_progress", None)
        return PHASES[phase] + (f" {pp * 100:.0f} %" if isinstance(pp, (int, float)) else "")
    return text.progress_bar(j.step, j.total_steps)


def jobs_table(jobs: Sequence[Any], names: Names | None = None) -> list[list[str]]:
    """Rows for the job table (plain text cells: titles are shown as text, never as markup)."""
    names = names or Names({}, {})
    rows = []
    for j in jobs:
        eta = text.duration(j.eta_s) if j.state == RUNNING and _phase(j) in (None, *TRAINING) else "—"
        rows.append([names.title(j), text.state_badge(j.state), _progress_cell(j), eta, names.method(j.method),
                     names.dataset(j.target), _when(j.created_at), str(j.id)[:8]])
    return rows


def job_choices(jobs: Sequence[Any], names: Names | None = None) -> list[tuple[str, str]]:
    names = names or Names({}, {})
    return [(f"{names.title(j)} · {text.state_badge(j.state)} · {str(j.id)[:8]}", str(j.id)) for j in jobs]


def pick_default(jobs: Sequence[Any]) -> str | None:
    """Re-attach: the running job if any, else the newest queued, else the newest."""
    for states in ((RUNNING,), (QUEUED,), None):
        for j in jobs:  # newest first
            if states is None or j.state in states:
                return str(j.id)
    return None


def progress_html(job: Any, title: str = "") -> str:
    """A progress bar built from numbers and fixed words only (no user text reaches this HTML).

    While the run trains, it shows steps and the time left; in the phases after (or before) training
    it shows that phase and its own progress, so a finished training does not read "100 %, 0 s left"
    while the model is still being measured."""
    total, step = int(job.total_steps or 0), int(job.step or 0)
    phase = _phase(job)
    pp = getattr(job, "phase_progress", None)
    running = job.state == RUNNING
    if running and phase and phase not in TRAINING:
        frac = min(max(float(pp), 0.0), 1.0) if isinstance(pp, (int, float)) else None
        parts = [PHASES[phase].capitalize()] + ([f"{frac * 100:.0f} %"] if frac is not None else [])
    else:
        frac = min(max(step / total, 0.0), 1.0) if total else (1.0 if job.state == DONE else 0.0)
        parts = [f"{frac * 100:.0f} %"] + ([f"step {step}/{total}"] if total else [])
        if running and job.eta_s is not None:
            parts.append(f"about {text.duration(job.eta_s)} left")
    pct = None if frac is None else int(round(frac * 100))
    cls = {DONE: "done", FAILED: "failed", CANCELLED: "stopped", INTERRUPTED: "stopped"}.get(job.state, "")
    anim = " running" if running else ""
    label = " · ".join(parts)
    value = f'aria-valuenow="{pct}" ' if pct is not None else ""
    return (f'<div class="ldifs-progress {cls}{anim}" role="progressbar" aria-label="Run progress" '
            f'aria-valuemin="0" aria-valuemax="100" {value}aria-valuetext="{text.html_escape(label)}">'
            f'<div class="fill" style="width:{pct if pct is not None else 100}%"></div>'
            f'<span class="label">{text.html_text(label)}</span></div>')


def job_summary(job: Any, names: Names | None = None) -> str:
    """Markdown: title, state and the numbers a user watches."""
    names = names or Names({}, {})
    lines = [f"## {text.md_escape(names.title(job))}",
             f"{text.state_badge(job.state)} · {text.md_escape(names.method(job.method))} on "
             f"{text.md_escape(names.dataset(job.target))} · job `{text.md_escape(job.id)}`"]
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
    phase = _phase(job)
    if job.state == RUNNING and phase:
        lines.append(f"Now: {PHASES[phase]}")
    if job.state == RUNNING and getattr(job, "cancel_requested", None):
        lines.append("⚠ Stop requested: the run is saving a checkpoint and will stop shortly."
                     if job.cancel_requested == "stop" else "⚠ Kill requested.")
    if job.message and not _stale(job):
        icon = "✗" if job.state == FAILED else "ℹ"
        lines.append(f"\n{icon} {text.md_escape(job.message)}")
    return "\n\n".join(lines)


def _stale(job: Any) -> bool:
    """A message that no longer says anything: the start notice once the engine reports a later phase,
    or the words of the phase already shown."""
    msg = (job.message or "").lower()
    phase = _phase(job)
    if job.state != RUNNING:
        return False
    if STARTING_NOTICE in msg and phase != "starting":
        return True
    return phase is not None  # while a phase is shown ("Now: …"), the engine's own words for it repeat it


BUTTONS = (("stop", "Stop & save", "secondary", "Ask the run to save a checkpoint and stop; it can be resumed."),
           ("kill", "Kill", "stop", "Stop at once without saving (the last checkpoint is kept)."),
           ("cancel", "Cancel", "stop", "Remove this run from the queue."),
           ("stop_group", "Stop the whole group", "stop",
            "Stop every waiting and running run of this group: all its seeds, or a forgetting-budget search "
            "(no more trials start; its answer becomes the best of the trials that finished)."),
           ("resume", "Resume", "primary", "Continue from the last checkpoint."),
           ("report", "Open report", "primary", "See what this run learned and forgot."),
           ("clone", "Edit a copy", "secondary", "Load this run's settings into New run."))


def button_states(state: str | None, grouped: bool = False) -> dict[str, bool]:
    """Which controls make sense for a job in ``state`` (derived from the record, never UI memory);
    ``grouped``: the job is one of a group (seeds, a budget search's trials)."""
    return {
        "stop": state == RUNNING,
        "kill": state == RUNNING,
        "cancel": state == QUEUED,
        "stop_group": grouped and state in (QUEUED, RUNNING),
        "resume": state in (*STOPPED, FAILED),
        "report": state == DONE,
        "clone": state is not None,
    }


def button_help(state: str | None, grouped: bool = False) -> str:
    """One line per control that is visible for this state."""
    vis = button_states(state, grouped)
    return "\n".join(f"- **{label}**: {tip}" for key, label, _v, tip in BUTTONS if vis[key])


def merge_points(cached: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Append new step events, dropping repeats (a resumed run re-emits steps after its checkpoint)."""
    by_step = {int(p["step"]): dict(p) for p in cached if "step" in p}
    for p in new:
        if "step" in p:
            by_step[int(p["step"])] = dict(p)
    return [by_step[k] for k in sorted(by_step)]


# ---- layout ---------------------------------------------------------------------------------------------
@dataclass
class JobsTab:
    filter: gr.Radio
    refresh: gr.Button
    empty: gr.Markdown
    table: gr.Dataframe
    picker: gr.Dropdown
    panel: gr.Group
    summary: gr.Markdown
    progress: gr.HTML
    buttons: dict[str, gr.Button]
    help: gr.Markdown
    plot: gr.Plot
    smoothing: gr.Slider
    log_y: gr.Checkbox
    logs: gr.Textbox
    spec: gr.Textbox
    timer: gr.Timer
    cache: gr.State
    ids: gr.State

    @property
    def list_outputs(self) -> list:
        return [self.table, self.picker, self.empty, self.ids]

    @property
    def panel_outputs(self) -> list:
        return [self.panel, self.summary, self.progress, self.plot, self.logs, self.spec, self.help] + \
            [self.buttons[k] for k, *_ in BUTTONS]

    @property
    def report_button(self) -> gr.Button:
        return self.buttons["report"]


def _panel() -> tuple:
    with gr.Group(visible=False, elem_id="job-panel") as panel:
        with gr.Row():
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="job-summary", padding=True)
                progress = gr.HTML(elem_id="job-progress")
            with gr.Column(scale=1, min_width=220):
                btns = {key: gr.Button(label, variant=variant, size="sm", visible=False, elem_id=f"job-{key}")
                        for key, label, variant, _tip in BUTTONS}
                help_md = gr.Markdown("", elem_classes="button-help")
        # Never empty: Gradio's empty-plot placeholder carries an aria-label on a plain div (axe:
        # aria-prohibited-attr, serious), seen while a selected job's first figure was on its way.
        plot = gr.Plot(charts.empty_figure(text.SELECT_JOB), label="Training", elem_id="job-plot", show_label=False)
        with gr.Row():
            smoothing = gr.Slider(0, 0.99, value=0.6, step=0.01, label="Smoothing",
                                  info="Exponential moving average of the loss (0 = raw).")
            log_y = gr.Checkbox(value=False, label="Log-scale loss", info="Useful when the loss spans decades.")
        with gr.Row():
            with gr.Column():
                # Read-only text boxes, not gr.Code: its scroll area cannot take keyboard focus and its
                # syntax colours fail contrast (axe-core; docs/APP.md, Accessibility).
                logs = gr.Textbox(label="Last log lines", lines=12, max_lines=40, interactive=False,
                                  elem_id="job-logs", elem_classes="mono")
            with gr.Column():
                spec_box = gr.Textbox(label="Spec (frozen at submit time)", lines=12, max_lines=60,
                                      interactive=False, elem_id="job-spec", elem_classes="mono")
    return panel, summary, progress, btns, help_md, plot, smoothing, log_y, logs, spec_box


def layout(ctx: AppContext) -> JobsTab:
    with gr.Row():
        flt = gr.Radio(list(FILTERS), value="All", label="Show", scale=2, elem_id="jobs-filter")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100, elem_id="jobs-refresh")
    empty = gr.Markdown(text.EMPTY_JOBS, visible=True, elem_id="jobs-empty")
    table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, wrap=True, elem_id="jobs-table",
                         column_widths=["22%", "11%", "18%", "9%", "8%", "10%", "12%", "10%"], max_height=360,
                         pinned_columns=1)
    picker = gr.Dropdown(choices=[], value=None, label="Selected run", elem_id="job-picker", allow_custom_value=False)
    panel, summary, progress, btns, help_md, plot, smoothing, log_y, logs, spec_box = _panel()
    timer = gr.Timer(ctx.poll_s, active=True)
    return JobsTab(flt, refresh, empty, table, picker, panel, summary, progress, btns, help_md, plot, smoothing,
                   log_y, logs, spec_box, timer, gr.State({}), gr.State([]))


# ---- handlers ---------------------------------------------------------------------------------------------
def _points(ctx: AppContext, user: str, job_id: str, cache_v: Mapping[str, Any]) -> tuple[list[dict], bool]:
    cached = cache_v.get("points", []) if cache_v.get("job") == job_id else []
    last = int(cached[-1]["step"]) if cached else 0
    new = ctx.api.job_metrics(user, job_id, after_step=last)
    return merge_points(cached, new), bool(new)


def _logs(ctx: AppContext, user: str, job_id: str) -> str:
    return "\n".join(ctx.api.job_logs(user, job_id, n=40)) or "(no log lines yet)"


def _list(ctx: AppContext, user: str, flt_v: str) -> list:
    return ctx.api.list_jobs(user, states=FILTERS.get(flt_v), limit=200)


def _signature(job: Any) -> tuple:
    return (job.state, job.step, job.message, getattr(job, "phase", None), getattr(job, "phase_progress", None))


def panel_updates(ctx: AppContext, user: str, job_id: str | None, smooth: float, logy: bool) -> list:
    """Every per-job output fully refreshed (selection change, button press), then the new cache."""
    if not job_id:
        return [gr.Group(visible=False), "", "", charts.empty_figure(text.SELECT_JOB), "", "", ""] + \
               [gr.Button(visible=False) for _ in BUTTONS] + [{}]
    job = ctx.api.get_job(user, job_id)
    names = Names.load(ctx.api, user)
    pts, _ = _points(ctx, user, job_id, {})
    vis = button_states(job.state, bool(job.group))
    cache = {"job": job_id, "points": pts, "sig": _signature(job)}
    return ([gr.Group(visible=True), job_summary(job, names), progress_html(job),
             charts.live_training(pts, smooth, logy), _logs(ctx, user, job_id),
             forms.spec_yaml(forms.canonical(job.spec)), button_help(job.state, bool(job.group))]
            + [gr.Button(visible=vis[k]) for k, *_ in BUTTONS] + [cache])


@user_errors
def select_job(ctx: AppContext, job_id: str | None, smooth: float, logy: bool, request: gr.Request) -> list:
    return panel_updates(ctx, ctx.user(request), job_id, smooth, logy)


def list_updates(jobs: Sequence[Any], names: Names, value: Any = None) -> list:
    """The table, the picker (choices; a value only when given), the empty note and the id order."""
    picker = gr.Dropdown(choices=job_choices(jobs, names)) if value is None else \
        gr.Dropdown(choices=job_choices(jobs, names), value=value)
    return [jobs_table(jobs, names), picker, gr.Markdown(visible=not jobs), [str(j.id) for j in jobs]]


def tick(ctx: AppContext, n_panel: int, flt_v: str, job_id: str | None, cache_v: dict, smooth: float, logy: bool,
         request: gr.Request) -> list:
    """Cheap poll: table + the selected job's new points; unchanged outputs are skipped."""
    user = ctx.user(request)
    jobs = _list(ctx, user, flt_v)
    names = Names.load(ctx.api, user)
    rows = jobs_table(jobs, names)
    sig = hash(str(rows))
    out = list_updates(jobs, names) if sig != cache_v.get("table_sig") else [gr.skip()] * 4
    new_cache = dict(cache_v, table_sig=sig)
    if not job_id or job_id != cache_v.get("job"):
        return out + [gr.skip()] * n_panel + [new_cache]
    job = next((j for j in jobs if str(j.id) == job_id), None) or ctx.api.get_job(user, job_id)
    pts, got_new = _points(ctx, user, job_id, cache_v)
    changed = _signature(job) != tuple(cache_v.get("sig") or ())
    if not got_new and not changed:
        return out + [gr.skip()] * n_panel + [new_cache]
    vis = button_states(job.state, bool(job.group))
    old_state = (cache_v.get("sig") or [None])[0]
    new_cache.update(points=pts, sig=_signature(job))
    return out + [gr.skip(), job_summary(job, names), progress_html(job), charts.live_training(pts, smooth, logy),
                  _logs(ctx, user, job_id), gr.skip(), button_help(job.state, bool(job.group)) if job.state != old_state else gr.skip()] + \
        [gr.Button(visible=vis[k]) for k, *_ in BUTTONS] + [new_cache]


@user_errors
def refresh_list(ctx: AppContext, flt_v: str, job_id: str | None, request: gr.Request) -> list:
    user = ctx.user(request)
    jobs = _list(ctx, user, flt_v)
    keep = job_id if job_id in [str(j.id) for j in jobs] else pick_default(jobs)
    return list_updates(jobs, Names.load(ctx.api, user), value=keep)


@user_errors
def focus_job(ctx: AppContext, job_id: str | None, flt_v: str, request: gr.Request) -> list:
    """A run was just submitted elsewhere: list it and select it."""
    if not job_id:
        return [gr.skip()] * 4
    user = ctx.user(request)
    return list_updates(_list(ctx, user, "All"), Names.load(ctx.api, user), value=job_id)


def replot(cache_v: dict, smooth: float, logy: bool) -> Any:
    return charts.live_training(cache_v.get("points", []), smooth, logy) if cache_v.get("job") else gr.skip()


def row_to_id(evt: gr.SelectData, ids_v: list) -> Any:
    try:
        return ids_v[evt.index[0]]
    except (IndexError, TypeError, KeyError):
        return gr.skip()


ACTION_INFO = {"stop": "Stop requested: the run saves a checkpoint and stops.", "kill": "Kill requested.",
               "cancel": "Removed from the queue.", "resume": "Resuming from the last checkpoint.",
               "stop_group": "Stopping the group: {n} run(s) cancelled or asked to save a checkpoint and stop."}


@user_errors
def act(ctx: AppContext, kind: str, job_id: str | None, smooth: float, logy: bool, request: gr.Request) -> list:
    """Stop, kill, cancel or resume the selected run, then redraw its panel."""
    user = ctx.user(request)
    if not job_id:
        raise gr.Error("Select a run first.")
    n = 0
    if kind == "resume":
        ctx.api.resume(user, job_id)
    elif kind == "stop_group":
        n = len(ctx.api.cancel_group(user, job_id))
    else:
        ctx.api.cancel(user, job_id, mode="kill" if kind == "kill" else "stop")
    gr.Info(ACTION_INFO[kind].format(n=n))
    return panel_updates(ctx, user, job_id, smooth, logy)


@user_errors
def clone(ctx: AppContext, job_id: str | None, request: gr.Request) -> tuple:
    job = ctx.api.get_job(ctx.user(request), job_id)
    return gr.Tabs(selected="new"), {"spec": job.spec, "nonce": dt.datetime.now().timestamp()}


# ---- wiring -------------------------------------------------------------------------------------------------
def wire(ctx: AppContext, nav: Any, tab: JobsTab) -> None:
    panel_out = tab.panel_outputs + [tab.cache]
    tick_outputs = tab.list_outputs + panel_out
    # Through the queue like every other event: private events are refused on gradio's direct
    # /run/predict route (issue 10), so a queue=False tick never reached the server.
    tab.timer.tick(quiet(bind(tick, ctx, len(tab.panel_outputs)), lambda *a, **k: [gr.skip()] * len(tick_outputs)),
                   [tab.filter, tab.picker, tab.cache, tab.smoothing, tab.log_y], tick_outputs, api_name="jobs_tick",
                   concurrency_limit=None, show_progress="hidden", **PRIVATE)
    refresh = bind(refresh_list, ctx)
    tab.refresh.click(refresh, [tab.filter, tab.picker], tab.list_outputs, api_name="jobs_refresh", **PRIVATE)
    tab.filter.change(refresh, [tab.filter, tab.picker], tab.list_outputs, api_name="jobs_filter", **PRIVATE)
    nav.demo.load(on_page_load(refresh, len(tab.list_outputs)), [tab.filter, tab.picker], tab.list_outputs,
                  api_name="jobs_load", **PRIVATE)
    tab.picker.change(bind(select_job, ctx), [tab.picker, tab.smoothing, tab.log_y], panel_out,
                      api_name="jobs_select", show_progress="hidden", **PRIVATE)
    gr.on([tab.smoothing.release, tab.log_y.input], replot, [tab.cache, tab.smoothing, tab.log_y], tab.plot,
          api_name="jobs_replot", show_progress="hidden", **PRIVATE)
    tab.table.select(row_to_id, tab.ids, tab.picker, api_name="jobs_row", **PRIVATE)
    for kind in ("stop", "kill", "cancel", "stop_group", "resume"):
        tab.buttons[kind].click(bind(act, ctx, kind), [tab.picker, tab.smoothing, tab.log_y], panel_out,
                                api_name=f"jobs_{kind}", concurrency_limit=4, **PRIVATE)
    tab.buttons["clone"].click(bind(clone, ctx), tab.picker, [nav.tabs, nav.clone_spec], api_name="jobs_clone",
                               **PRIVATE)
    nav.focus_job.change(bind(focus_job, ctx), [nav.focus_job, tab.filter], tab.list_outputs, api_name="jobs_focus",
                         **PRIVATE)


def build(ctx: AppContext, nav: Any) -> JobsTab:
    """The Jobs tab; its "Open report" button is wired by the app once the Report tab exists."""
    tab = layout(ctx)
    wire(ctx, nav, tab)
    return tab
