"""Merging finished runs: which runs, whether they fit together, and the merged weights.

Task arithmetic (Ilharco et al. 2023) adds the runs' task vectors ``τ_i = θ_i − θ_0`` to the
pre-trained weights: ``θ = θ_0 + λ Σ τ_i``. TIES (Yadav et al. 2023) first trims each ``τ_i`` to its
largest ``keep`` share of entries (by magnitude, over the whole model), elects a sign per entry (the
sign of the trimmed sum) and averages only the entries that agree with it: ``θ = θ_0 + λ τ_ties``.
Both are computed in float64 and written back in each tensor's dtype; task arithmetic as
``(1 − nλ) θ_0 + λ Σ θ_i`` (the same sum, regrouped) so that λ = 0 is exactly ``θ_0`` and λ = 1 with
one run is exactly that run's weights. Integer buffers are taken from ``θ_0``.

``merge_run.py`` evaluates the merged models; this module only reads run folders and does arithmetic.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LdifsError, SpecError

MERGE_METHODS = ("task_arithmetic", "ties")
DEFAULT_LAMBDAS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MAX_LAMBDAS = 41
LAMBDA_RANGE = (0.0, 2.0)
DEFAULT_TIES_KEEP = 0.2  # TIES' default: keep the top 20 % of each task vector
MAX_RUNS = 8


class MergeError(LdifsError):
    """Runs that cannot be merged (not finished, another backbone, weights that do not fit)."""

    exit_code = 2
    exit_meaning = "the runs to merge were rejected"


@dataclass(frozen=True)
class MergeSpec:
    """What to merge and how (validated in ``from_dict``; every problem listed at once)."""

    runs: tuple[str, ...]  # run folders (the CLI's arguments, or folders the service layer resolved)
    labels: tuple[str, ...] = ()  # how each run is named in messages and the report (default: its folder)
    method: str = "task_arithmetic"
    lambdas: tuple[float, ...] = DEFAULT_LAMBDAS
    ties_keep: float = DEFAULT_TIES_KEEP
    name: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "MergeSpec":
        """Build from ``{"runs": [...], "labels": [...], "method", "lambdas", "ties_keep", "name"}``."""
        if not isinstance(d, Mapping):
            raise SpecError("merge: expected an object")
        p: list[str] = []
        runs = d.get("runs")
        if not isinstance(runs, (list, tuple)) or not runs or not all(isinstance(r, str) and r for r in runs):
            p.append("merge.runs: expected a list of one or more run folders")
            runs = []
        elif len(runs) > MAX_RUNS:
            p.append(f"merge.runs: at most {MAX_RUNS} runs, got {len(runs)}")
        labels = d.get("labels") or list(runs)
        if not isinstance(labels, (list, tuple)) or len(labels) != len(runs) or not all(isinstance(x, str) for x in labels):
            p.append("merge.labels: expected one name per run")
            labels = list(runs)
        method = d.get("method", "task_arithmetic")
        if method not in MERGE_METHODS:
            p.append(f"merge.method: {method!r} is not allowed; choose one of: {', '.join(MERGE_METHODS)}")
        lambdas = parse_lambdas(d.get("lambdas", DEFAULT_LAMBDAS), p)
        keep = d.get("ties_keep", DEFAULT_TIES_KEEP)
        if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
            p.append(f"merge.ties_keep: expected a share in (0, 1], got {keep!r}")
            keep = DEFAULT_TIES_KEEP
        name = d.get("name") or ""
        if not isinstance(name, str) or len(name) > 120:
            p.append("merge.name: expected text of at most 120 characters")
            name = ""
        if p:
            raise SpecError(p)
        return cls(tuple(runs), tuple(labels), method, lambdas, float(keep), name)

    def to_dict(self) -> dict[str, Any]:
        return {"runs": list(self.runs), "labels": list(self.labels), "method": self.method,
                "lambdas": list(self.lambdas), "ties_keep": self.ties_keep, "name": self.name}


def parse_lambdas(raw: Any, problems: list[str]) -> tuple[float, ...]:
    """The λ grid from a list of numbers or ``"0,0.25,0.5"`` text; sorted, duplicates removed."""
    lo, hi = LAMBDA_RANGE
    if isinstance(raw, str):
        try:
            raw = [float(x) for x in raw.replace(" ", "").split(",") if x]
        except ValueError:
            problems.append(f"merge.lambdas: expected comma-separated numbers from {lo:g} to {hi:g}, got {raw[:60]!r}")
            return DEFAULT_LAMBDAS
    if (not isinstance(raw, (list, tuple)) or not raw or len(raw) > MAX_LAMBDAS
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and lo <= x <= hi
                       for x in raw)):
        problems.append(f"merge.lambdas: expected 1 to {MAX_LAMBDAS} numbers from {lo:g} to {hi:g}")
        return DEFAULT_LAMBDAS
    return tuple(sorted({float(x) for x in raw}))


# ---- the runs --------------------------------------------------------------------------------------
@dataclass
class Source:
    """One finished run folder, read and checked."""

    label: str
    run_dir: Path
    results: dict
    spec: Any  # RunSpec

    @property
    def target(self) -> str:
        return str(self.results["target"])

    @property
    def weights_path(self) -> Path:
        return self.run_dir / "final" / "model.safetensors"

    @property
    def adapter_path(self) -> Path:
        return self.run_dir / "final" / "adapter.safetensors"

    @property
    def head_path(self) -> Path | None:
        p = self.run_dir / "final" / "head.safetensors"
        return p if p.is_file() else None


def load_source(run_dir: str | Path, label: str) -> Source:
    """A finished single-task run written by ``ldifs train`` (or a job), or ``MergeError`` naming it."""
    from .results import read_finished
    from .spec import RunSpec

    run_dir = Path(run_dir)
    results = read_finished(run_dir, label, MergeError)
    if results.get("continual"):
        raise MergeError(f"run {label}: a continual sequence cannot be merged (merge single-task runs)")
    if results.get("merge"):
        raise MergeError(f"run {label}: is itself a merge (merge the original runs instead)")
    try:
        spec = RunSpec.from_dict(results["spec"])
    except SpecError as e:
        raise MergeError(f"run {label}: its spec is no longer valid ({e})") from None
    src = Source(label, run_dir, results, spec)
    if not src.weights_path.is_file() and not src.adapter_path.is_file():
        raise MergeError(f"run {label}: has no final weights (final/model.safetensors or a LoRA adapter)")
    return src


def check_backbones(sources: Sequence[Source]) -> str:
    """The one backbone all runs share, or ``MergeError`` naming the first run on another one."""
    from .backbones import BACKBONES

    first = sources[0]
    for s in sources[1:]:
        if s.spec.backbone != first.spec.backbone:
            raise MergeError(f"run {s.label}: backbone {s.spec.backbone!r} differs from {first.spec.backbone!r} "
                             f"of run {first.label}; only runs on the same backbone can be merged")
    info = BACKBONES.get(first.spec.backbone)
    if info.random_init:
        raise MergeError(f"run {first.label}: backbone {first.spec.backbone!r} starts from random weights, so there "
                         "are no fixed pre-trained weights to take task vectors from")
    return first.spec.backbone


def fold_adapter(path: Path, base: Mapping[str, Any], label: str) -> dict:
    """The full weights of a run that exported its LoRA adapter only: ``W + scaling·(B @ A)`` on ``base``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from .adapters import FORMAT, merged_state

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        adapter = load_file(str(path))
        if meta.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} adapter")
        return merged_state(dict(base), adapter, float(meta["scaling"]))
    except Exception as e:  # noqa: BLE001 — damaged, foreign or mismatched: one line naming the run
        raise MergeError(f"run {label}: final/adapter.safetensors cannot be folded into the base model "
                         f"({type(e).__name__}: {str(e)[:120]})") from None


