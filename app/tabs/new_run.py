"""New run: presets, a form generated from the spec and method metadata, pre-flight, CLI preview, YAML."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import forms, text
from ..context import AppContext, user_errors
from ..forms import FieldDef

PRIVATE = dict(api_visibility="private")


# ---- choices (pure) ------------------------------------------------------------------------------
def backbone_choices(backbones: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Built-in (offline) models first, then downloadable ones marked as such; test-only models last."""
    def rank(b: Mapping[str, Any]) -> tuple:
        tags = b.get("tags") or []
        return ("test" in tags, bool(b.get("needs_download")), str(b.get("title") or b.get("key")))

    out = []
    for b in sorted(backbones, key=rank):
        label = str(b.get("title") or b["key"])
        if b.get("needs_download"):
            label += " — needs download"
        out.append((label, str(b["key"])))
    return out


def dataset_choices(datasets: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """'Colour (8 classes)'; the user's uploads marked; datasets missing on this server marked."""
    out = []
    for d in datasets:
        label = str(d.get("title") or d["key"])
        n = d.get("num_classes")
        if n:
            label += f" ({n} classes)"
        if d.get("source") == "upload" or str(d["key"]).startswith("upload:"):
            label = "" + label + " — your upload"
        if d.get("available") is False:
            label += " — not on this server"
        out.append((label, str(d["key"])))
    return out


def method_markdown(method: Mapping[str, Any] | None) -> str:
    if not method:
        return ""
    title = text.md_escape(method.get("title") or method.get("name"))
    return f"**{title}** — {text.md_escape(method.get('description', ''))}"


def bounds_note(f: FieldDef) -> str:
    """' Allowed: 0 – 0.5.' from the field's bounds, appended to its help."""
    if f.choices or f.kind not in ("int", "float"):
        return ""
    lo, hi = f.minimum, f.maximum
    if lo is None and hi is None:
        return " Leave empty for none." if f.optional else ""
    if f.min_exclusive and lo is not None:
        rng = f"> {_num(lo)}" + (f" and ≤ {_num(hi)}" if hi is not None else "")
    else:
        rng = (f"{_num(lo)} – {_num(hi)}" if lo is not None and hi is not None
               else f"≥ {_num(lo)}" if lo is not None else f"≤ {_num(hi)}")
    return f" Allowed: {rng}." + (" Leave empty for none." if f.optional else "")


def _num(v: float) -> str:
    """1e7 → '10,000,000'; 1e-05 → '1e-05'."""
    return f"{int(v):,}" if float(v).is_integer() and abs(v) < 1e15 else f"{v:g}"


def preflight_markdown(problems: Sequence[str], warns: Sequence[str] = (), n_runs: int = 1) -> str:
    """The pre-flight panel: every problem at once, then warnings, else a ready message."""
    if problems:
        lines = [f"**Fix {len(problems)} problem{'s' if len(problems) != 1 else ''} before starting:**", ""]
        lines += [f"- ✗ `{p.split(':', 1)[0]}`: {text.md_escape(p.split(':', 1)[1].strip()) if ':' in p else ''}"
                  if ":" in p else f"- ✗ {text.md_escape(p)}" for p in problems]
    else:
        lines = [f"✓ **Ready.** {'This queues ' + str(n_runs) + ' runs.' if n_runs > 1 else ''}"]
    if warns:
        lines += [""] + [f"- ⚠ {text.md_escape(w)}" for w in warns]
    return "\n".join(lines)


# ---- the tab ---------------------------------------------------------------------------------------------
@dataclass
class NewRunTab:
    fields: list[FieldDef]
    inputs: list[gr.components.Component]
    param_fields: list[FieldDef]
    param_inputs: list[gr.components.Component]
    method_groups: dict[str, gr.Group]
    method_names: list[str]
    preset: gr.Dropdown
    start: gr.Button
    preflight: gr.Markdown
    extras: gr.CheckboxGroup
    extras_state: gr.State
    priority: gr.Number
    catalog_refresh: list = field(default_factory=list)


def _widget(f: FieldDef, choices: Mapping[str, list]) -> gr.components.Component:
    info = (f.info.rstrip(".") + "." if f.info else "") + bounds_note(f)
    common = dict(label=f.label, info=info, elem_id="f-" + f.path.replace(".", "-"))
    if f.kind == "bool":
        return gr.Checkbox(value=bool(f.default), **common)
    if f.kind == "choice":
        return gr.Dropdown(choices=list(f.choices), value=f.default, **common)
    if f.kind in ("backbone", "dataset", "method"):
        return gr.Dropdown(choices=choices[f.kind], value=f.default, allow_custom_value=True, filterable=True, **common)
    if f.kind == "datasets":
        return gr.Dropdown(choices=choices["dataset"], value=list(f.default or []), multiselect=True,
                           allow_custom_value=True, **common)
    if f.kind in ("int", "float"):
        return gr.Number(value=f.default, placeholder="none" if f.optional else None, **common)
    if f.kind in ("floats", "ints", "texts"):
        return gr.Textbox(value=forms.to_widget(f, f.default), placeholder="e.g. 0, 0.5, 1", **common)
    return gr.Textbox(value=f.default or "", max_lines=1, **common)


def build(ctx: AppContext, nav: Any) -> NewRunTab:
    api = ctx.api
    methods = {m["name"]: m for m in api.catalog_methods()}
    backbones = api.catalog_backbones()
    datasets = api.catalog_datasets(ctx.default_user)
    presets = forms.load_presets()
    choices = {"backbone": backbone_choices(backbones), "dataset": dataset_choices(datasets),
               "method": [(str(m.get("title") or n), n) for n, m in methods.items()]}
    fields = forms.spec_fields()
    by_path: dict[str, gr.components.Component] = {}

    gr.Markdown("Pick a preset or fill in the form. Everything is checked before anything is queued; "
                "the exact run can be reproduced from the command line.", elem_classes="tab-intro")
    with gr.Row():
        preset = gr.Dropdown(choices=list(presets), value=None, label="Start from a preset", scale=3,
                             info="Fills the whole form; you can still change anything.", elem_id="preset")
        preset_note = gr.Markdown("", elem_classes="preset-note", elem_id="preset-note")

    with gr.Row():
        with gr.Column(scale=3):
            with gr.Group():
                for f in fields:
                    if f.basic and f.path in ("name", "backbone"):
                        by_path[f.path] = _widget(f, choices)
                with gr.Row():
                    for p in ("data.target", "data.controls"):
                        by_path[p] = _widget(next(f for f in fields if f.path == p), choices)
                by_path["method.name"] = _widget(next(f for f in fields if f.path == "method.name"), choices)
                default_method = next(f.default for f in fields if f.path == "method.name")
                method_md = gr.Markdown(method_markdown(methods.get(default_method)), elem_classes="method-desc",
                                        padding=True)
            param_fields: list[FieldDef] = []
            param_owner: list[str] = []  # the method each param input belongs to
            param_inputs: list[gr.components.Component] = []
            groups: dict[str, gr.Group] = {}
            for name, m in methods.items():
                pf = forms.method_param_fields(m)
                with gr.Group(visible=False) as g:
                    if pf:
                        gr.Markdown(f"**{text.md_escape(m.get('title') or name)} settings**", padding=True)
                    for i in range(0, len(pf), 3):
                        with gr.Row():
                            for f in pf[i:i + 3]:
                                param_inputs.append(_widget(f, choices))
                                param_fields.append(f)
                                param_owner.append(name)
                groups[name] = g
            with gr.Group():
                with gr.Row():
                    for p in ("optim.steps", "optim.lr", "optim.batch_size"):
                        by_path[p] = _widget(next(f for f in fields if f.path == p), choices)

            with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
                for section in ("data", "method", "optim", "eval", ""):
                    sec_fields = [f for f in fields if f.section == section and not f.basic]
                    if not sec_fields:
                        continue
                    gr.Markdown(f"#### {text.SECTION_TITLES[section]}")
                    for i in range(0, len(sec_fields), 3):
                        with gr.Row():
                            for f in sec_fields[i:i + 3]:
                                by_path[f.path] = _widget(f, choices)
                priority = gr.Number(value=0, label=text.label_for("priority"),
                                     info=text.INFO_OVERRIDES["priority"] + " Allowed: −10 – 10.", precision=0,
                                     elem_id="f-priority")

            with gr.Accordion("Edit as YAML", open=False):
                yaml_box = gr.Code(language="yaml", label="Run spec (YAML)", lines=14, interactive=True)
                with gr.Row():
                    to_yaml_btn = gr.Button("Form → YAML", size="sm")
                    from_yaml_btn = gr.Button("YAML → form", size="sm")

        with gr.Column(scale=2, elem_classes="side-panel"):
            gr.Markdown("### Before you start")
            preflight = gr.Markdown("Press **Check** to validate the settings.", elem_id="preflight")
            extras_state = gr.State([])
            extras = gr.CheckboxGroup(choices=[], value=[], label="Also queue", visible=False,
                                      info="Companion runs from the preset: same settings except what is listed.")
            with gr.Row():
                check_btn = gr.Button("Check", variant="secondary", elem_id="check")
                start = gr.Button("Start run", variant="primary", elem_id="start")
            with gr.Accordion("Reproduce from the command line", open=False, elem_id="reproduce"):
                preview_btn = gr.Button("Preview as CLI command", size="sm", elem_id="preview")
                cli = gr.Code(language="shell", label="Shell", lines=12, max_lines=80, interactive=False, elem_id="cli")
                yaml_dl = gr.DownloadButton("Download YAML", value=None, size="sm", visible=False, elem_id="yaml-dl")

    inputs = [by_path[f.path] for f in fields]
    method_names = list(methods)

    def collect(values: Sequence[Any]) -> tuple[dict, list[str]]:
        n = len(fields)
        field_vals, rest = values[:n], values[n:]
        spec, problems = forms.form_to_spec(fields, field_vals, [], [])
        method = spec.get("method", {}).get("name")
        sel = [(f, v) for f, v, owner in zip(param_fields, rest, param_owner) if owner == method]
        params_spec, p2 = forms.form_to_spec([], [], [f for f, _ in sel], [v for _, v in sel])
        spec["method"]["params"] = params_spec["method"]["params"]
        return spec, problems + p2

    def specs_to_queue(spec: dict, extras_sel: Sequence[str], extras_all: Sequence[dict]) -> list[dict]:
        out = [spec]
        for e in extras_all or []:
            if e["label"] in (extras_sel or []):
                out.append(forms.apply_overrides(spec, e["overrides"]))
        return out

    all_inputs = inputs + param_inputs

    def check_values(values: Sequence[Any], extras_sel: Sequence[str],
                     extras_all: Sequence[dict]) -> tuple[str, list[dict], list[str]]:
        spec, parse_problems = collect(values)
        specs = specs_to_queue(spec, extras_sel, extras_all)
        problems = forms.preflight(spec, parse_problems, api.validate_spec)
        for i, extra in enumerate(specs[1:], 1):
            problems += [f"{p} (in companion run {i})" for p in api.validate_spec(extra) if p not in problems]
        warns = forms.warnings(spec, backbones, datasets)
        return preflight_markdown(problems, warns, len(specs)), specs, problems

    @user_errors
    def on_check(*args: Any) -> str:
        *values, extras_sel, extras_all = args
        return check_values(values, extras_sel, extras_all)[0]

    @user_errors
    def on_preview(*args: Any) -> tuple[str, Any]:
        *values, _sel, _all = args
        spec, _ = collect(values)
        spec = forms.canonical(spec)
        path = ctx.scratch_file("spec.yaml")
        path.write_text(forms.spec_yaml(spec), encoding="utf-8")
        return forms.cli_command(spec), gr.DownloadButton(value=str(path), visible=True)

    @user_errors
    def on_start(request: gr.Request, *args: Any) -> tuple:  # request first: gradio injects it by position
        *values, extras_sel, extras_all, prio = args
        user = ctx.user(request)
        md, specs, problems = check_values(values, extras_sel, extras_all)
        if problems:
            n = len(problems)
            gr.Warning(f"Not started: {n} problem{'s' if n != 1 else ''} to fix (see 'Before you start').")
            return md, gr.skip(), gr.skip()
        prio = int(prio or 0)
        if len(specs) > 1:
            ids = api.submit_many(user, specs, priority=prio)  # all or nothing
        else:
            ids = [api.submit(user, specs[0], priority=prio)]
        gr.Info(f"Queued {len(ids)} run{'s' if len(ids) != 1 else ''}. "
                f"Follow {'them' if len(ids) > 1 else 'it'} in Jobs.")
        return md, gr.Tabs(selected="jobs"), ids[-1] if len(ids) == 1 else ids[0]

    def on_method(name: str) -> list:
        return [method_markdown(methods.get(name))] + [gr.Group(visible=(n == name)) for n in method_names]

    def fill(spec: Mapping[str, Any]) -> list:
        """Every form output for a spec (field values, method params, method visibility)."""
        base = forms.spec_to_form(fields, spec)
        method = forms._get(spec, "method.name", "ce")
        params = forms._get(spec, "method.params", {}) or {}
        pvals = []
        for f, owner in zip(param_fields, param_owner):
            pvals.append(forms.params_to_form([f], params if owner == method else {})[0])
        return base + pvals + on_method(method)

    @user_errors
    def on_preset(name: str) -> list:
        if not name or name not in presets:
            return [gr.skip()] * (len(all_inputs) + 1 + len(method_names) + 4)
        specs = presets[name]
        first = specs[0]
        extras_all = []
        for i, s in enumerate(specs[1:]):
            ov = forms.overrides_between(first, s)
            extras_all.append({"label": f"{s.get('name') or 'run ' + str(i + 2)} ({forms.describe_overrides(ov)})",
                               "overrides": ov})
        labels = [e["label"] for e in extras_all]
        note = (f"Queues **{len(specs)} runs**: {', '.join(text.md_escape(s.get('name') or '?') for s in specs)}."
                if len(specs) > 1 else "")
        merged = _with_defaults(first)
        return fill(merged) + [gr.CheckboxGroup(choices=labels, value=labels, visible=bool(labels)), extras_all, note,
                               check_values(_values_for(merged), labels, extras_all)[0]]

    def _with_defaults(spec: Mapping[str, Any]) -> dict:
        """Preset specs are partial: fill in the form's defaults (catalog-aware) underneath."""
        base: dict = {}
        for f in fields:
            forms._set(base, f.path, f.default)
        if not base["data"].get("controls"):
            base["data"]["controls"] = [d["key"] for d in datasets if d["key"] != base["data"]["target"]
                                        and "concept-world" in (d.get("tags") or [])]
        merged = forms.apply_overrides(base, {k: v for k, v in forms.flatten(spec).items()
                                              if not k.startswith("method.params")})
        merged["method"]["params"] = dict(forms._get(spec, "method.params", {}) or {})
        d = merged["data"]
        d["sequence"], d["controls"] = forms.separate_datasets(d["target"], d.get("sequence"), d["controls"])
        return merged

    def _values_for(spec: Mapping[str, Any]) -> list:
        return fill(spec)[:len(all_inputs)]

    def on_to_yaml(*args: Any) -> str:
        *values, _sel, _all = args
        spec, _ = collect(values)
        return forms.spec_yaml(forms.canonical(spec))

    @user_errors
    def on_from_yaml(source: str) -> list:
        spec = forms.yaml_to_spec(source or "")
        return fill(_with_defaults(spec))

    def on_roles(target: str, sequence: list, controls: list) -> tuple:
        """Each dataset in one role: picking the target, or adding a dataset to the sequence, drops it
        from the controls (and the target from the sequence)."""
        return forms.separate_datasets(target, sequence, controls)

    role_inputs = [by_path["data.target"], by_path["data.sequence"], by_path["data.controls"]]
    role_outputs = [by_path["data.sequence"], by_path["data.controls"]]
    by_path["data.target"].input(on_roles, role_inputs, role_outputs, api_name="nr_target", show_progress="hidden",
                                 **PRIVATE)
    by_path["data.sequence"].input(on_roles, role_inputs, role_outputs, api_name="nr_sequence",
                                   show_progress="hidden", **PRIVATE)

    method_outputs = [method_md] + [groups[n] for n in method_names]
    extras_in = [extras, extras_state]
    by_path["method.name"].change(on_method, by_path["method.name"], method_outputs, api_name="nr_method",
                                  show_progress="hidden", **PRIVATE)
    preset.change(on_preset, preset, all_inputs + method_outputs + [extras, extras_state, preset_note, preflight],
                  api_name="nr_preset", **PRIVATE)
    check_btn.click(on_check, all_inputs + extras_in, preflight, api_name="nr_check", **PRIVATE)
    gr.on([c.input for c in all_inputs if hasattr(c, "input")], on_check, all_inputs + extras_in, preflight,
          api_name="nr_check_live", trigger_mode="always_last", show_progress="hidden", **PRIVATE)
    preview_btn.click(on_preview, all_inputs + extras_in, [cli, yaml_dl], api_name="nr_preview", **PRIVATE)
    to_yaml_btn.click(on_to_yaml, all_inputs + extras_in, yaml_box, api_name="nr_to_yaml", **PRIVATE)
    from_yaml_btn.click(on_from_yaml, yaml_box, all_inputs + method_outputs, api_name="nr_from_yaml", **PRIVATE)
    start.click(on_start, all_inputs + extras_in + [priority], [preflight, nav.tabs, nav.focus_job],
                api_name="nr_start", concurrency_limit=4, **PRIVATE)

    @user_errors
    def on_clone(payload: Mapping[str, Any]) -> list:
        """'Edit a copy' from Jobs: the form takes that run's frozen spec."""
        spec = (payload or {}).get("spec")
        if not spec:
            return [gr.skip()] * (len(all_inputs) + len(method_outputs) + 2)
        gr.Info("Loaded the run's settings. Change what you like, then start.")
        filled = fill(_with_defaults(spec))
        return filled + [gr.CheckboxGroup(choices=[], value=[], visible=False), []]

    nav.clone_spec.change(on_clone, nav.clone_spec, all_inputs + method_outputs + [extras, extras_state],
                          api_name="nr_clone", **PRIVATE)

    @user_errors
    def on_load(request: gr.Request) -> list:
        """Per user: their uploads join the dataset choices; the form starts from the first preset."""
        try:
            ds = api.catalog_datasets(ctx.user(request))
        except gr.Error:  # not signed in yet: the built-in catalog, and the form still fills in
            ds = datasets
        ch = dataset_choices(ds)
        first = next(iter(presets), None)
        return [gr.Dropdown(choices=ch), gr.Dropdown(choices=ch), gr.Dropdown(value=first)]

    nav.demo.load(on_load, None, [by_path["data.target"], by_path["data.controls"], preset],
                  api_name="nr_load", **PRIVATE)

    return NewRunTab(fields, inputs, param_fields, param_inputs, groups, method_names, preset, start, preflight,
                     extras, extras_state, priority)
