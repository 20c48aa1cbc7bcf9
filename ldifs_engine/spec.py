"""The run spec: typed, frozen, validated in one place, round-trips through JSON and YAML.

``RunSpec.from_dict`` is the single door for user-supplied configuration. It checks every field,
collects every problem (each naming its field and what is allowed) and raises one ``SpecError``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .budget import BudgetSpec
from .errors import SpecError
from .fields import ADDED_LATER, drop_later_defaults, field_help, param  # noqa: F401 — field_help: the app reads it from here
from .specio import parse_spec_text, quote

__all__ = ["RunSpec", "DataSpec", "MethodSpec", "OptimSpec", "EvalSpec", "BudgetSpec", "field_help", "parse_spec_text", "quote",
           "validate"]

UPLOAD_KEY = re.compile(r"^upload:[0-9a-f]{32}$")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
HEAD_INITS = ("zs", "lp")
MAX_SEEDS = 10  # repeats of one spec (each is a whole run)


_f = param  # a documented field (fields.py); short, as every field of the spec uses it


@dataclass(frozen=True)
class DataSpec:
    target: str = _f("quadrant", "Dataset to fine-tune on (its key in the dataset catalog).")
    controls: tuple[str, ...] = _f((), "Other datasets on which forgetting is measured.")
    sequence: tuple[str, ...] = _f((), "Continual fine-tuning: more datasets to fine-tune on after the target, in "
                                   "this order (empty = one task).")
    val_fraction: float = _f(0.1, "Seeded share of the train split held out for validation / probe selection.", min=0.0, max=0.5)
    max_train_samples: int | None = _f(None, "Cap on training images (None = all).", min=1)
    max_eval_samples: int | None = _f(None, "Cap on images per evaluation split (None = all).", min=1)
    num_workers: int = _f(0, "Data-loader worker processes (0 = the operator's LDIFS_DATA_WORKERS, else none on "
                          "a CPU and up to 4 on a GPU).", min=0, max=32)


@dataclass(frozen=True)
class MethodSpec:
    name: str = _f("ce", "Fine-tuning method (see `ldifs methods`).")
    head_init: str = _f("zs", "Classifier head init: zs = text embeddings of class prompts, lp = linear probe.", choices=HEAD_INITS)
    freeze_head: bool = _f(False, "Keep the classifier head fixed and train the image tower only.")
    params: Any = None  # the method's own frozen Params dataclass instance


@dataclass(frozen=True)
class OptimSpec:
    lr: float = _f(1e-5, "AdamW learning rate.", min_excl=0.0, max=1.0)
    weight_decay: float = _f(0.1, "AdamW decoupled weight decay.", min=0.0, max=10.0)
    batch_size: int = _f(128, "Effective batch size (images per update).", min=1, max=65536)
    micro_batch: int | None = _f(None, "Images per forward pass; the rest via gradient accumulation (None = batch size).", min=1)
    steps: int | None = _f(None, "Number of updates. Give steps or epochs.", min=1, max=10_000_000)
    epochs: float | None = _f(None, "Passes over the training split. Give steps or epochs.", min_excl=0.0, max=10_000.0)
    warmup_steps: int = _f(500, "Linear warm-up updates before the cosine decay.", min=0)
    grad_clip: float | None = _f(1.0, "Clip the global gradient norm to this (None = off).", min_excl=0.0)
    precision: str = _f("auto", "auto = bf16 autocast on CUDA, fp32 on CPU.", choices=PRECISIONS)
    checkpoint_every: int = _f(50, "Write a resumable checkpoint every this many updates.", min=1)
    compile: bool = _f(False, "torch.compile the image tower's blocks (faster GPU steps after a one-off compile).",
                       added_later=True)


@dataclass(frozen=True)
class EvalSpec:
    zero_shot: bool = _f(True, "Zero-shot accuracy on every dataset, before and after.")
    linear_probe: bool = _f(True, "Linear-probe accuracy on every dataset, before and after.")
    ece: bool = _f(True, "Expected calibration error (15 bins) of the ZS and LP heads.")
    curve_points: int = _f(5, "Evaluations during training for the accuracy-vs-step curves (0 = none).", min=0, max=1000)
    wise_ft_alphas: tuple[float, ...] = _f((), "WiSE-FT interpolation grid, e.g. 0, 0.1 ... 1 (empty = off).")
    lp_max_train: int | None = _f(None, "Cap on linear-probe training images per dataset (None = all).", min=1)


@dataclass(frozen=True)
class RunSpec:
    backbone: str = _f("concept-clip-tiny", "Backbone key (see `ldifs backbones`).")
    data: DataSpec = field(default_factory=DataSpec)
    method: MethodSpec = field(default_factory=MethodSpec)
    optim: OptimSpec = field(default_factory=OptimSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    seed: int = _f(0, "Seed for data order, splits, augmentation and init.", min=0, max=2**31 - 1)
    seeds: tuple[int, ...] = _f((), "Repeat the run once per seed (e.g. 0, 1, 2) to see how much the numbers vary; "
                                "overrides seed. Empty = one run.", min=0, max=2**31 - 1, max_items=MAX_SEEDS,
                                added_later=True)
    name: str = _f("", "A title for the run (free text, shown as text).", max_len=120)
    # a forgetting budget: search the method's strength (ldifs_engine/budget.py); absent from the dict when None
    budget: BudgetSpec | None = field(default=None, metadata={ADDED_LATER: True})

    # ---- (de)serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict; method params are inlined under ``method.params``."""
        out = dataclasses.asdict(self)
        if not out["seeds"]:  # a single run's dict (and so its spec hash) is what it was before repeats existed
            del out["seeds"]
        if out["budget"] is None:  # likewise for a run without a forgetting budget
            del out["budget"]
        out["method"]["params"] = dataclasses.asdict(self.method.params) if self.method.params is not None else {}
        return _listify(out)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "RunSpec":
        """Build and validate; raise ``SpecError`` listing every problem."""
        problems: list[str] = []
        spec = _build(cls, d or {}, "", problems)
        if spec is not None:
            # Failed fields fell back to defaults; report cross-field problems only for fields that are fine.
            bad = {p.split(":")[0].split("[")[0] for p in problems}
            problems.extend(p for p in _cross_checks(spec) if p.split(":")[0].split("[")[0] not in bad)
        if problems:
            raise SpecError(problems)
        return spec

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        return cls.from_dict(parse_spec_text(text, fmt="json"))

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> "RunSpec":
        return cls.from_dict(parse_spec_text(text))  # JSON is YAML too; bounded before expanding

    def spec_hash(self) -> str:
        """Content hash of the spec (canonical JSON), identifies a run's configuration.

        Fields declared ``added_later`` (fields.param) are left out while they hold their default, so a
        new option does not orphan the checkpoints of runs created before it existed."""
        return _sha256_json(drop_later_defaults(self, self.to_dict()))

    def accepted_hashes(self) -> tuple[str, ...]:
        """Hashes under which this spec's checkpoints and results may have been written: ``spec_hash()``
        and, for a spec at the defaults of later-added fields, the hash of its full dict (what versions
        between adding such a field and marking it ``added_later`` wrote)."""
        return tuple(dict.fromkeys((self.spec_hash(), _sha256_json(self.to_dict()))))

    def replace(self, **changes: Any) -> "RunSpec":
        """A changed copy, re-validated (dotted keys allowed: ``optim.lr=1e-4``)."""
        d = self.to_dict()
        for key, value in changes.items():
            node = d
            *parents, leaf = key.replace("__", ".").split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return RunSpec.from_dict(d)

    def expand_seeds(self) -> list["RunSpec"]:
        """One single-seed spec per entry of ``seeds`` (``[self]`` without repeats), named "… · seed N"."""
        if not self.seeds:
            return [self]
        base = self.name or f"{self.method.name} on {' → '.join((self.data.target, *self.data.sequence))}"
        return [self.replace(seed=s, seeds=[], name=f"{base} · seed {s}"[:120]) for s in self.seeds]

    @property
    def datasets(self) -> tuple[str, ...]:
        """Every dataset the run touches: the target, the rest of a continual sequence, the controls."""
        return (self.data.target, *self.data.sequence, *self.data.controls)


