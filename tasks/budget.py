"""Forgetting-budget searches through the queue.

A budget spec (``budget:`` block) becomes a group of ordinary jobs, one per trial (visible in Jobs,
cancellable, resumable). The search is ``ldifs_engine.budget.next_trials``; this module drives it:

* ``start`` — at submit: the coarse grid's trials, and the search spec in ``budgets/<group>/search.json``;
* ``advance`` — when a trial of the group ends (the worker calls ``after_job``) and at worker start
  (``advance_all``, so a crash between "trial done" and "next trial queued" loses nothing): submits the
  values the search asks for next, or, once it is done, writes ``budgets/<group>/budget.json``;
* ``group_budget`` — the live answer for the Report, from the trials finished so far.

Trial job ids are derived from (group, value), so two workers advancing the same group at once create
each trial once (the second insert is refused and ignored).
"""
from __future__ import annotations

import hashlib
import json
import logging
import uuid
from pathlib import Path
from typing import Any

from ldifs_engine.budget import (DONE, Outcome, budget_document, grid, next_trials, outcome, recommended_spec,
                                 search_param, trial_spec, write_budget)
from ldifs_engine.files import atomic_write_json

from . import jobs, queue
from .jobs import write_spec
from .settings import Settings
from .store import CANCELLED, DONE as JOB_DONE, FAILED, JobNotFound, JobStore

log = logging.getLogger("ldifs.budget")


def budgets_dir(settings: Settings) -> Path:
    """Where each search keeps its spec and answer (next to ``runs/``: every host sees it)."""
    return settings.runs_dir.parent / "budgets"


def group_dir(settings: Settings, group: str) -> Path:
    return budgets_dir(settings) / group


def trial_job_id(group: str, value: float | None) -> str:
    return hashlib.sha256(f"{group}:{value!r}".encode()).hexdigest()[:32]


def trial_row(settings: Settings, spec: Any, group: str, value: float | None, priority: int) -> dict[str, Any]:
    """The job row of one trial (what ``JobStore.create`` takes)."""
    ts = trial_spec(spec, value)
    job_id = trial_job_id(group, value)
    return {"id": job_id, "spec": ts.to_dict(), "spec_hash": ts.spec_hash(), "priority": priority,
            "title": ts.name, "method": ts.method.name, "target": ts.data.target,
            "run_dir": settings.runs_dir / job_id, "group": group}


def start(settings: Settings, owner: str, spec: Any, priority: int) -> list[dict[str, Any]]:
    """A new search: its folder with ``search.json``, and the rows of its first trials (the coarse grid)."""
    group = uuid.uuid4().hex
    group_dir(settings, group).mkdir(parents=True, exist_ok=True)
    atomic_write_json(group_dir(settings, group) / "search.json",
                      {"owner": owner, "priority": priority, "spec": spec.to_dict()})
    first = next_trials(spec.budget, grid(spec), {})
    return [trial_row(settings, spec, group, v, priority) for v in first]


def _search(settings: Settings, group: str) -> tuple[str, int, Any]:
    from ldifs_engine.spec import RunSpec

    d = json.loads((group_dir(settings, group) / "search.json").read_text(encoding="utf-8"))
    return d["owner"], int(d.get("priority", 0)), RunSpec.from_dict(d["spec"])


def _trials(store: JobStore, owner: str, group: str, spec: Any) -> list[dict[str, Any]]:
    """Each trial job: id, state, value, title, results (finished ones)."""
    name = search_param(spec)
    out = []
    for v in store.list_group(owner, group):
        value = ((v.spec.get("method") or {}).get("params") or {}).get(name) if name else None
        results = None
        if v.state == JOB_DONE:
            try:
                results = json.loads((Path(store.record(owner, v.id)["run_dir"]) / "results.json").read_text("utf-8"))
            except (OSError, ValueError):
                results = None
        out.append({"id": v.id, "state": v.state, "value": value, "title": v.title, "results": results})
    return out


STOPPED_MARK = "stopped"  # in budgets/<group>/: the user stopped the search; it submits no more trials


def stop_search(settings: Settings, group: str) -> bool:
    """Mark the group's search stopped (before its trials are cancelled, so a trial ending meanwhile does not
    submit the next); False when the group is not a budget search."""
    folder = group_dir(settings, group)
    if not (folder / "search.json").is_file():
        return False
    atomic_write_json(folder / STOPPED_MARK, {"stopped": True})
    return True


def reopen_search(settings: Settings, group: str) -> bool:
    """A trial of a stopped search was resumed: the search goes on (True when it had been stopped)."""
    folder = group_dir(settings, group)
    if not (folder / STOPPED_MARK).is_file():
        return False
    (folder / STOPPED_MARK).unlink(missing_ok=True)
    (folder / "budget.json").unlink(missing_ok=True)  # the stopped answer; advance writes the real one
    return True


