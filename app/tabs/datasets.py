"""Datasets: upload a zip of class folders, see the ingestion report, browse, preview, edit prompts."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from ldifs_engine.errors import LdifsError

from .. import text
from ..context import AppContext, on_page_load, user_errors
from .common import PRIVATE, bind

TABLE_HEADERS = ["Dataset", "Classes", "Source", "On this server", "Key"]


def catalog_rows(datasets: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """Rows of the catalog table (plain text cells)."""
    def available(d: Mapping[str, Any]) -> str:
        if d.get("source") in ("builtin", "upload") or d.get("available") is True:
            return "yes"
        return "no — see details" if d.get("available") is False else "check details"

    return [[str(d.get("title") or d.get("name") or d["key"]), str(d.get("num_classes", "")), str(d.get("source", "")),
             available(d), str(d["key"])] for d in datasets]


def ingestion_markdown(report: Mapping[str, Any]) -> str:
    """The upload's ingestion report: what was kept, what was skipped and why (names escaped)."""
    title = text.md_escape(report.get("name") or report.get("title") or report.get("key") or "dataset")
    classes = report.get("classes") or []
    n_cls = report.get("num_classes", len(classes) if isinstance(classes, list) else classes)
    n_img = report.get("accepted", report.get("images", "?"))
    lines = [f"✓ **Imported {title}**: {n_img} images in {n_cls} classes.",
             "It is now in the dataset lists of **New run**."]
    if isinstance(classes, list) and classes:
        lines += ["", "| Class | Images | train / test |", "|---|---|---|"]
        for c in classes[:200]:
            lines.append(f"| {text.md_escape(c.get('name', '?'))} | {c.get('count', '?')} | "
                         f"{c.get('train', '?')} / {c.get('test', '?')} |")
    skipped = report.get("quarantined") or report.get("skipped") or []
    if skipped:
        lines.append(f"\n⚠ **{len(skipped)} file{'s' if len(skipped) != 1 else ''} skipped:**")
        for q in skipped[:20]:
            if isinstance(q, Mapping):
                # Plain escaped text, not a code span: inside backticks the escapes would show as backslashes.
                lines.append(f"- {text.md_escape(q.get('member') or q.get('name') or '?')}: "
                             f"{text.md_escape(q.get('reason', ''))}")
            else:
                lines.append(f"- {text.md_escape(q)}")
        if len(skipped) > 20:
            lines.append(f"- … and {len(skipped) - 20} more")
    for w in report.get("warnings") or []:
        if "skipped" not in str(w):
            lines.append(f"\n⚠ {text.md_escape(w)}")
    quota = report.get("quota") or {}
    if quota.get("quota_bytes"):
        lines.append(f"\nStorage: {quota.get('used_bytes', 0) / 1e6:,.1f} MB of "
                     f"{quota['quota_bytes'] / 1e6:,.0f} MB used.")
    return "\n".join(lines)


def detail_markdown(d: Mapping[str, Any]) -> str:
    """Title, source, classes with counts, warnings; or how to get a dataset that is missing."""
    lines = [f"### {text.md_escape(d.get('title') or d.get('name') or d.get('key'))}",
             f"`{text.md_escape(d.get('key', ''))}` · {text.md_escape(d.get('source', ''))} · "
             f"{d.get('num_classes', len(d.get('classnames') or []))} classes"]
    if d.get("description"):
        lines.append(text.md_escape(d["description"]))
    if d.get("available") is False:
        lines.append(f"⚠ Not on this server yet. {text.md_escape(d.get('message') or d.get('how_to_get') or '')}")
    classes = d.get("classes") or []
    if classes:
        rows = ["| # | Class | Images |", "|---|---|---|"]
        for c in classes[:200]:
            n = c.get("count", c.get("test", "?"))
            rows.append(f"| {c.get('index', '')} | {text.md_escape(c.get('name', '?'))} | {n} |")
        lines.append("\n".join(rows))
    for w in d.get("warnings") or []:
        lines.append(f"⚠ {text.md_escape(w)}")
    return "\n\n".join(lines)


def is_upload(key: str | None) -> bool:
    return bool(key) and str(key).startswith("upload:")


def rejected_markdown(message: str) -> str:
    """Why an upload was not imported, shown where the import report goes (it stays until the next try)."""
    return (f"✗ **Not imported.** {text.md_escape(message)}\n\nNothing was stored. Fix the zip (one folder "
            "per class, at least 2 classes with 5 images each) and import it again.")


@dataclass
class DatasetsTab:
    upload: gr.File
    name: gr.Textbox
    import_btn: gr.Button
    report: gr.Markdown
    table: gr.Dataframe
    picker: gr.Dropdown
    detail_outputs: list
    classes: gr.Textbox
    templates: gr.Textbox
    save: gr.Button
    save_note: gr.Markdown


