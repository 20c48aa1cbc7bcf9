"""Report → "Share": the run's Hugging Face model card (a zip to download) and "Push to Hub" (a job).

The card's headline is the report's own (``story.headline``), passed to the service layer with the
request; the run is named by its job id only (owner-checked there). Pushing needs a token on the
server (``HF_TOKEN``); without one the user gets one line pointing at the card download and
``ldifs card``. The token is never shown back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import story, text
from ..context import AppContext, user_errors
from ..downloads import PrivateDownloadButton, download_url
from .common import PRIVATE, bind

NO_TOKEN = ("Pushing needs a Hugging Face token on the server (HF_TOKEN). Download the model card instead and "
            "upload the folder yourself, or run `ldifs card RUN_DIR --out DIR` / `ldifs push` on the server.")


@dataclass
class ShareSection:
    card: gr.Button
    card_dl: gr.DownloadButton
    repo: gr.Textbox
    public: gr.Checkbox
    push: gr.Button
    status: gr.Markdown


def layout() -> ShareSection:
    gr.Markdown("### Share on the Hugging Face Hub")
    gr.Markdown("The model card holds the weights (safetensors, loadable with open_clip), the target classifier, "
                "`results.json` and a README with the forgetting table and these numbers as Hub metadata.",
                elem_classes="caption")
    with gr.Row():
        card = gr.Button("Prepare model card (zip)", size="sm", elem_id="card-prepare")
        card_dl = PrivateDownloadButton("Download model card", size="sm", visible=False, variant="primary",
                                        elem_id="dl-card")
    # The name on a line of its own: side by side with the switch and button it was clipped on a phone.
    repo = gr.Textbox(label="Hub repository (user/name)", placeholder="your-name/clip-quadrant-ldifs",
                      max_length=193, elem_id="push-repo")
    with gr.Row():
        public = gr.Checkbox(value=False, label="Public (default: private)", scale=1, elem_id="push-public")
        push = gr.Button("Push to Hub", size="sm", scale=1, elem_id="push-start")
    status = gr.Markdown("", elem_id="push-status")
    return ShareSection(card, card_dl, repo, public, push, status)


def _headline(ctx: AppContext, user: str, job_id: str) -> str | None:
    results = ctx.api.get_results(user, job_id)  # owner-checked
    return story.headline(results) if results else None


@user_errors
def prepare_card(ctx: AppContext, job_id: str | None, request: gr.Request) -> Any:
    if not job_id:
        raise gr.Error("Select a finished run first.")
    user = ctx.user(request)
    path = ctx.api.model_card(user, job_id, headline=_headline(ctx, user, job_id))
    gr.Info("Model card ready: press Download model card.")
    return gr.DownloadButton(value=download_url(request, user, path), visible=True)


@user_errors
def push(ctx: AppContext, job_id: str | None, repo: str, public: bool, request: gr.Request) -> tuple:
    """Queue the upload as a job (a token must be configured on the server) and go to Jobs."""
    if not job_id:
        raise gr.Error("Select a finished run first.")
    user = ctx.user(request)
    if not ctx.api.hub_token_configured():
        gr.Warning(NO_TOKEN)
        return text.md_escape(NO_TOKEN), gr.skip(), gr.skip()
    push_id = ctx.api.push_to_hub(user, job_id, (repo or "").strip(), headline=_headline(ctx, user, job_id),
                                  private=not public)
    gr.Info("Upload queued. Follow it in Jobs.")
    return f"Upload queued as job `{push_id[:8]}`.", gr.Tabs(selected="jobs"), push_id


def wire(ctx: AppContext, nav: Any, section: ShareSection, picker: gr.Dropdown) -> None:
    section.card.click(bind(prepare_card, ctx), picker, section.card_dl, api_name="report_card", **PRIVATE)
    section.push.click(bind(push, ctx), [picker, section.repo, section.public],
                       [section.status, nav.tabs, nav.focus_job], api_name="report_push", **PRIVATE)
