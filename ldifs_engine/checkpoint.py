"""Resumable checkpoints: safetensors weights + JSON state + an optimiser file only we write.

A checkpoint directory is written as ``step-N.tmp`` and renamed to ``step-N`` after a ``COMPLETE``
marker is in it, so a crash mid-write never leaves a directory that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import Any

import torch

from . import files
from .errors import DiskFull, InvalidCheckpoint
from .files import CHECKPOINT_MARKER, checkpoint_dir, complete_checkpoints, latest_checkpoint

__all__ = ["MARKER", "atomic_write_json", "checkpoint_dir", "complete_checkpoints",
           "latest_checkpoint", "load_checkpoint", "save_checkpoint", "save_tensors_atomic"]

MARKER = CHECKPOINT_MARKER


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomic JSON that also accepts tensors and paths (as lists and strings)."""
    files.atomic_write_json(path, obj, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp), metadata=metadata)
        os.replace(tmp, path)
    except Exception as e:  # noqa: BLE001 — safetensors words a full disk in its own error type
        if files.is_disk_full(e):
            raise files.disk_full(path.parent, path.name) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def save_checkpoint(root: Path, step: int, *, weights: dict[str, torch.Tensor], state: dict,
                    optim_state: dict, keep: int = 2) -> Path:
    """Write ``root/step-N`` atomically; keep the newest ``keep`` complete checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = checkpoint_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_tensors_atomic(tmp / "model.safetensors", weights)
        with open(tmp / "optim.pt", "wb") as f:  # a Python file: a full disk is an OSError, not a torch RuntimeError
            torch.save(optim_state, f)
        atomic_write_json(tmp / "state.json", {**state, "step": step})
        (tmp / MARKER).write_text("ok")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)  # frees what the half-written checkpoint took
        if isinstance(e, DiskFull) or files.is_disk_full(e):
            raise files.disk_full(root, f"checkpoint {final.name}") from None
        raise
    for old in complete_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, *, spec_hash: str | Collection[str] | None = None
                    ) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """(weights, state, optimiser state) of a complete checkpoint we wrote; checks the spec hash (one, or
    any of several: ``RunSpec.accepted_hashes``).

    Everything is read and checked before anything is returned, so a damaged checkpoint (truncated or
    overwritten weights, an unreadable optimiser file, a bad ``state.json``) raises ``InvalidCheckpoint``
    naming the part, and the caller can fall back to an older one without having touched the model.
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / MARKER).exists():
        raise InvalidCheckpoint(f"checkpoint {path.name} is incomplete")
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise InvalidCheckpoint(f"checkpoint {path.name}: state.json is unreadable ({_why(e)})") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise InvalidCheckpoint(f"checkpoint {path.name}: state.json is damaged (no step)")
    accepted = (spec_hash,) if isinstance(spec_hash, str) else spec_hash
    if accepted is not None and state.get("spec_hash") not in accepted:
        raise InvalidCheckpoint(f"checkpoint {path.name} belongs to another spec; start a new run instead of resuming")
    try:
        weights = load_file(str(path / "model.safetensors"))
    except Exception as e:  # noqa: BLE001 — SafetensorError, OSError, …: the file is damaged
        raise InvalidCheckpoint(f"checkpoint {path.name}: model.safetensors is unreadable ({_why(e)})") from None
    bad = next((k for k, t in weights.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
    if bad is not None:  # what random bytes in a valid-looking file give; training would "diverge" at once
        raise InvalidCheckpoint(f"checkpoint {path.name}: model.safetensors is damaged (non-finite values in {bad})")
    try:
        optim_state = torch.load(path / "optim.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — truncated zip, pickle error, …
        raise InvalidCheckpoint(f"checkpoint {path.name}: optim.pt is unreadable ({_why(e)})") from None
    if not isinstance(optim_state, dict) or not {"opt", "sched"} <= set(optim_state):
        raise InvalidCheckpoint(f"checkpoint {path.name}: optim.pt is damaged (missing optimiser state)")
    return weights, state, optim_state


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text[:100]}" if text else type(e).__name__