def advance(settings: Settings, store: JobStore, group: str) -> str:
    """One step of the group's search: ``"waiting"``, ``"submitted N"``, ``"done"`` or ``"stopped"`` (those
    two write budget.json: the answer, or the best of the trials finished when the user stopped it)."""
    owner, priority, spec = _search(settings, group)
    trials = _trials(store, owner, group, spec)
    if (group_dir(settings, group) / STOPPED_MARK).is_file():
        finished = [(t["id"], t["results"]) for t in trials if t["results"] is not None]
        write_budget(group_dir(settings, group) / "budget.json",
                     budget_document(spec, finished, complete=False, stopped=True))
        return "stopped"
    known = {}
    for t in trials:
        if t["state"] == JOB_DONE:
            known[t["value"]] = outcome(t["results"], spec.budget)
        elif t["state"] in (FAILED, CANCELLED):  # tried; the search goes on without it (resume it to count it)
            known[t["value"]] = Outcome(finished=True)
        else:
            known[t["value"]] = Outcome(finished=False)
    nxt = next_trials(spec.budget, grid(spec), known)
    if nxt == DONE:
        finished = [(t["id"], t["results"]) for t in trials if t["results"] is not None]
        write_budget(group_dir(settings, group) / "budget.json", budget_document(spec, finished, complete=True))
        return "done"
    created = _create(settings, store, owner, [trial_row(settings, spec, group, v, priority) for v in nxt])
    return f"submitted {created}" if nxt else "waiting"


def _create(settings: Settings, store: JobStore, owner: str, rows: list[dict[str, Any]]) -> int:
    """Create and enqueue the trials not created yet (another worker may have done it a moment ago)."""
    n = 0
    for r in rows:
        if _exists(store, owner, r["id"]):
            continue
        write_spec(r["run_dir"], r["spec"])
        try:
            store.create(owner, [r], max_queued=settings.max_queued_per_user)
        except Exception:
            if _exists(store, owner, r["id"]):
                continue  # created by a concurrent advance of the same group
            raise
        task_id = queue.enqueue_run_job(owner, r["id"], 0, priority=r["priority"])
        store.set_task_id(owner, r["id"], task_id)
        n += 1
    return n


def _exists(store: JobStore, owner: str, job_id: str) -> bool:
    try:
        store.record(owner, job_id)
        return True
    except JobNotFound:
        return False


def after_job(settings: Settings, store: JobStore, owner: str, job_id: str) -> None:
    """Called by the worker when a job ends: advance its search if it is a budget trial. Never raises (a
    failure here must not fail the job; ``advance_all`` at the next worker start catches up)."""
    try:
        rec = store.record(owner, job_id)
        group = rec.get("group_id")
        if group and "budget" in rec["spec"] and (group_dir(settings, group) / "search.json").is_file():
            log.info("budget search %s: %s", group, advance(settings, store, group))
    except Exception:  # noqa: BLE001
        log.exception("budget search of job %s: could not advance (retried at the next worker start)", job_id)


jobs.ON_JOB_END.append(lambda *args: after_job(*args))  # looked up at call time (tests replace after_job)


def advance_all(settings: Settings, store: JobStore) -> list[str]:
    """Advance every search without a final ``budget.json`` (worker start); returns their groups."""
    root = budgets_dir(settings)
    groups = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    moved = []
    for group in groups:
        if not (root / group / "search.json").is_file() or (root / group / "budget.json").is_file():
            continue
        try:
            log.info("budget search %s: %s", group, advance(settings, store, group))
            moved.append(group)
        except Exception:  # noqa: BLE001 — one broken search must not stop the others or the worker
            log.exception("budget search %s: could not advance", group)
    return moved


def group_budget(settings: Settings, store: JobStore, owner: str, group: str) -> dict[str, Any] | None:
    """The search's answer so far (None: the group is not a budget search)."""
    if not (group_dir(settings, group) / "search.json").is_file():
        store.list_group(owner, group)  # JobNotFound for another user's or a missing group
        return None
    who, _, spec = _search(settings, group)
    if who != owner:
        raise JobNotFound(f"no group {group!r}")
    trials = _trials(store, owner, group, spec)
    final = group_dir(settings, group) / "budget.json"
    try:
        doc = json.loads(final.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = budget_document(spec, [(t["id"], t["results"]) for t in trials if t["results"] is not None],
                              complete=False)
    rec = doc.get("recommended")
    return {"group": group, "spec": spec.to_dict(), "search": search_param(spec), "document": doc,
            "recommended_spec": recommended_spec(spec.to_dict(), rec) if rec is not None else None,
            "complete": bool(doc.get("complete")) and final.is_file(),
            "stopped": (group_dir(settings, group) / STOPPED_MARK).is_file(),
            "trials": [{k: t[k] for k in ("id", "state", "value", "title")} for t in trials]}
