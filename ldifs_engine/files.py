"""Crash-safe file writes and the run directory's checkpoint layout — torch-free on purpose.

The web process and the job service read run directories too (has this run a checkpoint to resume
from?), and they must not import torch to do so; the engine writes through the same helpers.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .errors import DiskFull

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXT = ("no space left", "storagefull", "disk quota exceeded", "database or disk is full", "code: 28")


def is_disk_full(e: BaseException) -> bool:
    """An error that means "the disk is full": ENOSPC / EDQUOT, or a library's wording of it (safetensors,
    torch's zip writer, SQLite) — they do not all keep the errno."""
    if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
        return True
    text = str(e).lower()
    return any(t in text for t in _FULL_TEXT)


def disk_full(where: str | os.PathLike, what: str) -> DiskFull:
    """The named error for a failed write of ``what`` in folder ``where`` (with the free space there)."""
    folder = Path(where)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = f"{shutil.disk_usage(folder).free / 1024**2:,.0f} MB free"
    except OSError:
        free = "free space unknown"
    return DiskFull(f"disk full: could not write {what} in {where} ({free} on that disk); free some space, "
                    "then resume the job (it continues from its last checkpoint)")


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
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if is_disk_full(e):
            raise disk_full(path.parent, path.name) from None
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
