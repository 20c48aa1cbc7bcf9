"""How two finished runs differ, with 95 % intervals, when both were scored on the same test images.

Comparing two runs' reported changes side by side ignores that they share their test images (and,
for one backbone, their "before"): most of each run's noise is the same hard images. Pairing every
image's scores across the two runs (``ldifs_engine.stats.paired_bootstrap_run_difference``) gives
the interval for the *difference* itself, e.g. "LDIFS forgot 27.7 points less than plain
fine-tuning, 95 % interval 26.6 to 28.8".

Pure functions over ``results.json`` and ``per_image.json`` dicts (numpy, no torch): ``tasks.api``
reads the files (owner-checked) and calls ``run_difference``. The result (``ldifs.difference/1``)::

    {"schema", "datasets": {key: {"title", "zs": cell | None, "lp": cell | None, "why_not": str | None}},
     "controls": {"zs": mean_cell | None, "lp": mean_cell | None},
     "target_head": cell | None, "note": str | None}

with ``cell = {"diff", "ci": [lo, hi], "n"}`` and ``mean_cell = cell + {"datasets": [keys]}``; ``diff``
is run A's change minus run B's (fractions; > 0: A lost less or gained more), ``target_head`` the
difference of the trained classifiers' accuracies after fine-tuning.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

from ldifs_engine.intervals import from_bits
from ldifs_engine.stats import paired_bootstrap_run_difference

SCHEMA = "ldifs.difference/1"
HEADS = ("zs", "lp")
NOT_SAME_IMAGES = "the two runs were not scored on the same test images"


def _seed(*parts: str) -> int:
    """One bootstrap seed per (dataset, head): the same two runs always give the same interval."""
    return zlib.crc32(":".join(("difference", *parts)).encode())


def _spec_data(results: Mapping[str, Any]) -> tuple[Any, Any]:
    spec = results.get("spec") or {}
    return (spec.get("data") or {}).get("max_eval_samples"), spec.get("seed")


def same_test_images(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """None when both runs evaluated the same test images of each shared dataset, else why not.

    A run scores every test image unless ``data.max_eval_samples`` caps it; a capped run draws its
    subset from its seed, so two capped runs share images only with the same cap and the same seed."""
    (cap_a, seed_a), (cap_b, seed_b) = _spec_data(a), _spec_data(b)
    if cap_a != cap_b:
        return f"{NOT_SAME_IMAGES} (one evaluated at most {cap_a}, the other at most {cap_b} images per dataset)"
    if cap_a is not None and seed_a != seed_b:
        return f"{NOT_SAME_IMAGES} (each drew its {cap_a} images per dataset with its own seed: {seed_a} vs {seed_b})"
    return None


def _vectors(per_image: Mapping[str, Any] | None, key: str, head: str) -> tuple[Any, Any]:
    rec = ((per_image or {}).get("datasets") or {}).get(key) or {}
    return tuple(from_bits((rec.get(side) or {}).get(head)) for side in ("before", "after"))


def _measurable(results: Mapping[str, Any], key: str, head: str) -> bool:
    entry = (results.get("datasets") or {}).get(key) or {}
    if head == "zs" and entry.get("zs_note"):
        return False
    return all(isinstance((entry.get(side) or {}).get(f"{head}_acc"), (int, float)) for side in ("before", "after"))


def _cell(pairs: list, seed: int) -> dict[str, Any] | None:
    """The observed mean difference over ``pairs`` and its interval (None without a pair)."""
    if not pairs:
        return None
    diffs = []
    for (ba, aa), (bb, ab) in pairs:
        sa = aa.astype(float) - (0.0 if ba is None else ba.astype(float))
        sb = ab.astype(float) - (0.0 if bb is None else bb.astype(float))
        diffs.append(float((sa - sb).mean()))
    return {"diff": sum(diffs) / len(diffs), "ci": paired_bootstrap_run_difference(pairs, seed),
            "n": int(sum(len(p[0][1]) for p in pairs))}


def _dataset(a: Mapping, pa: Mapping | None, b: Mapping, pb: Mapping | None, key: str) -> tuple[dict, dict]:
    """One shared dataset: its cells, and the pairs (per head) that may join the mean over controls."""
    entry = {"title": str(((a.get("datasets") or {}).get(key) or {}).get("title") or key), "why_not": None}
    pairs = {}
    for head in HEADS:
        va, vb = _vectors(pa, key, head), _vectors(pb, key, head)
        ok = (_measurable(a, key, head) and _measurable(b, key, head)
              and all(v is not None for v in (*va, *vb)))
        if ok and len({len(v) for v in (*va, *vb)}) != 1:
            entry["why_not"], ok = f"{NOT_SAME_IMAGES} ({len(va[1])} vs {len(vb[1])} images)", False
        entry[head] = _cell([(va, vb)], _seed(key, head)) if ok else None
        if ok:
            pairs[head] = (va, vb)
    return entry, pairs


def run_difference(a: Mapping[str, Any], per_image_a: Mapping[str, Any] | None,
                   b: Mapping[str, Any], per_image_b: Mapping[str, Any] | None) -> dict[str, Any]:
    """Run A minus run B on every dataset both measured, with 95 % paired-bootstrap intervals (see
    the module docstring for the shape). Datasets that cannot be paired get null cells; ``note``
    says why when nothing could be paired at all."""
    out: dict[str, Any] = {"schema": SCHEMA, "datasets": {}, "controls": {h: None for h in HEADS},
                           "target_head": None, "note": None}
    why = same_test_images(a, b)
    if why is None and (per_image_a is None or per_image_b is None):
        why = "a run has no per-image scores (it was made before intervals existed)"
    if why:
        out["note"] = why
        return out
    ds_a, ds_b = a.get("datasets") or {}, b.get("datasets") or {}
    controls: dict[str, list] = {h: [] for h in HEADS}
    keys = []
    for key in ds_a:
        if key not in ds_b:
            continue
        out["datasets"][key], pairs = _dataset(a, per_image_a, b, per_image_b, key)
        for head, pair in pairs.items():
            if (ds_a[key] or {}).get("role") == "control" and (ds_b[key] or {}).get("role") == "control":
                controls[head].append(pair)
                keys.append((head, key))
    for head in HEADS:
        cell = _cell(controls[head], _seed("controls", head))
        out["controls"][head] = cell and {**cell, "datasets": [k for h, k in keys if h == head]}
    out["target_head"] = _target_head(a, per_image_a, b, per_image_b)
    if not out["datasets"]:
        out["note"] = "the two runs share no dataset"
    return out


def _target_head(a: Mapping, pa: Mapping, b: Mapping, pb: Mapping) -> dict[str, Any] | None:
    """The trained classifiers' accuracies after fine-tuning, A − B, when both learned the same target."""
    if a.get("target") is None or a.get("target") != b.get("target"):
        return None
    va, vb = (from_bits((p.get("target_head") or {}).get("after")) for p in (pa, pb))
    if va is None or vb is None or len(va) != len(vb):
        return None
    return _cell([((None, va), (None, vb))], _seed("target_head"))
