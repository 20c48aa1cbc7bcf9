"""New run: presets, a form generated from the spec and method metadata, pre-flight, CLI preview, YAML."""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from .. import forms, text
from ..context import AppContext, quiet, user_errors
from ..forms import FieldDef
from .common import PRIVATE, bind

_PATH = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z0-9_]+)*$")
# Shown up front, in plain words; everything else (method settings included) sits under Advanced.
BASIC_PATHS = ("name", "backbone", "data.target", "data.controls", "method.name", "optim.steps",
               "budget.enabled", "budget.max_forgetting_points", "budget.metric")


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


def method_choices(methods: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    return [(text.METHOD_WORDS.get(n, (str(m.get("title") or n), ""))[0], n) for n, m in methods.items()]


def method_markdown(method: Mapping[str, Any] | None) -> str:
    """The selected method in plain words (the catalog's technical description is under Advanced)."""
    if not method:
        return ""
    name = str(method.get("name", ""))
    title, plain = text.METHOD_WORDS.get(name, (str(method.get("title") or name), str(method.get("description", ""))))
    return f"**{text.md_escape(title)}** — {text.md_escape(plain)}"


def method_details(method: Mapping[str, Any] | None) -> str:
    if not method:
        return ""
    return (f"**{text.md_escape(method.get('title') or method.get('name'))}**: "
            f"{text.md_escape(method.get('description', ''))}")


def field_labels(fields: Sequence[FieldDef]) -> dict[str, str]:
    """Spec path → the label the form shows, so a problem names what the user sees."""
    return {f.path: f.label for f in fields}


def problem_line(problem: str, labels: Mapping[str, str]) -> str:
    """'optim.lr: 0 is out of range' → '✗ **Step size (learning rate)**: 0 is out of range (optim.lr)'."""
    path, sep, rest = problem.partition(":")
    path = path.strip()
    if sep and _PATH.match(path):
        label = labels.get(path) or text.label_for(path)
        return f"- ✗ **{text.md_escape(label)}**: {text.md_escape(rest.strip())} ({text.md_escape(path)})"
    return f"- ✗ {text.md_escape(problem)}"


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


def preflight_markdown(problems: Sequence[str], warns: Sequence[str] = (), n_runs: int = 1,
                       labels: Mapping[str, str] | None = None) -> str:
    """The pre-flight panel: every problem at once (named by the form's labels), then warnings, else ready."""
    if problems:
        lines = [f"**Fix {len(problems)} problem{'s' if len(problems) != 1 else ''} before starting:**", ""]
        lines += [problem_line(p, labels or {}) for p in problems]
    else:
        lines = [f"✓ **Ready.** {'This queues ' + str(n_runs) + ' runs.' if n_runs > 1 else ''}"]
    if warns:
        lines += [""] + [f"- ⚠ {text.md_escape(w)}" for w in warns]
    return "\n".join(lines)


# ---- the form's static parts (catalogs, fields) -------------------------------------------------------
@dataclass
class Form:
    """What the form is built from; read once per app, per-user dataset lists refresh on page load."""

    methods: dict[str, dict]
    backbones: list[dict]
    datasets: list[dict]
    presets: dict[str, list[dict]]
    fields: list[FieldDef]
    param_fields: list[FieldDef] = field(default_factory=list)
    param_owner: list[str] = field(default_factory=list)  # the method each param input belongs to

    @classmethod
    def load(cls, ctx: AppContext) -> Form:
        methods = {m["name"]: m for m in ctx.api.catalog_methods()}
        form = cls(methods, ctx.api.catalog_backbones(), ctx.api.catalog_datasets(ctx.default_user),
                   forms.load_presets(), forms.spec_fields())
        for name, m in methods.items():
            for f in forms.method_param_fields(m):
                form.param_fields.append(f)
                form.param_owner.append(name)
        return form

    @property
    def labels(self) -> dict[str, str]:
        return field_labels(self.fields + self.param_fields)

    def choices(self) -> dict[str, list]:
        return {"backbone": backbone_choices(self.backbones), "dataset": dataset_choices(self.datasets),
                "method": method_choices(self.methods)}

    def field_def(self, path: str) -> FieldDef:
        return next(f for f in self.fields if f.path == path)

    def collect(self, values: Sequence[Any]) -> tuple[dict, list[str]]:
        """Widget values (fields, then every method's params) → the spec and what could not be parsed."""
        n = len(self.fields)
        spec, problems = forms.form_to_spec(self.fields, values[:n], [], [])
        method = spec.get("method", {}).get("name")
        sel = [(f, v) for f, v, owner in zip(self.param_fields, values[n:], self.param_owner) if owner == method]
        params_spec, p2 = forms.form_to_spec([], [], [f for f, _ in sel], [v for _, v in sel])
        spec["method"]["params"] = params_spec["method"]["params"]
        return spec, problems + p2

    def fill(self, spec: Mapping[str, Any]) -> list:
        """Every form output for a spec: field values, method params, method description and visibility."""
        base = forms.spec_to_form(self.fields, spec)
        method = forms._get(spec, "method.name", "ce")
        params = forms._get(spec, "method.params", {}) or {}
        pvals = [forms.params_to_form([f], params if owner == method else {})[0]
                 for f, owner in zip(self.param_fields, self.param_owner)]
        return base + pvals + method_updates(self, method)

    def with_defaults(self, spec: Mapping[str, Any]) -> dict:
        """Preset specs are partial: fill in the form's defaults (catalog-aware) underneath."""
        base: dict = {}
        for f in self.fields:
            forms._set(base, f.path, f.default)
        if not base["data"].get("controls"):
            base["data"]["controls"] = [d["key"] for d in self.datasets if d["key"] != base["data"]["target"]
                                        and "concept-world" in (d.get("tags") or [])]
        merged = forms.apply_overrides(base, {k: v for k, v in forms.flatten(spec).items()
                                              if not k.startswith("method.params")})
        merged["method"]["params"] = dict(forms._get(spec, "method.params", {}) or {})
        merged["budget"]["enabled"] = forms.budget_on(spec)
        d = merged["data"]
        d["sequence"], d["controls"] = forms.separate_datasets(d["target"], d.get("sequence"), d["controls"])
        return merged


def _widget(f: FieldDef, choices: Mapping[str, list]) -> gr.components.Component:
    info = (f.info.rstrip(".") + "." if f.info else "") + bounds_note(f)
    common = dict(label=f.label, info=info, elem_id="f-" + f.path.replace(".", "-"))
    if f.kind == "bool":
        return gr.Checkbox(value=bool(f.default), **common)
    if f.kind == "choice":
        words = text.CHOICE_WORDS.get(f.path, {})
        return gr.Dropdown(choices=[(words.get(str(c), str(c)), c) for c in f.choices], value=f.default, **common)
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


# ---- layout ---------------------------------------------------------------------------------------------
@dataclass
class NewRunTab:
    form: Form
    by_path: dict[str, gr.components.Component]
    param_inputs: list[gr.components.Component]
    method_groups: dict[str, gr.Group]
    method_md: gr.Markdown
    preset: gr.Dropdown
    preset_note: gr.Markdown
    yaml_box: gr.Code
    to_yaml: gr.Button
    from_yaml: gr.Button
    preflight: gr.Markdown
    extras: gr.CheckboxGroup
    extras_state: gr.State
    check: gr.Button
    start: gr.Button
    priority: gr.Number
    preview: gr.Button
    cli: gr.Code
    yaml_dl: gr.DownloadButton

    @property
    def fields(self) -> list[FieldDef]:
        return self.form.fields

    @property
    def inputs(self) -> list:
        return [self.by_path[f.path] for f in self.form.fields]

    @property
    def all_inputs(self) -> list:
        return self.inputs + self.param_inputs

    @property
    def method_outputs(self) -> list:
        return [self.method_md] + [self.method_groups[n] for n in self.form.methods]


def _basic(form: Form, choices: Mapping[str, list], by_path: dict) -> gr.Markdown:
    """The fields a first-time user needs, in plain words."""
    with gr.Group(elem_id="basic-fields"):
        for p in ("name", "backbone"):
            by_path[p] = _widget(form.field_def(p), choices)
        with gr.Row():
            for p in ("data.target", "data.controls"):
                by_path[p] = _widget(form.field_def(p), choices)
        by_path["method.name"] = _widget(form.field_def("method.name"), choices)
        method_md = gr.Markdown(method_markdown(form.methods.get(form.field_def("method.name").default)),
                                elem_classes="method-desc", padding=True, elem_id="method-desc")
        by_path["optim.steps"] = _widget(form.field_def("optim.steps"), choices)
    with gr.Group(elem_id="budget-fields"):
        by_path["budget.enabled"] = _widget(form.field_def("budget.enabled"), choices)
        with gr.Row():
            for p in ("budget.max_forgetting_points", "budget.metric"):
                by_path[p] = _widget(form.field_def(p), choices)
    return method_md


def _method_settings(form: Form, choices: Mapping[str, list]) -> tuple[list, dict[str, gr.Group]]:
    """Each method's own settings (shown for the selected method only), with its technical description."""
    inputs: list = []
    groups: dict[str, gr.Group] = {}
    for name, m in form.methods.items():
        pf = [f for f, owner in zip(form.param_fields, form.param_owner) if owner == name]
        with gr.Group(visible=False) as g:
            gr.Markdown(method_details(m), padding=True, elem_classes="method-detail")
            for i in range(0, len(pf), 3):
                with gr.Row():
                    inputs += [_widget(f, choices) for f in pf[i:i + 3]]
        groups[name] = g
    return inputs, groups


def _advanced(form: Form, choices: Mapping[str, list], by_path: dict) -> tuple[list, dict, gr.Number]:
    with gr.Accordion("Advanced settings", open=False, elem_id="advanced"):
        gr.Markdown(f"## {text.SECTION_TITLES['params']}")
        param_inputs, groups = _method_settings(form, choices)
        for section in ("data", "method", "optim", "eval", "budget", ""):
            sec_fields = [f for f in form.fields if f.section == section and f.path not in BASIC_PATHS]
            if not sec_fields:
                continue
            gr.Markdown(f"## {text.SECTION_TITLES[section]}")
            for i in range(0, len(sec_fields), 3):
                with gr.Row():
                    for f in sec_fields[i:i + 3]:
                        by_path[f.path] = _widget(f, choices)
        priority = gr.Number(value=0, label=text.label_for("priority"),
                             info=text.INFO_OVERRIDES["priority"] + " Allowed: −10 – 10.", precision=0,
                             elem_id="f-priority")
    return param_inputs, groups, priority


def _side_panel() -> tuple:
    gr.Markdown("## Before you start")
    preflight = gr.Markdown("Press **Check** to validate the settings.", elem_id="preflight")
    extras_state = gr.State([])
    extras = gr.CheckboxGroup(choices=[], value=[], label="Also queue", visible=False, elem_id="extras",
                              info="Companion runs from the preset: same settings except what is listed.")
    with gr.Row():
        check = gr.Button("Check", variant="secondary", elem_id="check")
        start = gr.Button("Start run", variant="primary", elem_id="start")
    with gr.Accordion("Reproduce from the command line", open=False, elem_id="reproduce"):
        preview = gr.Button("Preview as CLI command", size="sm", elem_id="preview")
        cli = gr.Code(language="shell", label="Shell", lines=12, max_lines=80, interactive=False, elem_id="cli")
        yaml_dl = gr.DownloadButton("Download YAML", value=None, size="sm", visible=False, elem_id="yaml-dl")
    return preflight, extras_state, extras, check, start, preview, cli, yaml_dl


def layout(form: Form) -> NewRunTab:
    choices = form.choices()
    by_path: dict[str, gr.components.Component] = {}
    gr.Markdown("Pick a preset or fill in the form. Everything is checked before anything is queued; "
                "the exact run can be reproduced from the command line.", elem_classes="tab-intro")
    with gr.Row():
        preset = gr.Dropdown(choices=list(form.presets), value=None, label="Start from a preset", scale=3,
                             info="Fills the whole form; you can still change anything.", elem_id="preset")
        preset_note = gr.Markdown("", elem_classes="preset-note", elem_id="preset-note")
    with gr.Row(elem_id="new-run-row"):
        with gr.Column(scale=3):
            method_md = _basic(form, choices, by_path)
            param_inputs, groups, priority = _advanced(form, choices, by_path)
            with gr.Accordion("Edit as YAML", open=False, elem_id="yaml-edit"):
                yaml_box = gr.Code(language="yaml", label="Run spec (YAML)", lines=14, interactive=True)
                with gr.Row():
                    to_yaml = gr.Button("Form → YAML", size="sm")
                    from_yaml = gr.Button("YAML → form", size="sm")
        with gr.Column(scale=2, elem_classes="side-panel"):
            preflight, extras_state, extras, check, start, preview, cli, yaml_dl = _side_panel()
    return NewRunTab(form, by_path, param_inputs, groups, method_md, preset, preset_note, yaml_box, to_yaml,
                     from_yaml, preflight, extras, extras_state, check, start, priority, preview, cli, yaml_dl)


# ---- handlers ---------------------------------------------------------------------------------------------
def method_updates(form: Form, name: str) -> list:
    return [method_markdown(form.methods.get(name))] + [gr.Group(visible=(n == name)) for n in form.methods]


def specs_to_queue(spec: dict, extras_sel: Sequence[str], extras_all: Sequence[dict]) -> list[dict]:
    out = [spec]
    for e in extras_all or []:
        if e["label"] in (extras_sel or []):
            out.append(forms.apply_overrides(spec, e["overrides"]))
    return out


def check_values(ctx: AppContext, form: Form, values: Sequence[Any], extras_sel: Sequence[str],
                 extras_all: Sequence[dict]) -> tuple[str, list[dict], list[str]]:
    spec, parse_problems = form.collect(values)
    specs = specs_to_queue(spec, extras_sel, extras_all)
    problems = forms.preflight(spec, parse_problems, ctx.api.validate_spec)
    for i, extra in enumerate(specs[1:], 1):
        problems += [f"{p} (in companion run {i})" for p in ctx.api.validate_spec(extra) if p not in problems]
    warns = forms.warnings(spec, form.backbones, form.datasets)
    md = preflight_markdown(problems, warns, len(specs), form.labels)
    if forms.budget_on(spec) and not problems:
        md += "\n\n" + text.budget_note(spec)
    return md, specs, problems


@user_errors
def on_check(ctx: AppContext, form: Form, *args: Any) -> str:
    *values, extras_sel, extras_all = args
    return check_values(ctx, form, values, extras_sel, extras_all)[0]


@user_errors
def on_preview(ctx: AppContext, form: Form, *args: Any) -> tuple[str, Any]:
    spec = forms.canonical(form.collect(args[:-2])[0])
    path = ctx.scratch_file("spec.yaml")
    path.write_text(forms.spec_yaml(spec), encoding="utf-8")
    return forms.cli_command(spec), gr.DownloadButton(value=str(path), visible=True)


@user_errors
def on_start(ctx: AppContext, form: Form, request: gr.Request, *args: Any) -> tuple:
    """Check, then queue the run (and the preset's companion runs, all or nothing); go to Jobs."""
    *values, extras_sel, extras_all, prio = args
    user = ctx.user(request)
    md, specs, problems = check_values(ctx, form, values, extras_sel, extras_all)
    if problems:
        n = len(problems)
        gr.Warning(f"Not started: {n} problem{'s' if n != 1 else ''} to fix (see 'Before you start').")
        return md, gr.skip(), gr.skip()
    prio = int(prio or 0)
    ids = ctx.api.submit_many(user, specs, priority=prio) if len(specs) > 1 else \
        [ctx.api.submit(user, specs[0], priority=prio)]
    gr.Info(f"Queued {len(ids)} run{'s' if len(ids) != 1 else ''}. Follow {'them' if len(ids) > 1 else 'it'} in Jobs.")
    return md, gr.Tabs(selected="jobs"), ids[-1] if len(ids) == 1 else ids[0]


@user_errors
def on_preset(ctx: AppContext, form: Form, n_outputs: int, name: str) -> list:
    if not name or name not in form.presets:
        return [gr.skip()] * n_outputs
    specs = form.presets[name]
    first = specs[0]
    extras_all = []
    for i, s in enumerate(specs[1:]):
        ov = forms.overrides_between(first, s)
        extras_all.append({"label": f"{s.get('name') or 'run ' + str(i + 2)} ({forms.describe_overrides(ov)})",
                           "overrides": ov})
    labels = [e["label"] for e in extras_all]
    note = (f"Queues **{len(specs)} runs**: {', '.join(text.md_escape(s.get('name') or '?') for s in specs)}."
            if len(specs) > 1 else "")
    merged = form.with_defaults(first)
    n_inputs = len(form.fields) + len(form.param_fields)
    return form.fill(merged) + [gr.CheckboxGroup(choices=labels, value=labels, visible=bool(labels)), extras_all,
                                note, check_values(ctx, form, form.fill(merged)[:n_inputs], labels, extras_all)[0]]


def on_to_yaml(form: Form, *args: Any) -> str:
    return forms.spec_yaml(forms.canonical(form.collect(args[:-2])[0]))


@user_errors
def on_from_yaml(form: Form, source: str) -> list:
    return form.fill(form.with_defaults(forms.yaml_to_spec(source or "")))


def on_roles(target: str, sequence: list, controls: list) -> tuple:
    """Each dataset in one role: picking the target, or adding a dataset to the sequence, drops it
    from the controls (and the target from the sequence)."""
    return forms.separate_datasets(target, sequence, controls)


@user_errors
def on_clone(form: Form, n_outputs: int, payload: Mapping[str, Any]) -> list:
    """'Edit a copy' from Jobs: the form takes that run's frozen spec."""
    spec = (payload or {}).get("spec")
    if not spec:
        return [gr.skip()] * n_outputs
    gr.Info("Loaded the run's settings. Change what you like, then start.")
    return form.fill(form.with_defaults(spec)) + [gr.CheckboxGroup(choices=[], value=[], visible=False), []]


def dataset_updates(ctx: AppContext, form: Form, request: gr.Request) -> list:
    """The user's datasets (uploads included) as choices of the target, sequence and controls; values kept."""
    try:
        ds = ctx.api.catalog_datasets(ctx.user(request))
    except gr.Error:  # not signed in yet: the built-in catalog, and the form still fills in
        ds = form.datasets
    ch = dataset_choices(ds)
    return [gr.Dropdown(choices=ch), gr.Dropdown(choices=ch), gr.Dropdown(choices=ch)]


@user_errors
def on_load(ctx: AppContext, form: Form, request: gr.Request) -> list:
    """Per user: their uploads join the dataset choices; the form starts from the first preset."""
    return dataset_updates(ctx, form, request) + [gr.Dropdown(value=next(iter(form.presets), None))]


# ---- wiring -------------------------------------------------------------------------------------------------
def wire(ctx: AppContext, nav: Any, tab: NewRunTab) -> None:
    form, by_path = tab.form, tab.by_path
    all_inputs, extras_in = tab.all_inputs, [tab.extras, tab.extras_state]
    role_inputs = [by_path["data.target"], by_path["data.sequence"], by_path["data.controls"]]
    for p in ("data.target", "data.sequence"):
        by_path[p].input(on_roles, role_inputs, role_inputs[1:], api_name="nr_" + p.split(".")[1],
                         show_progress="hidden", **PRIVATE)
    by_path["method.name"].change(bind(method_updates, form), by_path["method.name"], tab.method_outputs,
                                  api_name="nr_method", show_progress="hidden", **PRIVATE)
    preset_out = all_inputs + tab.method_outputs + [tab.extras, tab.extras_state, tab.preset_note, tab.preflight]
    tab.preset.change(bind(on_preset, ctx, form, len(preset_out)), tab.preset, preset_out, api_name="nr_preset",
                      **PRIVATE)
    check = bind(on_check, ctx, form)
    tab.check.click(check, all_inputs + extras_in, tab.preflight, api_name="nr_check", **PRIVATE)
    gr.on([c.input for c in all_inputs if hasattr(c, "input")], check, all_inputs + extras_in, tab.preflight,
          api_name="nr_check_live", trigger_mode="always_last", show_progress="hidden", **PRIVATE)
    tab.preview.click(bind(on_preview, ctx, form), all_inputs + extras_in, [tab.cli, tab.yaml_dl],
                      api_name="nr_preview", **PRIVATE)
    tab.to_yaml.click(bind(on_to_yaml, form), all_inputs + extras_in, tab.yaml_box, api_name="nr_to_yaml", **PRIVATE)
    tab.from_yaml.click(bind(on_from_yaml, form), tab.yaml_box, all_inputs + tab.method_outputs,
                        api_name="nr_from_yaml", **PRIVATE)
    tab.start.click(bind(on_start, ctx, form), all_inputs + extras_in + [tab.priority],
                    [tab.preflight, nav.tabs, nav.focus_job], api_name="nr_start", concurrency_limit=4, **PRIVATE)
    clone_out = all_inputs + tab.method_outputs + [tab.extras, tab.extras_state]
    nav.clone_spec.change(bind(on_clone, form, len(clone_out)), nav.clone_spec, clone_out, api_name="nr_clone",
                          **PRIVATE)
    nav.demo.load(bind(on_load, ctx, form), None, role_inputs + [tab.preset], api_name="nr_load", **PRIVATE)


def wire_tab(ctx: AppContext, tab_component: gr.Tab, tab: NewRunTab) -> None:
    """Entering the tab: datasets uploaded meanwhile (here or from the command line) are offered."""
    tab_component.select(quiet(bind(dataset_updates, ctx, tab.form), lambda *a, **k: [gr.skip()] * 3), None,
                         [tab.by_path[p] for p in ("data.target", "data.sequence", "data.controls")],
                         api_name="nr_tab", show_progress="hidden", **PRIVATE)


def build(ctx: AppContext, nav: Any) -> NewRunTab:
    from . import merge_runs

    tab = layout(Form.load(ctx))
    wire(ctx, nav, tab)
    merge_runs.build(ctx, nav)  # New run → "Merge runs"
    return tab
