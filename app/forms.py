"""Widget values ↔ spec dicts, presets, the CLI preview and YAML export. No gradio here.

The form is generated from the spec's own field metadata (``ldifs_engine.spec.field_help``: type,
default, help, bounds) and from each method's typed params (``catalog_methods()``), so a new field
or method shows up in the UI without touching this module. Validation stays with the spec
(``tasks.api.validate_spec``); this module only turns raw widget values into spec values and
reports what it could not parse, naming the field.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ldifs_engine.errors import SpecError
from ldifs_engine.presets import PRESETS
from ldifs_engine.spec import (BudgetSpec, DataSpec, EvalSpec, MethodSpec, OptimSpec, RunSpec, field_help,
                               parse_spec_text)

from . import text


# Fields shown up front; everything else sits in the "Advanced" accordion, grouped by section.
BASIC = ("name", "backbone", "data.target", "data.controls", "method.name", "optim.steps", "optim.lr",
         "optim.batch_size")
# Fields whose choices come from a catalog instead of the metadata.
CATALOG_KINDS = {"backbone": "backbone", "data.target": "dataset", "data.controls": "datasets",
                 "data.sequence": "datasets", "method.name": "method"}
_SECTIONS: tuple[tuple[str, type], ...] = (("", RunSpec), ("data", DataSpec), ("method", MethodSpec),
                                           ("optim", OptimSpec), ("eval", EvalSpec), ("budget", BudgetSpec))
# The budget block is optional: this form-only switch says whether the spec gets one (``form_to_spec``).
BUDGET_SWITCH = "budget.enabled"


@dataclass(frozen=True)
class FieldDef:
    """One form input: where its value goes in the spec and how to draw and parse it."""

    path: str  # dotted spec path, e.g. "optim.lr" or "method.params.alpha"
    kind: str  # float | int | bool | choice | text | floats | texts | backbone | dataset | datasets | method
    default: Any
    label: str
    info: str
    optional: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple = ()
    section: str = ""
    min_exclusive: bool = False  # the minimum itself is not allowed (a learning rate > 0)

    @property
    def basic(self) -> bool:
        return self.path in BASIC


def _kind(type_str: str, meta: Mapping[str, Any]) -> tuple[str, bool]:
    t = type_str.replace(" ", "")
    optional = "None" in t
    base = t.replace("|None", "").replace("Optional[", "").rstrip("]") if optional else t
    if meta.get("choices"):
        return "choice", optional
    if base.startswith("tuple") or base.startswith("list"):
        return ("floats" if "float" in base else "ints" if "int" in base else "texts"), optional
    return {"bool": "bool", "int": "int", "float": "float"}.get(base, "text"), optional


def _field(path: str, meta: Mapping[str, Any], section: str) -> FieldDef:
    kind, optional = _kind(str(meta.get("type", "str")), meta)
    kind = CATALOG_KINDS.get(path, kind)
    lo = meta.get("min", meta.get("min_excl"))
    default = meta.get("default")
    if isinstance(default, tuple):
        default = list(default)
    return FieldDef(
        path=path, kind=kind, default=default, label=text.label_for(path),
        info=text.INFO_OVERRIDES.get(path) or str(meta.get("help", "")), optional=optional,
        minimum=lo, maximum=meta.get("max"), choices=tuple(meta.get("choices") or ()), section=section,
        min_exclusive="min" not in meta and "min_excl" in meta,
    )


def spec_fields() -> list[FieldDef]:
    """Every spec field as a form input, basic ones first in ``BASIC`` order."""
    out = []
    for section, cls in _SECTIONS:
        for name, meta in field_help(cls).items():
            out.append(_field(f"{section}.{name}" if section else name, meta, section))
    out.append(FieldDef(path=BUDGET_SWITCH, kind="bool", default=False, label=text.label_for(BUDGET_SWITCH),
                        info=text.INFO_OVERRIDES[BUDGET_SWITCH], section="budget"))
    rank = {p: i for i, p in enumerate(BASIC)}
    return sorted(out, key=lambda f: (not f.basic, rank.get(f.path, 0)))


def method_param_fields(method: Mapping[str, Any]) -> list[FieldDef]:
    """Inputs for one method's params, from ``catalog_methods()`` metadata."""
    out = []
    for p in method.get("params") or []:
        meta = dict(p)
        path = f"method.params.{p['name']}"
        f = _field(path, meta, "method")
        out.append(FieldDef(**{**f.__dict__, "label": str(p.get("title") or text.label_for(path)),
                               "info": str(p.get("help") or "")}))
    return out