def load_weights(src: Source, reference: Mapping[str, Any]) -> dict:
    """A run's final weights (its LoRA adapter folded into ``reference`` when it exported only that),
    checked key by key and shape by shape against the pre-trained model."""
    from safetensors.torch import load_file

    if not src.weights_path.is_file():
        return fold_adapter(src.adapter_path, reference, src.label)
    try:
        state = load_file(str(src.weights_path))
    except Exception as e:  # noqa: BLE001 — a damaged file, whatever safetensors calls it
        raise MergeError(f"run {src.label}: final/model.safetensors is unreadable ({type(e).__name__})") from None
    missing = sorted(set(reference) - set(state))
    extra = sorted(set(state) - set(reference))
    shape = [k for k in reference if k in state and tuple(state[k].shape) != tuple(reference[k].shape)]
    if missing or extra or shape:
        what = (f"missing {missing[0]}" if missing else f"unexpected {extra[0]}" if extra
                else f"{shape[0]} has shape {tuple(state[shape[0]].shape)}, not {tuple(reference[shape[0]].shape)}")
        raise MergeError(f"run {src.label}: its weights do not fit backbone {src.spec.backbone!r} ({what})")
    bad = next((k for k, t in state.items() if t.is_floating_point() and not bool(t.isfinite().all())), None)
    if bad is not None:
        raise MergeError(f"run {src.label}: final/model.safetensors holds non-finite values ({bad})")
    return state


