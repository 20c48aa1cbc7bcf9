"""Operator-registered backbones: ``LDIFS_BACKBONES=/etc/ldifs/backbones.yaml`` adds catalog keys for
air-gapped servers. Torch-free (PyYAML and the standard library only) so the web process can list them.

An entry points either at a local open_clip checkpoint in safetensors format, or at a pre-filled model
cache that holds an open_clip pretrained tag::

    backbones:
      - key: vitb32-inhouse                     # what users pick; never a path
        arch: ViT-B-32                          # an open_clip architecture
        weights: /srv/models/vitb32.safetensors # open_clip state dict, safetensors only
        quick_gelu: true                        # optional: the activation the weights were trained with
        title: ViT-B/32 · in-house
      - key: vitl14-openai-offline
        arch: ViT-L-14
        pretrained: openai                      # an open_clip tag, read from the model cache below
        cache_dir: /srv/models/hf               # optional; else HF_HUB_CACHE / HF_HOME

Validation here is cheap and lazy-free of torch: key syntax, known architecture (open_clip's config
files are listed without importing open_clip), readable file with a safetensors header, tag known.
Shape checks need the architecture built (``ldifs_engine.backbones.check_operator_shapes``): ``ldifs
backbones`` runs them, and the app and the worker at start through ``check_shapes_in_child`` (a child
interpreter, so those processes stay free of torch). Every problem is one line naming the file, the entry and what is wrong.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ENV = "LDIFS_BACKBONES"
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}(/[A-Za-z0-9][A-Za-z0-9._-]{0,62})?$")
MAX_FILE_BYTES = 1024 * 1024  # an operator file is a short list; refuse anything huge
MAX_HEADER_BYTES = 100 * 1024 * 1024
_FIELDS = {"key", "arch", "weights", "pretrained", "cache_dir", "quick_gelu", "title", "description", "tower"}
ASSET_CONFIGS = Path(__file__).parent / "assets" / "model_configs"


@dataclass(frozen=True)
class OperatorBackbone:
    """One validated entry of the operator file (paths absolute)."""

    key: str
    arch: str
    weights: str | None = None
    pretrained: str | None = None
    cache_dir: str | None = None
    quick_gelu: bool | None = None
    title: str = ""
    description: str = ""
    tower: str = "vit"


def looks_like_path(key: str) -> bool:
    """True for user-supplied backbone values that name a file rather than a catalog key."""
    return (key.startswith(("/", "~", ".", "\\")) or "\\" in key or ".." in key or key.count("/") > 1
            or key.endswith((".safetensors", ".bin", ".pt", ".pth", ".ckpt")) or ":" in key)


def known_architectures() -> set[str]:
    """open_clip's architecture names (its bundled JSON configs) plus this package's, without importing torch."""
    names = {p.stem for p in ASSET_CONFIGS.glob("*.json")}
    spec = importlib.util.find_spec("open_clip")
    for loc in (spec.submodule_search_locations or []) if spec else []:
        names.update(p.stem for p in (Path(loc) / "model_configs").glob("*.json"))
    return names


def known_tags() -> dict[str, set[str]] | None:
    """open_clip's pretrained tags per architecture, or None when that needs open_clip imported."""
    import sys

    mod = sys.modules.get("open_clip")
    if mod is None:
        return None
    out: dict[str, set[str]] = {}
    for arch, tag in mod.list_pretrained():
        out.setdefault(arch, set()).add(tag)
    return out


def safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names → shapes from a safetensors file's JSON header (no tensor data read, no pickle)."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("too short to be safetensors")
        (n,) = struct.unpack("<Q", raw)
        if n <= 1 or n > MAX_HEADER_BYTES:
            raise ValueError("not a safetensors file (bad header size)")
        header = json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("not a safetensors file (header is not an object)")
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__"}


def _tower(arch: str) -> str:
    return "resnet" if arch.upper().startswith("RN") or "-rn" in arch.lower() else "vit"


