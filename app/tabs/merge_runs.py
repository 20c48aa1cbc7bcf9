"""New run → "Merge runs": merge two or more of the user's finished runs on one model (a job, by job id)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import story, text
from ..context import AppContext, user_errors
from .common import DONE, PRIVATE, Names, bind

METHODS = [("Task arithmetic: θ0 + λ Σ (θi − θ0)", "task_arithmetic"),
           ("TIES: trim, elect sign, disjoint mean", "ties")]
DEFAULT_GRID = "0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1"
INTRO = ("Combine finished runs on the same model into one set of weights. Each λ on the grid is tried; the one "
         "whose merge scores best on the runs' held-out validation images is kept and evaluated like any run — "
         "every run's target with that run's own classifier, every other dataset zero-shot — so the report "
         "shows what the merge kept of each task and what it forgot. The merge is queued as a job.")


@dataclass
class MergeSection:
    runs: gr.Dropdown
    method: gr.Radio
    lambdas: gr.Textbox
    keep: gr.Number
    name: gr.Textbox
    refresh: gr.Button
    start: gr.Button
    status: gr.Markdown


def layout() -> MergeSection:
    with gr.Accordion("Merge runs", open=False, elem_id="merge-runs"):
        gr.Markdown(INTRO, elem_classes="caption")
        with gr.Row():
            runs = gr.Dropdown(choices=[], value=[], multiselect=True, label="Finished runs to merge (2 to 8)",
                               scale=4, elem_id="merge-pick")
            refresh = gr.Button("Refresh list", size="sm", scale=0, min_width=120, elem_id="merge-refresh")
        with gr.Row():
            method = gr.Radio(choices=METHODS, value="task_arithmetic", label="Method", elem_id="merge-method")
            lambdas = gr.Textbox(value=DEFAULT_GRID, label="λ grid (comma-separated, 0 to 2)", elem_id="merge-lambdas")
            keep = gr.Number(value=0.2, minimum=0.01, maximum=1.0, label="TIES: share of each task vector kept",
                             visible=False, elem_id="merge-keep")  # shown when TIES is picked
        with gr.Row():
            name = gr.Textbox(value="", label="Name (optional)", max_length=120, elem_id="merge-name")
            start = gr.Button("Queue the merge", variant="primary", elem_id="merge-start")
        status = gr.Markdown("", elem_id="merge-status")
    return MergeSection(runs, method, lambdas, keep, name, refresh, start, status)


def mergeable(jobs: Any) -> list:
    """Finished single-task runs (not uploads, merges or continual sequences)."""
    return [j for j in jobs if j.method not in ("push", "merge")
            and not ((getattr(j, "spec", None) or {}).get("data") or {}).get("sequence")]


def merge_summary(results: Any) -> str:
    """For a merge's report: each run's task before, in its own run and in the merge, and each run's
    forgetting next to the merge's (markdown; empty for anything that is not a merge)."""
    m = (results or {}).get("merge") if isinstance(results, dict) else None
    if not isinstance(m, dict) or not m.get("tasks"):
        return ""
    lam = m.get("chosen_lambda")
    head = f"merged (λ = {lam:g})" if isinstance(lam, (int, float)) else "merged"
    rows = [f"| task | classifier | before | its own run | {head} |", "|---|---|---|---|---|"]

    def pct(v: Any) -> str:  # "31.0 %" never broken over two lines on a phone
        return text.pct(v, 1).replace(" ", "\u00a0")

    for t in m["tasks"]:
        rows.append(f"| {text.md_escape(t.get('title') or t.get('dataset'))} | {text.md_escape(t.get('classifier'))} "
                    f"| {pct(t.get('before'))} | {pct(t.get('run_after'))} | {pct(t.get('merged'))} |")
    return "\n".join(rows) + "\n\n" + story.merge_forgetting(results)


def keep_field(method: str) -> Any:
    """TIES' share kept is a setting of TIES only: shown when TIES is picked."""
    return gr.Number(visible=method == "ties")


@user_errors
def refresh_choices(ctx: AppContext, current: Any, request: gr.Request) -> Any:
    user = ctx.user(request)
    jobs = mergeable(ctx.api.list_jobs(user, states=(DONE,), limit=200))
    ids = {str(j.id) for j in jobs}
    keep = [v for v in (current or []) if v in ids]
    return gr.Dropdown(choices=Names.load(ctx.api, user).run_choices(jobs), value=keep, multiselect=True)


@user_errors
def on_merge(ctx: AppContext, runs: Any, method: str, lambdas: str, keep: Any, name: str,
             request: gr.Request) -> tuple:
    """Queue the merge (owner-checked by the service layer) and go to Jobs."""
    user = ctx.user(request)
    picked = len(set(runs or []))
    if not 2 <= picked <= 8:  # said in the form's words (the service layer names its own field, "jobs")
        raise gr.Error(f"Finished runs to merge: pick 2 to 8 runs (you picked {picked}).", title="Merge runs")
    method = method or "task_arithmetic"
    ties = method == "ties" and keep not in (None, "")  # a hidden TIES field never refuses task arithmetic
    job_id = ctx.api.submit_merge(user, list(runs or []), method=method, lambdas=(lambdas or "").strip() or None,
                                  ties_keep=float(keep) if ties else None, name=(name or "").strip() or None)
    gr.Info("Merge queued. Follow it in Jobs; its report appears in Report when it finishes.")
    return f"Queued merge `{text.md_escape(job_id[:8])}`.", gr.Tabs(selected="jobs"), job_id


def wire(ctx: AppContext, nav: Any, section: MergeSection) -> None:
    refresh = bind(refresh_choices, ctx)
    section.refresh.click(refresh, section.runs, section.runs, api_name="merge_refresh", **PRIVATE)
    nav.demo.load(refresh, section.runs, section.runs, api_name="merge_load", show_progress="hidden", **PRIVATE)
    section.method.change(keep_field, section.method, section.keep, api_name="merge_method", show_progress="hidden",
                          **PRIVATE)
    section.start.click(bind(on_merge, ctx), [section.runs, section.method, section.lambdas, section.keep,
                                              section.name], [section.status, nav.tabs, nav.focus_job],
                        api_name="merge_start", **PRIVATE)


def build(ctx: AppContext, nav: Any) -> MergeSection:
    section = layout()
    wire(ctx, nav, section)
    return section
