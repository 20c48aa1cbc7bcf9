"""Run one spec: a single task (``runner.run_task``) or a continual sequence (``continual.run_sequence``).

Above both, so that neither has to know the other's caller: the continual runner uses ``run_task``, and
this module only chooses between them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .continual import run_sequence
from .errors import SpecError
from .runner import run_task
from .spec import RunSpec


def run(spec: RunSpec, workdir: str | Path, **kw: Any) -> dict:
    """Fine-tune and evaluate one spec — one task, or a continual sequence (``data.sequence``) — write
    ``results.json`` into ``workdir`` and return it. Keywords as ``run_task``."""
    if spec.seeds:
        raise SpecError("seeds: a spec with seeds is a group of runs, one per seed; submit it (`ldifs submit`) "
                        "or use `ldifs train`, which runs each seed into its own folder")
    if spec.data.sequence:
        return run_sequence(spec, workdir, **kw)
    return run_task(spec, workdir, **kw)