def parse_file(path: str | Path, *, builtin_keys: set[str] = frozenset()) -> tuple[list[OperatorBackbone], list[str]]:
    """Read and validate the operator file → (good entries, one problem line per bad entry or field).

    Entries with a problem are left out; the others still register.
    """
    path = Path(path)
    where = f"{ENV}={path}"
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            return [], [f"{where}: file is larger than {MAX_FILE_BYTES} bytes"]
        import yaml

        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as e:
        return [], [f"{where}: cannot read the file ({e.strerror or type(e).__name__})"]
    except Exception as e:  # noqa: BLE001 — YAML and decoding errors all mean "not a valid file"
        return [], [f"{where}: not valid YAML ({' '.join(str(e).split())[:160]})"]
    items = doc.get("backbones") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        return [], [f"{where}: expected a mapping with a 'backbones:' list"]
    archs = known_architectures()
    tags = known_tags()
    good: list[OperatorBackbone] = []
    problems: list[str] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        label = f"{where}: backbones[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{label}: expected a mapping with key, arch and weights or pretrained")
            continue
        key = item.get("key")
        if isinstance(key, str):
            label += f" ({key})"
        errs: list[str] = []
        unknown = sorted(set(map(str, item)) - _FIELDS)
        if unknown:
            errs.append(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}")
        if not isinstance(key, str) or not KEY_RE.match(key) or looks_like_path(key):
            errs.append("key: letters, digits, '.', '_', '-' and at most one '/' (a name users pick, never a path)")
        elif key in builtin_keys or key in seen:
            errs.append(f"key: {key!r} is already in the catalog")
        arch = item.get("arch")
        if not isinstance(arch, str) or arch not in archs:
            errs.append(f"arch: {arch!r} is not an open_clip architecture (e.g. ViT-B-32, ViT-B-16, RN50)")
        weights, tag, cache_dir = item.get("weights"), item.get("pretrained"), item.get("cache_dir")
        if (weights is None) == (tag is None):
            errs.append("give exactly one of weights (a .safetensors file) or pretrained (an open_clip tag in "
                        "the model cache)")
        if weights is not None:
            errs.extend(_check_weights(weights))
        if tag is not None:
            if not isinstance(tag, str) or not re.match(r"^[A-Za-z0-9._-]{1,80}$", tag):
                errs.append(f"pretrained: {tag!r} is not an open_clip tag")
            elif tags is not None and isinstance(arch, str) and tag not in tags.get(arch, set()):
                errs.append(f"pretrained: open_clip has no tag {tag!r} for {arch!r}")
        if cache_dir is not None and (not isinstance(cache_dir, str) or not Path(cache_dir).is_dir()):
            errs.append(f"cache_dir: {cache_dir!r} is not a readable folder")
        qg = item.get("quick_gelu")
        if qg is not None and not isinstance(qg, bool):
            errs.append("quick_gelu: true or false")
        tower = item.get("tower", _tower(arch) if isinstance(arch, str) else "vit")
        if tower not in ("vit", "resnet"):
            errs.append("tower: vit or resnet")
        for f in ("title", "description"):
            if item.get(f) is not None and not isinstance(item.get(f), str):
                errs.append(f"{f}: text")
        if errs:
            problems.extend(f"{label}: {e}" for e in errs)
            continue
        seen.add(key)
        good.append(OperatorBackbone(
            key=key, arch=arch, weights=str(Path(weights).expanduser().resolve()) if weights else None,
            pretrained=tag, cache_dir=str(Path(cache_dir).expanduser().resolve()) if cache_dir else None,
            quick_gelu=qg, title=item.get("title") or key, description=item.get("description") or "",
            tower=tower,
        ))
    return good, problems


def _check_weights(weights: object) -> list[str]:
    if not isinstance(weights, str) or not weights:
        return ["weights: a path to a .safetensors file"]
    p = Path(weights).expanduser()
    if p.suffix != ".safetensors":
        return [f"weights: {p.name} is not a .safetensors file (pickled checkpoints are never loaded)"]
    if not p.is_file():
        return [f"weights: {p} does not exist"]
    if not os.access(p, os.R_OK):
        return [f"weights: {p} is not readable by this user"]
    try:
        safetensors_header(p)
    except (OSError, ValueError) as e:
        return [f"weights: {p} is not valid safetensors ({e})"]
    return []


def from_env() -> tuple[list[OperatorBackbone], list[str]]:
    """The entries of ``$LDIFS_BACKBONES`` (none when unset)."""
    path = os.environ.get(ENV, "").strip()
    if not path:
        return [], []
    return parse_file(path)


_CHILD_CHECK = ("from ldifs_engine.backbones import check_operator_shapes as check\n"
                "for line in check(drop=False): print('PROBLEM', line.replace(chr(10), ' '))")


def check_shapes_in_child(timeout: float = 300.0) -> list[str]:
    """``check_operator_shapes`` of ``$LDIFS_BACKBONES`` in a child interpreter: one line per entry whose
    tensors do not fit its architecture. Nothing is started when no entry has a weights file."""
    entries, _problems = from_env()
    if not any(e.weights for e in entries):
        return []
    try:
        r = subprocess.run([sys.executable, "-c", _CHILD_CHECK], capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [f"{ENV}: the shapes of the operator's backbones were not checked ({type(e).__name__}); "
                "run `ldifs backbones` to check them"]
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1][:200]
        return [f"{ENV}: the shapes of the operator's backbones were not checked ({last}); "
                "run `ldifs backbones` to check them"]
    return [line[len("PROBLEM "):] for line in r.stdout.splitlines() if line.startswith("PROBLEM ")]
