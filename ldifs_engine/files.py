"""Crash-safe file writes and the run directory's checkpoint layout — torch-free on purpose.

The web process and the job service read run directories too (has this run a checkpoint to resume
from?), and they must not import torch to do so; the engine writes through the same helpers.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

CHECKPOINT_MARKER = "COMPLETE"  # written last into checkpoints/step-N/: present = the checkpoint is whole
_STEP_PREFIX = "step-"


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write via a unique temp file in the same folder + fsync + ``os.replace``: readers see the old
    file or the new one, never half of one, and concurrent writers never share a temp file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """``atomic_write_bytes`` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any, **dump_kw: Any) -> Path:
    """``atomic_write_bytes`` of JSON (NaN refused: it is not JSON); ``dump_kw`` go to ``json.dumps``."""
    dump_kw.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(obj, allow_nan=False, **dump_kw))


def checkpoint_dir(root: Path, step: int) -> Path:
    """Where the checkpoint after ``step`` updates lives (zero-padded, so names sort by step)."""
    return Path(root) / f"{_STEP_PREFIX}{step:08d}"


def checkpoint_step(path: Path) -> int:
    """The step a checkpoint directory holds."""
    return int(Path(path).name[len(_STEP_PREFIX):])


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoint directories under ``root``, oldest first (half-written ones are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if not (p.is_dir() and p.name.startswith(_STEP_PREFIX) and (p / CHECKPOINT_MARKER).is_file()):
            continue
        try:
            found.append((checkpoint_step(p), p))
        except ValueError:  # step-12.tmp, step-x: not ours or not finished
            continue
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root``, or None."""
    found = complete_checkpoints(root)
    return found[-1] if found else None


STAGES_DIR = "stages"  # a continual run's stages: stages/01/, stages/02/, … each an ordinary run directory


def stage_dir(run_dir: Path, i: int) -> Path:
    """The run directory of stage ``i`` (0-based) of a continual run."""
    return Path(run_dir) / STAGES_DIR / f"{i + 1:02d}"


def latest_run_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run directory: ``checkpoints/``, or for a continual sequence
    the latest stage that has one (``stages/NN/checkpoints/``)."""
    run_dir = Path(run_dir)
    for root in [*sorted((run_dir / STAGES_DIR).glob("*/checkpoints"), reverse=True), run_dir / "checkpoints"]:
        found = latest_checkpoint(root)
        if found is not None:
            return found
    return None
