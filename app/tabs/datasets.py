"""Datasets: upload a zip of class folders, see the ingestion report, browse, preview, edit prompts."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gradio as gr

from .. import text
from ..context import AppContext, user_errors

PRIVATE = dict(api_visibility="private")
TABLE_HEADERS = ["Dataset", "Classes", "Source", "Available", "Key"]
MAX_PREVIEW = 48


def catalog_rows(datasets: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    return [[str(d.get("title") or d["key"]), str(d.get("num_classes", "")), str(d.get("source", "")),
             "yes" if d.get("available", True) else "no — " + str(d.get("how_to_get") or "missing"), str(d["key"])]
            for d in datasets]


def ingestion_markdown(report: Mapping[str, Any]) -> str:
    """The upload's ingestion report: what was kept, skipped and why (names escaped)."""
    title = text.md_escape(report.get("title") or report.get("name") or report.get("key") or "dataset")
    n_img = report.get("images", report.get("num_images", "?"))
    n_cls = report.get("classes", report.get("num_classes", "?"))
    if isinstance(n_cls, (list, tuple)):
        n_cls = len(n_cls)
    lines = [f"✓ **Imported {title}**: {n_img} images in {n_cls} classes.",
             f"Use it as `{text.md_escape(report.get('key', ''))}` in New run (it is in the dataset lists now)."]
    counts = report.get("counts") or report.get("class_counts") or {}
    if counts:
        lines.append("")
        lines.append("| Class | Images |\n|---|---|")
        lines += [f"| {text.md_escape(k)} | {v} |" for k, v in list(counts.items())[:100]]
    skipped = report.get("skipped") or report.get("quarantined") or []
    if skipped:
        lines.append(f"\n⚠ **{len(skipped)} files skipped:**")
        for s in skipped[:20]:
            if isinstance(s, Mapping):
                lines.append(f"- {text.md_escape(s.get('name') or s.get('file') or '?')}: {text.md_escape(s.get('reason', ''))}")
            else:
                lines.append(f"- {text.md_escape(s)}")
        if len(skipped) > 20:
            lines.append(f"- … and {len(skipped) - 20} more")
    for w in report.get("warnings") or []:
        lines.append(f"\n⚠ {text.md_escape(w)}")
    return "\n".join(lines)


def detail_markdown(d: Mapping[str, Any]) -> str:
    lines = [f"### {text.md_escape(d.get('title') or d.get('key'))}",
             f"`{text.md_escape(d.get('key', ''))}` · {text.md_escape(d.get('source', ''))} · "
             f"{d.get('num_classes', len(d.get('classnames') or []))} classes"]
    if d.get("description"):
        lines.append(text.md_escape(d["description"]))
    if d.get("available") is False and d.get("how_to_get"):
        lines.append(f"⚠ Not on this server yet: {text.md_escape(d['how_to_get'])}")
    splits = d.get("splits") or {}
    if splits:
        lines.append("Images: " + ", ".join(f"{text.md_escape(k)} {v}" for k, v in splits.items()))
    return "\n\n".join(lines)