def layout() -> DatasetsTab:
    gr.Markdown("Bring your own images: a **zip with one folder per class** (at least 2 classes, 5 images each). "
                "Images are checked and re-encoded on the server; nothing else from the zip is kept.",
                elem_classes="tab-intro")
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label="Dataset zip", file_types=[".zip"], file_count="single", elem_id="ds-upload")
            name = gr.Textbox(label="Name", max_lines=1, placeholder="e.g. My cats and dogs", elem_id="ds-name",
                              info="How the dataset is called in the lists (free text).")
            import_btn = gr.Button("Import", variant="primary", elem_id="ds-import")
            report = gr.Markdown(elem_id="ds-report")
        with gr.Column(scale=3):
            table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, label="All datasets", wrap=True,
                                 elem_id="ds-table", max_height=360, pinned_columns=1)
            picker = gr.Dropdown(choices=[], value=None, label="Show dataset", elem_id="ds-picker")
    with gr.Column(visible=False) as detail_col:
        detail = gr.Markdown()
        # The grid is rendered by the service layer into the export folder (a server-made path).
        preview = gr.Image(label="Preview (a few images per class)", visible=False, interactive=False, type="filepath",
                           elem_id="ds-preview", buttons=["download", "fullscreen"])
        with gr.Row():
            classes = gr.Textbox(label="Class names (one per line)", lines=8,
                                 info="Used in the prompts: 'a photo of a {class}'. Order = label order.")
            templates = gr.Textbox(label="Prompt templates (one per line)", lines=8,
                                   info="Each must contain {} once, where the class name goes.")
        save = gr.Button("Save names and templates", visible=False, elem_id="ds-save")
        save_note = gr.Markdown()
    return DatasetsTab(upload, name, import_btn, report, table, picker,
                       [detail_col, detail, preview, classes, templates, save], classes, templates, save, save_note)


def rows_and_choices(ctx: AppContext, user: str, keep: str | None) -> list:
    ds = sorted(ctx.api.catalog_datasets(user), key=lambda d: not is_upload(d["key"]))  # the user's uploads first
    keys = [str(d["key"]) for d in ds]
    ch = [(str(d.get("title") or d.get("name") or d["key"]) + (" — your upload" if is_upload(d["key"]) else ""),
           str(d["key"])) for d in ds]
    return [catalog_rows(ds), gr.Dropdown(choices=ch, value=keep if keep in keys else None)]


@user_errors
def import_zip(ctx: AppContext, file: Any, name_v: str, request: gr.Request) -> list:
    """Import the upload; a rejected one explains itself in the report area (no error labels, no toast)."""
    user = ctx.user(request)
    if not file:
        return [rejected_markdown("Choose a zip file first."), gr.skip(), gr.skip(), gr.skip()]
    try:
        # ``file`` is Gradio's own upload copy (a server path in its cache), never a user-typed string.
        rep = ctx.api.import_dataset(user, file, name=(name_v or "").strip() or None)
    except LdifsError as e:
        return [rejected_markdown(str(e)), gr.skip(), gr.skip(), gr.skip()]
    return [ingestion_markdown(rep)] + rows_and_choices(ctx, user, rep.get("key")) + [None]  # shows the new upload


@user_errors
def show(ctx: AppContext, key: str | None, request: gr.Request) -> list:
    if not key:
        return [gr.Column(visible=False)] + [gr.skip()] * 5
    d = ctx.api.show_dataset(ctx.user(request), key)
    png = d.get("preview_png")
    if png:  # the data folder is never served: gradio gets a scratch copy
        png = str(ctx.scratch_copy(png, "preview.png"))
    editable = is_upload(key)
    return [gr.Column(visible=True), detail_markdown(d), gr.Image(value=png, visible=bool(png)),
            gr.Textbox(value="\n".join(d.get("classnames") or []), interactive=editable),
            gr.Textbox(value="\n".join(d.get("templates") or []), interactive=editable),
            gr.Button(visible=editable)]


@user_errors
def save(ctx: AppContext, key: str | None, classes_v: str, templates_v: str, request: gr.Request) -> str:
    if not is_upload(key):
        raise gr.Error("Only your own uploads can be edited.")
    names = [c.strip() for c in (classes_v or "").splitlines() if c.strip()]
    temps = [t.strip() for t in (templates_v or "").splitlines() if t.strip()]
    ctx.api.update_dataset(ctx.user(request), key, classnames=names, templates=temps)
    gr.Info("Saved.")
    return f"Saved {len(names)} class names and {len(temps)} templates."


@user_errors
def load(ctx: AppContext, keep: str | None, request: gr.Request) -> list:
    return rows_and_choices(ctx, ctx.user(request), keep)


def row_to_key(evt: gr.SelectData, rows: Any) -> Any:
    try:
        values = rows.values.tolist() if hasattr(rows, "values") else rows
        return values[evt.index[0]][TABLE_HEADERS.index("Key")]
    except (IndexError, TypeError, KeyError):
        return gr.skip()


def wire(ctx: AppContext, nav: Any, tab: DatasetsTab) -> None:
    tab.import_btn.click(bind(import_zip, ctx), [tab.upload, tab.name], [tab.report, tab.table, tab.picker, tab.upload],
                         api_name="ds_import", concurrency_limit=2, **PRIVATE)
    tab.picker.change(bind(show, ctx), tab.picker, tab.detail_outputs, api_name="ds_show", **PRIVATE)
    tab.save.click(bind(save, ctx), [tab.picker, tab.classes, tab.templates], tab.save_note, api_name="ds_save",
                   **PRIVATE)
    tab.table.select(row_to_key, tab.table, tab.picker, api_name="ds_row", **PRIVATE)
    nav.demo.load(on_page_load(bind(load, ctx), 2), tab.picker, [tab.table, tab.picker], api_name="ds_load",
                  **PRIVATE)


def build(ctx: AppContext, nav: Any) -> DatasetsTab:
    tab = layout()
    wire(ctx, nav, tab)
    return tab