# ---- raw widget value → spec value -----------------------------------------------------------------
def coerce(f: FieldDef, raw: Any, problems: list[str]) -> Any:
    """A widget's value as the spec expects it; unparseable values are reported and passed through
    so the spec validator can name the field too."""
    if f.kind in ("int", "float"):
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            return None
        if isinstance(raw, str):
            try:
                raw = float(raw)
            except ValueError:
                problems.append(f"{f.path}: expected a number, got {raw!r}")
                return raw
        if f.kind == "int" and isinstance(raw, float) and raw.is_integer():
            return int(raw)
        return raw
    if f.kind in ("floats", "ints", "texts"):
        if raw is None:
            return []
        if isinstance(raw, (list, tuple)):
            return list(raw)
        items = [s.strip() for s in re.split(r"[,\s;]+", str(raw)) if s.strip()]
        if f.kind == "texts":
            return items
        out = []
        for s in items:
            try:
                v = float(s)
            except ValueError:
                problems.append(f"{f.path}: {s!r} is not a number; write numbers separated by commas")
                continue
            out.append(int(v) if f.kind == "ints" and v.is_integer() else v)
        return out
    if f.kind == "datasets":
        return list(raw or [])
    if f.kind == "bool":
        return bool(raw)
    if f.kind == "text" and raw is None:
        return ""
    return raw


def to_widget(f: FieldDef, value: Any) -> Any:
    """A spec value as the widget shows it (lists of numbers become '0, 0.5, 1')."""
    if f.kind in ("floats", "ints", "texts"):
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in (value or []))
    if f.kind == "datasets":
        return list(value or [])
    return value


def _set(d: dict, path: str, value: Any) -> None:
    *parents, leaf = path.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[leaf] = value


def _get(d: Mapping, path: str, default: Any = None) -> Any:
    node: Any = d
    for p in path.split("."):
        if not isinstance(node, Mapping) or p not in node:
            return default
        node = node[p]
    return node


def form_to_spec(fields: Sequence[FieldDef], values: Sequence[Any], param_fields: Sequence[FieldDef] = (),
                 param_values: Sequence[Any] = ()) -> tuple[dict[str, Any], list[str]]:
    """Widget values (in ``fields`` order) → a nested spec dict, plus parse problems."""
    problems: list[str] = []
    spec: dict[str, Any] = {}
    for f, raw in zip(fields, values):
        _set(spec, f.path, coerce(f, raw, problems))
    params: dict[str, Any] = {}
    for f, raw in zip(param_fields, param_values):
        v = coerce(f, raw, problems)
        if v is not None or f.optional:
            params[f.path.rsplit(".", 1)[-1]] = v
    spec.setdefault("method", {})["params"] = params
    budget = spec.get("budget")
    if isinstance(budget, dict) and not budget.pop("enabled", True):
        del spec["budget"]  # the switch is off: a plain run
    return spec, problems


def budget_on(spec: Mapping[str, Any]) -> bool:
    """Whether a spec dict asks for a forgetting-budget search (the form's switch, else a budget block)."""
    b = spec.get("budget")
    return isinstance(b, Mapping) and bool(b.get("enabled", True))


def spec_to_form(fields: Sequence[FieldDef], spec: Mapping[str, Any]) -> list[Any]:
    """A spec dict → widget values in ``fields`` order (missing fields take their defaults)."""
    return [budget_on(spec) if f.path == BUDGET_SWITCH else to_widget(f, _get(spec, f.path, f.default))
            for f in fields]


def params_to_form(param_fields: Sequence[FieldDef], params: Mapping[str, Any] | None) -> list[Any]:
    params = params or {}
    return [to_widget(f, params.get(f.path.rsplit(".", 1)[-1], f.default)) for f in param_fields]


# ---- YAML, CLI preview, pre-flight ----------------------------------------------------------------
def spec_yaml(spec: Mapping[str, Any]) -> str:
    """The exact spec as YAML (what Download YAML saves and ``ldifs train`` reads)."""
    return yaml.safe_dump(_plain(spec), sort_keys=False, allow_unicode=True)