def preview_items(d: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(image path, caption) pairs the service layer offers for a preview grid."""
    out = []
    for s in (d.get("preview") or d.get("samples") or [])[:MAX_PREVIEW]:
        if isinstance(s, Mapping) and s.get("path"):
            out.append((str(s["path"]), str(s.get("label") or s.get("class") or "")))
        elif isinstance(s, (list, tuple)) and len(s) == 2:
            out.append((str(s[0]), str(s[1])))
    return out


def is_upload(key: str | None) -> bool:
    return bool(key) and str(key).startswith("upload:")


@dataclass
class DatasetsTab:
    table: gr.Dataframe
    picker: gr.Dropdown


def build(ctx: AppContext, nav: Any) -> DatasetsTab:
    api = ctx.api
    gr.Markdown("Bring your own images: a **zip with one folder per class** (at least 2 classes, 5 images each). "
                "Images are checked and re-encoded on the server; nothing else from the zip is kept.",
                elem_classes="tab-intro")
    with gr.Row():
        with gr.Column(scale=2):
            upload = gr.File(label="Dataset zip", file_types=[".zip"], file_count="single", elem_id="ds-upload")
            name = gr.Textbox(label="Name", max_lines=1, placeholder="e.g. My cats and dogs",
                              info="How the dataset is called in the lists (free text).")
            import_btn = gr.Button("Import", variant="primary", elem_id="ds-import")
            report = gr.Markdown(elem_id="ds-report")
        with gr.Column(scale=3):
            table = gr.Dataframe(headers=TABLE_HEADERS, value=[], interactive=False, label="All datasets", wrap=True,
                                 elem_id="ds-table", max_height=360)
            picker = gr.Dropdown(choices=[], value=None, label="Show dataset", elem_id="ds-picker")
    with gr.Column(visible=False) as detail_col:
        detail = gr.Markdown()
        gallery = gr.Gallery(label="Preview", columns=8, height=260, visible=False, elem_id="ds-gallery")
        with gr.Row():
            classes = gr.Textbox(label="Class names (one per line)", lines=8,
                                 info="Used in the prompts: 'a photo of a {class}'. Order = label order.")
            templates = gr.Textbox(label="Prompt templates (one per line)", lines=8,
                                   info="Each must contain {} once, where the class name goes.")
        save = gr.Button("Save names and templates", visible=False, elem_id="ds-save")
        save_note = gr.Markdown()

    def _rows_and_choices(user: str, keep: str | None) -> list:
        ds = api.catalog_datasets(user)
        keys = [str(d["key"]) for d in ds]
        ch = [(f"{d.get('title') or d['key']}" + (" — your upload" if is_upload(d["key"]) else ""), str(d["key"])) for d in ds]
        return [catalog_rows(ds), gr.Dropdown(choices=ch, value=keep if keep in keys else None)]

    @user_errors
    def on_import(file: Any, name_v: str, request: gr.Request) -> list:
        user = ctx.user(request)
        if not file:
            raise gr.Error("Choose a zip file first.")
        # ``file`` is Gradio's own upload copy (a server path in its cache), never a user-typed string.
        rep = api.import_dataset(user, file, name=(name_v or "").strip() or None)
        gr.Info("Dataset imported.")
        return [ingestion_markdown(rep)] + _rows_and_choices(user, rep.get("key")) + [None]

    @user_errors
    def on_show(key: str | None, request: gr.Request) -> list:
        if not key:
            return [gr.Column(visible=False)] + [gr.skip()] * 5
        d = api.show_dataset(ctx.user(request), key)
        items = preview_items(d)
        editable = is_upload(key)
        return [gr.Column(visible=True), detail_markdown(d), gr.Gallery(value=items or None, visible=bool(items)),
                gr.Textbox(value="\n".join(d.get("classnames") or []), interactive=editable),
                gr.Textbox(value="\n".join(d.get("templates") or []), interactive=editable),
                gr.Button(visible=editable)]

    @user_errors
    def on_save(key: str | None, classes_v: str, templates_v: str, request: gr.Request) -> str:
        if not is_upload(key):
            raise gr.Error("Only your own uploads can be edited.")
        names = [c.strip() for c in (classes_v or "").splitlines() if c.strip()]
        temps = [t.strip() for t in (templates_v or "").splitlines() if t.strip()]
        api.update_dataset(ctx.user(request), key, classnames=names, templates=temps)
        gr.Info("Saved.")
        return f"Saved {len(names)} class names and {len(temps)} templates."

    @user_errors
    def on_load(keep: str | None, request: gr.Request) -> list:
        return _rows_and_choices(ctx.user(request), keep)

    def on_row(evt: gr.SelectData, rows: Any) -> Any:
        try:
            values = rows.values.tolist() if hasattr(rows, "values") else rows
            return values[evt.index[0]][TABLE_HEADERS.index("Key")]
        except (IndexError, TypeError, KeyError):
            return gr.skip()

    import_btn.click(on_import, [upload, name], [report, table, picker, upload], api_name="ds_import",
                     concurrency_limit=2, **PRIVATE)
    picker.change(on_show, picker, [detail_col, detail, gallery, classes, templates, save], api_name="ds_show",
                  **PRIVATE)
    save.click(on_save, [picker, classes, templates], save_note, api_name="ds_save", **PRIVATE)
    table.select(on_row, table, picker, api_name="ds_row", **PRIVATE)
    nav.demo.load(on_load, picker, [table, picker], api_name="ds_load", **PRIVATE)
    return DatasetsTab(table, picker)
