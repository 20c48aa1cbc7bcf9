"""The report's uncertainty: per-image correctness kept beside ``results.json`` and the intervals drawn from it.

A run writes ``per_image.json`` (which test images each head got right, before and after, in
test-image order) before ``results.json``; ``attach_intervals`` turns it into the ``*_ci`` keys of
the results contract (docs/CONTRACTS.md §2). Keeping the vectors on disk lets a continual sequence
pair its first stage's "before" with its last stage's "after", and lets anyone recompute an interval.
Torch-free: vectors are numpy arrays or strings of 0/1.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .files import atomic_write_json
from .stats import paired_bootstrap_delta, paired_bootstrap_mean_delta, wilson_of

PER_IMAGE = "per_image.json"
PER_IMAGE_SCHEMA = "ldifs.per_image/1"
SMALL_TEST_SPLIT = 200  # fewer test images than this: the report warns that its numbers are noisy


def to_bits(v: Any) -> str | None:
    """A per-image correctness vector as a string of ``0``/``1`` (None stays None)."""
    if v is None:
        return None
    a = np.asarray(v.cpu() if hasattr(v, "cpu") else v).astype(bool).ravel()
    return (a.astype(np.uint8) + ord("0")).tobytes().decode("ascii")


def from_bits(s: Any) -> np.ndarray | None:
    """The inverse of ``to_bits`` (None for anything that is not a 0/1 string)."""
    if not isinstance(s, str) or not s or set(s) - {"0", "1"}:
        return None
    return np.frombuffer(s.encode(), dtype=np.uint8) == ord("1")


def side_record(keep: Mapping[str, Any], metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One side (before or after) of one dataset: its vectors and why zero-shot is unmeasurable."""
    return {"zs": to_bits(keep.get("zs_correct")), "lp": to_bits(keep.get("lp_correct")),
            "zs_note": metrics.get("zs_note")}