def _plain(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def yaml_to_spec(source: str) -> dict[str, Any]:
    """Parse pasted YAML (or JSON) into a spec dict; errors are a ``SpecError`` naming the problem.

    Parsing is bounded (size, depth, aliases, expanded size: ``ldifs_engine.specio``) before anything
    is expanded, so the JSON round trip below is cheap."""
    d = parse_spec_text(source or "", source="spec")
    return json.loads(json.dumps(d, default=str))  # plain JSON types only


def canonical(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The validated, fully defaulted spec (what the job will run), or the input if it is invalid."""
    try:
        return RunSpec.from_dict(spec).to_dict()
    except SpecError:
        return dict(spec)


def cli_command(spec: Mapping[str, Any], filename: str = "spec.yaml") -> str:
    """A shell snippet that reproduces the run headless: write the YAML, then train or submit it."""
    name = shlex.quote(filename)
    body = spec_yaml(spec).rstrip("\n")
    here = (f"# search here, in the foreground (trials and budget.json in runs/my-budget):\n"
            f"ldifs budget {name} --out runs/my-budget\n" if budget_on(spec) else
            f"# run it here, in the foreground (results in runs/my-run):\nldifs train {name} --out runs/my-run\n")
    return (f"cat > {name} <<'LDIFS_SPEC'\n{body}\nLDIFS_SPEC\n\n{here}"
            f"# …or queue it on the server this app uses:\nldifs submit {name}\n")


def preflight(spec: Mapping[str, Any], parse_problems: Iterable[str],
              validate: Callable[[Mapping[str, Any]], list[str]]) -> list[str]:
    """Every problem at once: what the form could not parse, then what the spec validator says."""
    problems = list(parse_problems)
    try:
        problems += [p for p in validate(spec) if p not in problems]
    except SpecError as e:  # a validator may raise instead of returning
        problems += [p for p in e.problems if p not in problems]
    return problems


def warnings(spec: Mapping[str, Any], backbones: Sequence[Mapping[str, Any]] = (),
             datasets: Sequence[Mapping[str, Any]] = ()) -> list[str]:
    """Things that are allowed but worth a second look before spending compute."""
    out = []
    if not _get(spec, "data.controls"):
        out.append("No control datasets: the report cannot tell whether the model forgot anything.")
    bb = next((b for b in backbones if b.get("key") == spec.get("backbone")), None)
    if bb and bb.get("needs_download"):
        out.append(f"The model {spec.get('backbone')} is downloaded on first use (needs internet on the worker).")
    keys = [_get(spec, "data.target")] + list(_get(spec, "data.controls") or [])
    for ds in datasets:
        if ds.get("key") in keys and ds.get("available") is False:
            out.append(f"Dataset {ds.get('title') or ds.get('key')} is not on this server yet: "
                       f"{ds.get('how_to_get') or 'see the Datasets tab'}")
    return out


# ---- presets ------------------------------------------------------------------------------------------
def separate_datasets(target: str, sequence: Iterable[str] | None,
                      controls: Iterable[str] | None) -> tuple[list[str], list[str]]:
    """(sequence, controls) with each dataset in one role: a dataset fine-tuned on (the target, or later
    in the sequence) is not a control, and the target is not repeated in the sequence."""
    seq = [k for k in dict.fromkeys(sequence or []) if k != target]
    return seq, [c for c in (controls or []) if c != target and c not in seq]


def load_presets() -> dict[str, list[dict[str, Any]]]:
    """Presets (name → one or more spec dicts), a private copy of the engine's (pure data)."""
    return copy.deepcopy(dict(PRESETS))


# ---- flattening, diffs, companion runs ---------------------------------------------------------------
def flatten(spec: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested spec → {dotted path: leaf value}; lists stay leaves."""
    out: dict[str, Any] = {}
    for k, v in spec.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, path + "."))  # an empty mapping (a method without params) adds nothing
        else:
            out[path] = v
    return out


def overrides_between(base: Mapping[str, Any], other: Mapping[str, Any]) -> dict[str, Any]:
    """What to change in ``base`` to get ``other``; method params are replaced as a whole."""
    fb = {k: v for k, v in flatten(base).items() if not k.startswith("method.params")}
    fo = {k: v for k, v in flatten(other).items() if not k.startswith("method.params")}
    out = {k: v for k, v in fo.items() if fb.get(k, _MISSING) != v}
    if _get(base, "method.params", {}) != _get(other, "method.params", {}):
        out["method.params"] = copy.deepcopy(_get(other, "method.params", {}) or {})
    return out


_MISSING = object()


def apply_overrides(spec: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(spec))
    for path, value in overrides.items():
        _set(out, path, copy.deepcopy(value))
    return out


def describe_overrides(overrides: Mapping[str, Any]) -> str:
    """'method: ce, name: CE' — a short label for a companion run."""
    shown = {k: v for k, v in overrides.items() if k != "method.params"}
    return ", ".join(f"{text.label_for(k).lower()} {v}" for k, v in shown.items()) or "same settings"


def config_diff(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """Only the fields that differ between runs: [(path, [value per run])], in spec order."""
    flats = [flatten(s) for s in specs]
    paths: list[str] = []
    for f in flats:
        paths += [p for p in f if p not in paths]
    rows = []
    for p in paths:
        vals = [f.get(p, _MISSING) for f in flats]
        if any(v != vals[0] for v in vals[1:]):
            rows.append((p, ["—" if v is _MISSING else v for v in vals]))
    return rows