def validate(d: Mapping[str, Any]) -> list[str]:
    """Every problem with a spec dict, as ``"field: message"`` strings (empty = valid)."""
    try:
        RunSpec.from_dict(d)
    except SpecError as e:
        return e.problems
    return []


# ---- internals ---------------------------------------------------------------------------
def _sha256_json(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _listify(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _listify(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_listify(v) for v in x]
    return x


def _build(cls: type, d: Any, prefix: str, problems: list[str]) -> Any:
    if not isinstance(d, Mapping):
        problems.append(f"{prefix.rstrip('.') or 'spec'}: expected a mapping, got {type(d).__name__}")
        return None
    known = {f.name: f for f in fields(cls)}
    for key in d:
        if key not in known:
            problems.append(f"{prefix}{key}: unknown field; allowed: {', '.join(known)}")
    kwargs: dict[str, Any] = {}
    for name, f in known.items():
        path = f"{prefix}{name}"
        if cls is MethodSpec and name == "params":
            continue
        if name not in d:
            continue
        sub = _SUBSPECS.get((cls, name))
        if sub is not None and d[name] is None and name in _OPTIONAL_SUBSPECS:
            continue
        if sub is not None:
            built = _build(sub, d[name], path + ".", problems)
            if built is not None:
                kwargs[name] = built
            continue
        ok, value = check_value(field_types(cls)[name], f.metadata, d[name], path, problems)
        if ok:
            kwargs[name] = value
    if cls is MethodSpec:
        kwargs["params"] = _build_method_params(kwargs.get("name", "ce"), d.get("params", {}), prefix, problems)
    try:
        return cls(**kwargs)
    except TypeError as e:  # only reachable through a bug in the field tables
        problems.append(f"{prefix or 'spec'}: {e}")
        return None


def _build_method_params(name: str, raw: Any, prefix: str, problems: list[str]) -> Any:
    from .methods import METHODS

    if name not in METHODS:
        problems.append(f"{prefix}name: unknown method {quote(name)}; choose one of: {', '.join(METHODS.names())}")
        return None
    params_cls = METHODS.get(name).Params
    if raw is None:
        raw = {}
    before = len(problems)
    built = _build(params_cls, raw, f"{prefix}params.", problems)
    return built if len(problems) == before else None


def field_types(cls: type) -> dict[str, Any]:
    """A dataclass's field annotations as real types (``int | None``, ``tuple[float, ...]``), not their text."""
    if cls not in _TYPES:
        _TYPES[cls] = typing.get_type_hints(cls)
    return _TYPES[cls]


_TYPES: dict[type, dict[str, Any]] = {}


def kind_of(tp: Any) -> tuple[Any, bool, Any]:
    """(base type, optional?, item type of a tuple or None) of a field's annotation."""
    optional = False
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        optional, tp = len(rest) < len(args), rest[0] if len(rest) == 1 else tp
    if typing.get_origin(tp) is tuple:
        return tuple, optional, typing.get_args(tp)[0]
    return tp, optional, None


def check_value(tp: Any, meta: Mapping[str, Any], value: Any, path: str, problems: list[str]) -> tuple[bool, Any]:
    """Coerce and check one value against its field's type ``tp`` and metadata (bounds, choices)."""
    base, optional, item = kind_of(tp)
    if value is None:
        if optional:
            return True, None
        problems.append(f"{path}: must not be empty; {_allowed(base, meta)}")
        return False, None
    check = _CHECKS.get(base)
    if check is None:
        problems.append(f"{path}: unsupported field type {tp}")
        return False, None
    return check(value, meta, path, problems, item)


def _check_bool(value: Any, meta: Mapping[str, Any], path: str, problems: list[str], _item: Any) -> tuple[bool, Any]:
    if isinstance(value, bool):
        return True, value
    problems.append(f"{path}: expected true or false, got {quote(value)}")
    return False, None


def _check_int(value: Any, meta: Mapping[str, Any], path: str, problems: list[str], _item: Any) -> tuple[bool, Any]:
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
        problems.append(f"{path}: expected a whole number; {_allowed(int, meta)}; got {quote(value)}")
        return False, None
    return _check_range(int(value), meta, path, problems, int)


def _check_float(value: Any, meta: Mapping[str, Any], path: str, problems: list[str], _item: Any) -> tuple[bool, Any]:
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None:
        problems.append(f"{path}: expected a number; {_allowed(float, meta)}; got {quote(value)}")
        return False, None
    number = float(number)
    if not math.isfinite(number):
        problems.append(f"{path}: must be a finite number; {_allowed(float, meta)}; got {quote(number)}")
        return False, None
    return _check_range(number, meta, path, problems, float)


def _check_str(value: Any, meta: Mapping[str, Any], path: str, problems: list[str], _item: Any) -> tuple[bool, Any]:
    if not isinstance(value, str):
        problems.append(f"{path}: expected text, got {type(value).__name__}")
        return False, None
    if "choices" in meta and value not in meta["choices"]:
        problems.append(f"{path}: {quote(value)} is not allowed; choose one of: {', '.join(meta['choices'])}")
        return False, None
    if len(value) > meta.get("max_len", 200):
        problems.append(f"{path}: at most {meta.get('max_len', 200)} characters")
        return False, None
    if any(ord(c) < 32 and c not in "\t" for c in value):
        problems.append(f"{path}: control characters are not allowed")
        return False, None
    return True, value


def _check_tuple(value: Any, meta: Mapping[str, Any], path: str, problems: list[str], item: Any) -> tuple[bool, Any]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        problems.append(f"{path}: expected a list, got {type(value).__name__}")
        return False, None
    item_meta = {k: v for k, v in meta.items() if k != "max_items"}  # bounds apply to each item
    checked = [check_value(item, item_meta, v, f"{path}[{i}]", problems) for i, v in enumerate(value)]
    if len(checked) > meta.get("max_items", 1000):
        problems.append(f"{path}: at most {meta.get('max_items', 1000)} items")
        return False, None
    return all(ok for ok, _ in checked), tuple(v for _, v in checked)


_CHECKS = {bool: _check_bool, int: _check_int, float: _check_float, str: _check_str, tuple: _check_tuple}


def _check_range(value: float, meta: Mapping[str, Any], path: str, problems: list[str], base: Any) -> tuple[bool, Any]:
    bad = (
        ("min" in meta and value < meta["min"])
        or ("max" in meta and value > meta["max"])
        or ("min_excl" in meta and value <= meta["min_excl"])
    )
    if "choices" in meta and value not in meta["choices"]:
        bad = True
    if bad:
        problems.append(f"{path}: {quote(value)} is out of range; {_allowed(base, meta)}")
        return False, None
    return True, value


def _allowed(base: Any, meta: Mapping[str, Any]) -> str:
    kind = {int: "a whole number", float: "a number", str: "text", bool: "true or false", tuple: "a list"}.get(
        base, str(base))
    parts = []
    if "choices" in meta:
        return "allowed: " + ", ".join(map(str, meta["choices"]))
    if "min_excl" in meta:
        parts.append(f"> {meta['min_excl']:g}")
    if "min" in meta:
        parts.append(f">= {meta['min']:g}")
    if "max" in meta:
        parts.append(f"<= {meta['max']:g}")
    return f"allowed: {kind}" + (" " + " and ".join(parts) if parts else "")


def _cross_checks(spec: RunSpec) -> list[str]:
    """Checks that span fields: catalogs, target vs controls, steps vs epochs."""
    from .backbones import BACKBONES
    from .data import DATASETS

    p: list[str] = []
    from .backbone_file import looks_like_path

    if spec.backbone not in BACKBONES and looks_like_path(spec.backbone):
        p.append(f"backbone: unknown backbone {quote(spec.backbone)}: a catalog key is expected, not a file path or "
                 "hub id (the operator registers local weights in LDIFS_BACKBONES); choose one of: "
                 f"{', '.join(BACKBONES.names())}")
    elif spec.backbone not in BACKBONES:
        p.append(f"backbone: unknown backbone {quote(spec.backbone)}; choose one of: {', '.join(BACKBONES.names())}")
    for path, key in [("data.target", spec.data.target)] + [
        (f"data.controls[{i}]", k) for i, k in enumerate(spec.data.controls)
    ] + [(f"data.sequence[{i}]", k) for i, k in enumerate(spec.data.sequence)]:
        if key not in DATASETS and not UPLOAD_KEY.match(key):
            p.append(f"{path}: unknown dataset {quote(key)}; choose one of: {', '.join(DATASETS.names())} or an uploaded dataset")
    if spec.data.target in spec.data.controls:
        p.append(f"data.controls: the target {quote(spec.data.target)} cannot also be a control dataset")
    if len(set(spec.data.controls)) != len(spec.data.controls):
        p.append("data.controls: a dataset is listed twice")
    seq = spec.data.sequence
    if spec.data.target in seq or len(set(seq)) != len(seq):
        p.append("data.sequence: each dataset of the sequence is fine-tuned on once (the target is its first)")
    if set(seq) & set(spec.data.controls):
        p.append("data.sequence: a dataset cannot be both fine-tuned on and a control: "
                 + ", ".join(sorted(set(seq) & set(spec.data.controls))))
    if seq and spec.eval.wise_ft_alphas:
        p.append("eval.wise_ft_alphas: WiSE-FT is not available for a continual sequence; leave it empty")
    o = spec.optim
    if (o.steps is None) == (o.epochs is None):
        p.append("optim.steps: give exactly one of optim.steps and optim.epochs")
    if o.micro_batch is not None and o.micro_batch > o.batch_size:
        p.append(f"optim.micro_batch: {o.micro_batch} is larger than optim.batch_size {o.batch_size}")
    for i, a in enumerate(spec.eval.wise_ft_alphas):
        if not 0.0 <= a <= 1.0:
            p.append(f"eval.wise_ft_alphas[{i}]: {quote(a)} is out of range; allowed: numbers from 0 to 1")
    if len(set(spec.seeds)) != len(spec.seeds):
        p.append("seeds: each seed may appear once; allowed: distinct whole numbers, e.g. [0, 1, 2]")
    if not (spec.eval.zero_shot or spec.eval.linear_probe):
        p.append("eval: turn on at least one of eval.zero_shot and eval.linear_probe")
    from .methods import METHODS

    if spec.method.name in METHODS and spec.method.params is not None:
        p.extend(METHODS.get(spec.method.name).check(spec))
        from .budget import check as budget_check

        p.extend(budget_check(spec))
    return p


_SUBSPECS = {
    (RunSpec, "data"): DataSpec,
    (RunSpec, "method"): MethodSpec,
    (RunSpec, "optim"): OptimSpec,
    (RunSpec, "eval"): EvalSpec,
    (RunSpec, "budget"): BudgetSpec,
}
_OPTIONAL_SUBSPECS = ("budget",)  # null = absent

