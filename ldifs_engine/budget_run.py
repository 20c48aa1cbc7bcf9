"""``ldifs budget SPEC --out DIR``: a forgetting-budget search in the foreground.

Each trial is an ordinary run in ``DIR/trial_NN/`` (``launch.run``; the engine's store serves the
pre-trained model's evaluation and the probe head from the first trial on). Running the command again
reuses finished trials and resumes an interrupted one. The search itself is ``budget.next_trials``; the
queue's version of this loop is ``tasks/budget.py``.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .budget import DONE, budget_document, grid, next_trials, outcome, search_param, trial_spec, value_label, write_budget


def run_budget(spec: Any, out: str | Path, *, say: Callable[[str], None] = print, **run_kw: Any) -> dict:
    """Run the search of ``spec`` (which has a ``budget`` block) into ``out``; write and return ``budget.json``.

    ``run_kw`` go to ``launch.run`` for each trial (``data_root``, ``download``, ``should_stop``, ``cache``…)."""
    from .launch import run

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    coarse, budget, name = grid(spec), spec.budget, search_param(spec)
    trials: dict[float | None, tuple[str, dict]] = {}
    while True:
        nxt = next_trials(budget, coarse, {v: outcome(res, budget) for v, (_, res) in trials.items()})
        if nxt == DONE or not nxt:
            break
        for value in nxt:
            ts = trial_spec(spec, value)
            folder = _folder_for(out, ts.to_dict())
            res = _finished(folder, ts.to_dict())
            if res is None:
                say(f"[{folder.name}] {value_label(name, value)}: fine-tuning …")
                res = run(ts, folder, resume=True, **run_kw)
            trials[value] = (folder.name, res)
            say(f"[{folder.name}] {value_label(name, value)}: {trial_line(res, budget)}")
    doc = budget_document(spec, list(trials.values()), complete=True, wall_s=round(time.perf_counter() - t0, 1))
    write_budget(out / "budget.json", doc)
    return doc


def trial_line(res: dict, budget: Any) -> str:
    """"quadrant 99.8 %, forgets 6.1 points — over budget (stopped early at step 50)"."""
    o = outcome(res, budget)
    acc = (res.get("target_head_acc") or {}).get("after")
    f = "forgetting not measurable" if o.forgetting is None else f"forgets {o.forgetting:.1f} points"
    verdict = ("within budget" if o.forgetting is not None and o.forgetting <= budget.max_forgetting_points
               else "over budget")
    early = (res.get("training") or {}).get("stopped_early")
    if early:
        verdict += f" (stopped early at step {early['step']})"
    return f"{res.get('target')} {acc * 100:.1f} %, {f} — {verdict}" if acc is not None else f"{f} — {verdict}"


def _folder_for(out: Path, spec_dict: dict) -> Path:
    """The trial folder holding this very spec, else the next free ``trial_NN``."""
    n = 1
    while True:
        folder = out / f"trial_{n:02d}"
        try:
            if json.loads((folder / "spec.json").read_text(encoding="utf-8")) == spec_dict:
                return folder
        except FileNotFoundError:
            if not folder.exists():
                return folder
        except ValueError:
            pass
        n += 1


def _finished(folder: Path, spec_dict: dict) -> dict | None:
    try:
        res = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return res if res.get("spec") == spec_dict else None
