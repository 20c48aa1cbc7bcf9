"""The engine's output contract: ``results.json`` with ``"schema": "ldifs.results/1"`` (docs/RESULTS.md)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

SCHEMA = "ldifs.results/1"
METRICS = ("zs_acc", "zs_ece", "lp_acc", "lp_ece")
ROLES = ("target", "control", "sequence")  # sequence = fine-tuned on earlier in a continual run
REQUIRED = ("schema", "spec", "target", "datasets", "target_head_acc", "summary", "curves", "timing", "versions")


def _frac(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and math.isfinite(v) and 0.0 <= v <= 1.0)


def results_problems(r: Any) -> list[str]:
    """Every way ``r`` breaks the schema (empty = valid)."""
    if not isinstance(r, dict):
        return ["results: expected an object"]
    p = [f"{k}: missing" for k in REQUIRED if k not in r]
    if r.get("schema") != SCHEMA:
        p.append(f"schema: expected {SCHEMA!r}, got {r.get('schema')!r}")
    ds = r.get("datasets")
    if not isinstance(ds, dict) or not ds:
        p.append("datasets: expected a non-empty object")
        ds = {}
    roles = [d.get("role") for d in ds.values() if isinstance(d, dict)]
    if ds and roles.count("target") != 1:
        p.append("datasets: exactly one dataset must have role 'target'")
    for key, d in ds.items():
        if not isinstance(d, dict) or d.get("role") not in ROLES:
            p.append(f"datasets.{key}.role: expected one of {', '.join(ROLES)}")
            continue
        for side in ("before", "after"):
            m = d.get(side)
            if not isinstance(m, dict):
                p.append(f"datasets.{key}.{side}: missing")
                continue
            for k in METRICS:
                if k not in m:
                    p.append(f"datasets.{key}.{side}.{k}: missing (use null when not computed)")
                elif k.endswith("acc") and not _frac(m[k]):
                    p.append(f"datasets.{key}.{side}.{k}: expected a fraction in [0, 1] or null, got {m[k]!r}")
    th = r.get("target_head_acc", {})
    for side in ("before", "after"):
        if not isinstance(th, dict) or not _frac(th.get(side)):
            p.append(f"target_head_acc.{side}: expected a fraction in [0, 1] or null")
    c = r.get("continual")
    if c is not None:
        seq = c.get("sequence") if isinstance(c, dict) else None
        rows = c.get("task_acc") if isinstance(c, dict) else None
        if not isinstance(seq, list) or len(seq) < 2:
            p.append("continual.sequence: expected a list of at least 2 datasets")
        elif not isinstance(rows, list) or len(rows) != len(seq) + 1 or any(
                not isinstance(row, list) or len(row) != len(seq) or not all(map(_frac, row)) for row in rows):
            p.append("continual.task_acc: expected one row per stage plus the pre-trained row, "
                     "one fraction per task")
    s = r.get("summary", {})
    for k in ("mean_delta_zs_controls", "mean_delta_lp_controls", "target_gain"):
        if not isinstance(s, dict) or k not in s:
            p.append(f"summary.{k}: missing")
    return p


def validate_results(r: Any) -> None:
    """Raise ``ValueError`` listing every schema problem."""
    problems = results_problems(r)
    if problems:
        raise ValueError("results.json does not match ldifs.results/1: " + "; ".join(problems))


def read_finished(run_dir: Path, label: str, error: type[Exception]) -> dict:
    """A finished run's ``results.json``, checked against the schema; else ``error`` naming the run in one line."""
    try:
        results = json.loads((Path(run_dir) / "results.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"run {label}: not a finished run (no results.json)") from None
    except (OSError, ValueError) as e:
        raise error(f"run {label}: results.json is unreadable ({type(e).__name__})") from None
    if results_problems(results):
        raise error(f"run {label}: results.json does not match the results schema")
    return results
