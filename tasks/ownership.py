"""Who may train on which uploaded dataset: checked at submit and again before the engine starts.

Torch-free on purpose (the web process calls it on every submit): it reads only the owner field of an
upload's ``manifest.json``. A key that does not exist and a key of another user's upload get the same
answer, so the check reveals nothing about other users' uploads.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

UPLOAD_KEY = re.compile(r"^upload:([0-9a-f]{32})$")
MANIFEST_NAME = "manifest.json"
_MAX_MANIFEST_READ = 1024 * 1024  # the owner field sits near the top; never read a huge file whole


def owner_hash(user: str) -> str:
    """The opaque owner id stored in manifests (a hash of the user name, never the name)."""
    return hashlib.sha256(b"ldifs-owner\x00" + user.encode("utf-8")).hexdigest()[:32]


def dataset_fields(spec: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(field path, dataset key) for every dataset a spec dict names."""
    data = spec.get("data") or {}
    out: list[tuple[str, Any]] = [("data.target", data.get("target"))]
    for name in ("controls", "sequence"):
        out += [(f"data.{name}[{i}]", k) for i, k in enumerate(data.get(name) or ())]
    return out


def _owner_of(datasets_dir: Path, upload_id: str) -> str | None:
    base = (Path(datasets_dir) / "uploads").resolve()
    folder = (base / upload_id).resolve()
    if folder.parent != base:  # a symlinked folder pointing elsewhere is nobody's
        return None
    try:
        with open(folder / MANIFEST_NAME, "rb") as f:
            raw = f.read(_MAX_MANIFEST_READ + 1)
        if len(raw) > _MAX_MANIFEST_READ:
            # Large manifests (many images) still start with the owner; parse only what we need.
            m = re.search(rb'"owner"\s*:\s*"([0-9a-f]{32})"', raw)
            return m.group(1).decode() if m else None
        d = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("id") != upload_id:
        return None
    owner = d.get("owner")
    return owner if isinstance(owner, str) else None


def upload_problems(user: str, spec: Mapping[str, Any], datasets_dir: Path) -> list[str]:
    """One ``"field: message"`` per uploaded dataset in ``spec`` that ``user`` does not own (or that is gone)."""
    me = owner_hash(user)
    problems = []
    for path, key in dataset_fields(spec):
        m = UPLOAD_KEY.match(key) if isinstance(key, str) else None
        if m is None:
            continue
        if _owner_of(datasets_dir, m.group(1)) != me:
            problems.append(f"{path}: {key} is not one of your uploaded datasets (it does not exist or belongs "
                            "to someone else); pick one from the Datasets tab or `ldifs datasets`")
    return problems