def merge_id(sources: Sequence[Source], spec: MergeSpec) -> str:
    """Content hash of a merge: the runs' spec hashes, the method and its settings."""
    blob = json.dumps({"runs": [s.results.get("spec_hash") or s.spec.spec_hash() for s in sources],
                       "method": spec.method, "lambdas": list(spec.lambdas),
                       "ties_keep": spec.ties_keep if spec.method == "ties" else None}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---- the arithmetic ----------------------------------------------------------------------------------
def task_arithmetic(theta0: Mapping[str, Any], thetas: Sequence[Mapping[str, Any]], lam: float) -> dict:
    """``θ_0 + λ Σ (θ_i − θ_0)``, exact at λ = 0 (θ_0) and at λ = 1 with one run (θ_1)."""
    n = len(thetas)
    out = {}
    for k, v0 in theta0.items():
        if not v0.is_floating_point():
            out[k] = v0.clone()
            continue
        acc = (1.0 - n * lam) * v0.double()
        for th in thetas:
            acc = acc + lam * th[k].double()
        out[k] = acc.to(v0.dtype)
    return out


def ties_vector(theta0: Mapping[str, Any], thetas: Sequence[Mapping[str, Any]], keep: float) -> dict:
    """TIES' merged task vector: trim each τ_i to its top ``keep`` share (global, by magnitude), elect the
    sign of the trimmed sum per entry, average the entries that agree with it."""
    import torch

    keys = [k for k, v in theta0.items() if v.is_floating_point()]
    trimmed = []
    for th in thetas:
        tau = {k: th[k].double() - theta0[k].double() for k in keys}
        flat = torch.cat([t.abs().reshape(-1) for t in tau.values()])
        n_keep = max(1, int(round(keep * flat.numel())))
        # the n_keep-th largest magnitude; entries at or above it stay (ties at the threshold all stay)
        threshold = flat.kthvalue(flat.numel() - n_keep + 1).values if n_keep < flat.numel() else flat.min()
        trimmed.append({k: torch.where(t.abs() >= threshold, t, torch.zeros_like(t)) for k, t in tau.items()})
    out = {}
    for k in keys:
        stack = torch.stack([t[k] for t in trimmed])
        sign = torch.sign(stack.sum(0))
        agree = (torch.sign(stack) == sign) & (stack != 0)
        count = agree.sum(0).clamp(min=1)
        out[k] = (stack * agree).sum(0) / count
    return out


def ties_merge(theta0: Mapping[str, Any], tau: Mapping[str, Any], lam: float) -> dict:
    """``θ_0 + λ τ_ties`` (integer buffers from θ_0)."""
    return {k: (v0.double() + lam * tau[k]).to(v0.dtype) if k in tau else v0.clone() for k, v0 in theta0.items()}
