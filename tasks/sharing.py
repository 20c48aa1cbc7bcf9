"""Merge and push jobs, and the model-card download: the service side of issue #16's sharing part.

A user names jobs by id only; this module checks that each is theirs and finished, then writes the
engine's job document itself. A merge job's ``spec.json`` is ``{"merge": {"runs": ["../<job id>", …],
…}}`` (run folders relative to the merge's own folder, resolved by the engine: the runs folder may be
mounted elsewhere on another worker); a push job's is ``{"push": {"run": "../<job id>", "repo", …}}``.
The store keeps what the user chose (job ids, settings), never a path. A push spends network, not a
GPU: its worker takes no GPU slot. The Hub token is the worker's ``HF_TOKEN`` (or the token
``hf auth login`` stored); it never leaves the worker's environment.
"""
from __future__ import annotations

import shutil
import uuid
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ldifs_engine.errors import SpecError

from . import queue
from .arguments import check_priority, check_user
from .jobs import write_spec
from .settings import get_settings
from .store import DONE, InvalidState, JobStore, open_store

MIN_MERGE, MAX_MERGE = 2, 8


def _finished(store: JobStore, user: str, job_id: Any) -> tuple[Any, Path]:
    """(view, run folder) of one of ``user``'s finished runs (``JobNotFound`` for anyone else's)."""
    if not isinstance(job_id, str) or not job_id or len(job_id) > 64:
        raise SpecError("jobs: expected job ids")
    view = store.get(user, job_id)
    run_dir = Path(store.record(user, job_id)["run_dir"])
    if view.state != DONE or not (run_dir / "results.json").is_file():
        raise InvalidState(f"run {view.title!r} ({job_id[:8]}) has not finished; only finished runs can be used")
    if view.method == "push":
        raise InvalidState(f"job {job_id[:8]} is an upload, not a run")
    return view, run_dir


def submit_merge(user: str, job_ids: Sequence[str], *, method: str = "task_arithmetic",
                 lambdas: Sequence[float] | str | None = None, ties_keep: float | None = None,
                 name: str | None = None, priority: int = 0) -> str:
    """Queue a merge of the user's finished runs (same backbone, single-task); returns the merge's job id."""
    from ldifs_engine.merge import DEFAULT_LAMBDAS, DEFAULT_TIES_KEEP, MergeSpec

    settings = get_settings()
    store = open_store(settings)
    ids = list(dict.fromkeys(job_ids or []))
    if not MIN_MERGE <= len(ids) <= MAX_MERGE:
        raise SpecError(f"jobs: pick {MIN_MERGE} to {MAX_MERGE} different finished runs to merge, got {len(ids)}")
    runs = [_finished(store, user, i) for i in ids]
    first = runs[0][0]
    for view, _ in runs:
        if view.method == "merge" or view.spec.get("data", {}).get("sequence"):
            raise InvalidState(f"run {view.title!r} ({view.id[:8]}) is a merge or a continual sequence; "
                               "merge single-task runs")
        if view.spec.get("backbone") != first.spec.get("backbone"):
            raise InvalidState(f"run {view.title!r} ({view.id[:8]}) is on backbone {view.spec.get('backbone')!r}, "
                               f"not {first.spec.get('backbone')!r}; only runs on the same backbone can be merged")
    labels = [f"{v.title} · {v.id[:8]}" for v, _ in runs]
    mspec = MergeSpec.from_dict({"runs": [f"../{v.id}" for v, _ in runs], "labels": labels, "method": method,
                                 "lambdas": DEFAULT_LAMBDAS if lambdas in (None, "") else lambdas,
                                 "ties_keep": DEFAULT_TIES_KEEP if ties_keep is None else ties_keep,
                                 "name": name or ""})
    targets = " + ".join(v.target for v, _ in runs)
    title = name or f"merge ({method.replace('_', ' ')}) of {targets}"
    settings_doc = {k: v for k, v in mspec.to_dict().items() if k not in ("runs", "labels")}
    stored = {"kind": "merge", "name": title, "backbone": first.spec.get("backbone"),
              "merge": {**settings_doc, "jobs": ids, "labels": labels}}
    return _create(store, user, stored, {"merge": mspec.to_dict()}, title, "merge", targets, priority)


def _create(store: JobStore, user: str, stored: dict, engine_doc: dict, title: str, method: str, target: str,
            priority: int) -> str:
    import hashlib
    import json

    user, priority = check_user(user), check_priority(priority)
    settings = get_settings()
    job_id = uuid.uuid4().hex
    run_dir = settings.runs_dir / job_id
    row = {"id": job_id, "spec": stored, "priority": priority, "title": title[:200], "method": method,
           "target": target[:200], "run_dir": run_dir, "group": None,
           "spec_hash": hashlib.sha256(json.dumps(stored, sort_keys=True).encode()).hexdigest()}
    try:
        write_spec(run_dir, engine_doc)
        store.create(user, [row], max_queued=settings.max_queued_per_user)
    except BaseException:
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    task_id = queue.enqueue_run_job(user, job_id, 0, priority=priority)
    store.set_task_id(user, job_id, task_id)
    return job_id


def hub_token_configured() -> bool:
    """Whether the worker has a Hugging Face token (``HF_TOKEN``, or one ``hf auth login`` stored)."""
    from ldifs_engine.hub import resolve_token

    return bool(resolve_token())


def push_to_hub(user: str, job_id: str, repo_id: str, *, headline: str | None = None, private: bool = True,
                priority: int = 0) -> str:
    """Queue an upload of one finished run (its card folder) to ``repo_id``; returns the push's job id.
    Without a token it is refused at once, with one line naming ``ldifs card`` (and the Model card download)."""
    from ldifs_engine.card import check_repo_id
    from ldifs_engine.hub import CARD_HINT

    check_repo_id(repo_id)
    if not hub_token_configured():
        raise InvalidState(f"push: no Hugging Face token is configured on the server (HF_TOKEN); download the "
                           f"model card folder instead, or on the command line {CARD_HINT}")
    store = open_store(get_settings())
    view, _ = _finished(store, user, job_id)
    if headline is not None and (not isinstance(headline, str) or len(headline) > 4000):
        raise SpecError("headline: expected text of at most 4000 characters")
    stored = {"kind": "push", "name": f"push to {repo_id}", "push": {"job": view.id, "repo": repo_id,
                                                                    "private": bool(private)}}
    doc = {"push": {"run": f"../{view.id}", "repo": repo_id, "private": bool(private), "headline": headline}}
    return _create(store, user, stored, doc, f"push {view.title} to {repo_id}", "push", repo_id, priority)


def model_card(user: str, job_id: str, *, headline: str | None = None) -> Path:
    """The card folder of one finished run (or merge), zipped, in the user's export folder."""
    import hashlib

    from ldifs_engine.card import write_card

    settings = get_settings()
    store = open_store(settings)
    view, run_dir = _finished(store, user, job_id)
    out_dir = settings.exports_dir / hashlib.sha256(user.encode()).hexdigest()[:24] / job_id
    folder = out_dir / "model-card"
    shutil.rmtree(folder, ignore_errors=True)
    write_card(run_dir, folder, headline=headline, name=view.title)
    target = out_dir / f"ldifs-{view.method}-{job_id[:8]}-model-card.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # safetensors do not compress
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, arcname=str(p.relative_to(folder)))
    tmp.replace(target)
    shutil.rmtree(folder, ignore_errors=True)
    return target