def write_per_image(workdir: str | Path, datasets: Mapping[str, Mapping[str, Any]],
                    target_head: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``per_image.json`` and return what it holds: ``datasets[key] = {"before": side_record,
    "after": side_record}``, ``target_head = {"before": bits, "after": bits}`` (tensors become bits)."""
    record = {"schema": PER_IMAGE_SCHEMA, "datasets": dict(datasets),
              "target_head": {k: to_bits(v) if not isinstance(v, str) else v for k, v in target_head.items()}}
    atomic_write_json(Path(workdir) / PER_IMAGE, record)
    return record


def read_per_image(workdir: str | Path) -> dict[str, Any] | None:
    """A run's ``per_image.json`` (None when missing or unreadable: the report then has no intervals)."""
    try:
        d = json.loads((Path(workdir) / PER_IMAGE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return d if isinstance(d, dict) and d.get("schema") == PER_IMAGE_SCHEMA else None


def _seed(seed: int, *parts: str) -> int:
    """A bootstrap seed of its own per (run seed, dataset, metric): reproducible, not shared."""
    return zlib.crc32(":".join((str(seed), *parts)).encode())


def _delta(a: Any, b: Any) -> float | None:
    return a - b if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None


def attach_intervals(results: dict[str, Any], per_image: Mapping[str, Any] | None, seed: int) -> dict[str, Any]:
    """Add the contract's uncertainty keys to ``results`` (in place; also returned).

    Per dataset: ``n_test``, ``zs_note``, ``before/after.{zs_acc_ci, lp_acc_ci}`` (Wilson),
    ``delta_zs``, ``delta_zs_ci``, ``delta_lp``, ``delta_lp_ci`` (paired bootstrap). Target head:
    ``before_ci``, ``after_ci``, ``delta_ci``. Summary: ``mean_delta_zs_controls_ci``,
    ``mean_delta_lp_controls_ci``, ``target_gain_ci``, ``small_test_splits``, ``unmeasurable_zs``.
    An unmeasurable value gets a null interval; without ``per_image`` every interval is null."""
    pi = per_image or {}
    pairs: dict[str, list] = {"zs": [], "lp": []}
    for key, d in (results.get("datasets") or {}).items():
        rec = (pi.get("datasets") or {}).get(key) or {}
        vec = {side: {h: from_bits((rec.get(side) or {}).get(h)) for h in ("zs", "lp")} for side in ("before", "after")}
        notes = {side: (rec.get(side) or {}).get("zs_note") for side in ("before", "after")}
        for side in ("before", "after"):
            m = d.setdefault(side, {})
            if notes[side]:  # never a number for a head that cannot tell the classes apart
                m["zs_acc"] = m["zs_ece"] = None
            for h in ("zs", "lp"):
                m[f"{h}_acc_ci"] = wilson_of(vec[side][h]) if m.get(f"{h}_acc") is not None else None
        sizes = [len(v) for s in vec.values() for v in s.values() if v is not None]
        d["n_test"] = sizes[0] if sizes else d.get("n_test")
        d["zs_note"] = notes["before"] or (f"after fine-tuning, {notes['after']}" if notes["after"] else None)
        for h in ("zs", "lp"):
            dv = _delta(d["after"].get(f"{h}_acc"), d["before"].get(f"{h}_acc"))
            b, a = vec["before"][h], vec["after"][h]
            ok = dv is not None and b is not None and a is not None and len(a) == len(b)
            d[f"delta_{h}"] = dv
            d[f"delta_{h}_ci"] = paired_bootstrap_delta(b, a, _seed(seed, key, h)) if ok else None
            if ok and d.get("role") == "control":
                pairs[h].append((b, a))
    th = results.setdefault("target_head_acc", {})
    hb, ha = (from_bits((pi.get("target_head") or {}).get(s)) for s in ("before", "after"))
    th["before_ci"] = wilson_of(hb) if th.get("before") is not None else None
    th["after_ci"] = wilson_of(ha) if th.get("after") is not None else None
    paired = hb is not None and ha is not None and len(hb) == len(ha) and th["before_ci"] and th["after_ci"]
    th["delta_ci"] = paired_bootstrap_delta(hb, ha, _seed(seed, "target_head")) if paired else None
    s = results.setdefault("summary", {})
    # the mean's interval covers exactly the controls the mean itself averages (measurable on both sides)
    s["mean_delta_zs_controls_ci"] = paired_bootstrap_mean_delta(pairs["zs"], _seed(seed, "controls", "zs")) \
        if s.get("mean_delta_zs_controls") is not None and len(pairs["zs"]) == len(s.get("delta_zs") or {}) else None
    s["mean_delta_lp_controls_ci"] = paired_bootstrap_mean_delta(pairs["lp"], _seed(seed, "controls", "lp")) \
        if s.get("mean_delta_lp_controls") is not None and len(pairs["lp"]) == len(s.get("delta_lp") or {}) else None
    s["target_gain_ci"] = th["delta_ci"]
    ds = results.get("datasets") or {}
    s["small_test_splits"] = [k for k, d in ds.items() if isinstance(d.get("n_test"), int) and d["n_test"] < SMALL_TEST_SPLIT]
    s["unmeasurable_zs"] = [k for k, d in ds.items() if d.get("zs_note")]
    return results


def sequence_per_image(first: Mapping[str, Any] | None, last: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A continual sequence's vectors: "before" from its first stage (the pre-trained model), "after"
    and the target head from its last stage. None when either stage has none (no intervals then)."""
    if not first or not last:
        return None
    datasets = {}
    for key, rec in (last.get("datasets") or {}).items():
        start = (first.get("datasets") or {}).get(key) or {}
        datasets[key] = {"before": start.get("before"), "after": rec.get("after")}
    return {"schema": PER_IMAGE_SCHEMA, "datasets": datasets, "target_head": last.get("target_head") or {}}
