"""The service API: the only module the web app (and the ``ldifs`` job commands) call.

Every function takes the acting ``user`` first and is owner-scoped: another user's job raises
``JobNotFound`` exactly like a missing one. Errors a user can cause are ``LdifsError`` subclasses with a
message fit to show as is (contracts §4).
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import uuid
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ldifs_engine.errors import InvalidUpload, LdifsError, SpecError
from ldifs_engine.files import atomic_write_bytes, disk_full, is_disk_full

from . import queue
from .events import event_log, format_event
from .jobs import latest_checkpoint, stderr_tail, write_spec
from .ownership import upload_problems
from .settings import Settings, get_settings
from .arguments import PRIORITY_RANGE, check_priority as _priority, check_user as _user  # noqa: F401
from .sharing import hub_token_configured, model_card, push_to_hub, submit_merge
from .status_cache import status_cache
from .store import (
    CANCELLED,
    DONE,
    FAILED,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STATES,
    InvalidState,
    JobNotFound,
    JobStore,
    JobView,
    QuotaExceeded,
    open_store,
)

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "INTERRUPTED",
    "QUEUED",
    "RUNNING",
    "STATES",
    "InvalidState",
    "InvalidUpload",
    "JobNotFound",
    "JobView",
    "LdifsError",
    "QuotaExceeded",
    "SpecError",
    "cancel",
    "cancel_group",
    "catalog_backbones",
    "catalog_datasets",
    "catalog_methods",
    "compare_runs",
    "startup_warnings",
    "export_artifact",
    "get_job",
    "get_per_image",
    "get_results",
    "budget_results",
    "group_results",
    "hub_token_configured",
    "import_dataset",
    "job_summaries",
    "job_events",
    "job_logs",
    "job_metrics",
    "list_jobs",
    "list_user_datasets",
    "model_card",
    "push_to_hub",
    "resume",
    "show_dataset",
    "status_dict",
    "submit",
    "submit_many",
    "submit_merge",
    "update_dataset",
    "validate_spec",
]

EXPORT_KINDS = ("checkpoint", "results", "csv", "yaml")  # the HTML report is drawn by app/charts.py


def _ctx() -> tuple[Settings, JobStore]:
    settings = get_settings()
    return settings, open_store(settings)




def _parse_spec(spec: Any):
    """A validated ``RunSpec`` from a RunSpec, a dict, or YAML / JSON text (raises ``SpecError``)."""
    from ldifs_engine.spec import RunSpec

    if isinstance(spec, RunSpec):
        return RunSpec.from_dict(spec.to_dict())  # re-validate: catalogs may have changed
    if isinstance(spec, str):
        return RunSpec.from_yaml(spec)  # JSON is YAML too
    if isinstance(spec, Mapping):
        return RunSpec.from_dict(spec)
    raise SpecError(f"spec: expected a RunSpec, a mapping or YAML text, got {type(spec).__name__}")




# ---- jobs ------------------------------------------------------------------------------------
def submit(user: str, spec: Any, *, priority: int = 0) -> str:
    """Validate, check the quota, snapshot the spec, create a QUEUED job and enqueue it. Returns the job id.

    A spec with ``seeds: [...]`` becomes one job per seed sharing a ``group`` id (``JobView.group``;
    see ``group_results``); the id returned is the first seed's."""
    return submit_many(user, [spec], priority=priority)[0]


def submit_many(user: str, specs: Iterable[Any], *, priority: int = 0) -> list[str]:
    """Submit several specs at once: all are validated (every problem listed) before any is written."""
    user, priority = _user(user), _priority(priority)
    specs = list(specs)
    if not specs:
        raise SpecError("specs: nothing to submit")
    settings = get_settings()
    parsed, problems = [], []
    for i, s in enumerate(specs):
        try:
            rs = _parse_spec(s)
            parsed.append(rs)
            # Uploads are owner-checked here (and again before the engine starts): a key of another
            # user's upload, or of none, is refused and nothing is queued.
            bad = upload_problems(user, rs.to_dict(), settings.datasets_dir)
        except SpecError as e:
            bad = e.problems
        problems += bad if len(specs) == 1 else [f"specs[{i}].{p}" for p in bad]
    if problems:
        raise SpecError(problems)
    store = open_store(settings)
    rows = []
    for template in parsed:
        if template.budget is not None:  # a forgetting budget → its first trials, in a group (tasks/budget.py)
            from . import budget

            rows += budget.start(settings, user, template, priority)
            continue
        runs = template.expand_seeds()  # ``seeds: [0, 1, 2]`` → one job per seed, sharing a group id
        group = uuid.uuid4().hex if template.seeds else None
        for rs in runs:
            job_id = uuid.uuid4().hex
            d = rs.to_dict()
            target = " → ".join((rs.data.target, *rs.data.sequence))  # a continual sequence shows its order
            rows.append({"id": job_id, "spec": d, "spec_hash": rs.spec_hash(), "priority": priority,
                         "title": rs.name or f"{rs.method.name} on {target}", "method": rs.method.name,
                         "target": target, "run_dir": settings.runs_dir / job_id, "group": group})
    try:
        for r in rows:
            write_spec(r["run_dir"], r["spec"])
        store.create(user, rows, max_queued=settings.max_queued_per_user)
    except BaseException as e:
        for r in rows:
            shutil.rmtree(r["run_dir"], ignore_errors=True)
        _forget_budget_groups(settings, rows)
        if not isinstance(e, LdifsError) and is_disk_full(e):  # run folder or job store: say which, and the space
            where = settings.runs_dir if isinstance(e, OSError) else settings.db_path.parent
            raise disk_full(where, "the new job" if isinstance(e, OSError) else "the job store") from None
        raise
    for r in rows:
        task_id = queue.enqueue_run_job(user, r["id"], 0, priority=priority)
        store.set_task_id(user, r["id"], task_id)
    return [r["id"] for r in rows]


def _forget_budget_groups(settings: Settings, rows: list[dict]) -> None:
    from .budget import group_dir

    for group in {r["group"] for r in rows if r.get("group")}:
        shutil.rmtree(group_dir(settings, group), ignore_errors=True)


def list_jobs(user: str, *, states: Iterable[str] | None = None, limit: int = 200) -> list[JobView]:
    """The user's jobs, newest first."""
    return _ctx()[1].list(_user(user), states=states, limit=limit)


def get_job(user: str, job_id: str) -> JobView:
    return _ctx()[1].get(_user(user), job_id)


def cancel(user: str, job_id: str, mode: str = "stop") -> JobView:
    """Queued → CANCELLED at once. Running → the engine checkpoints at the next step and the job becomes
    CANCELLED (resumable); ``mode="kill"`` ends its process group after ``kill_grace_s``."""
    store = _ctx()[1]
    view, was_waiting = store.request_cancel(_user(user), job_id, mode)
    rec = store.record(user, job_id)
    if was_waiting:
        queue.revoke(rec["task_id"])
        if view.group:  # a budget trial cancelled before it ran: its search goes on without it
            from .budget import after_job

            after_job(get_settings(), store, user, job_id)
    elif view.state == RUNNING:
        # The STOP file reaches the engine even when its worker is on another machine; the worker
        # follows up with one SIGINT (and SIGKILL for mode="kill").
        from .jobs import request_stop

        request_stop(Path(rec["run_dir"]), None, signal_child=False)
    return view


def cancel_group(user: str, job_id: str, mode: str = "stop") -> list[str]:
    """Stop every waiting and running job of ``job_id``'s group (its seeds, or a forgetting-budget search's
    trials: that search is marked stopped first, so no trial ending meanwhile submits another, and its
    answer becomes the best of the trials that finished). Returns the ids it stopped or cancelled."""
    settings, store = _ctx()
    rec = store.record(_user(user), job_id)
    group = rec.get("group_id")
    if not group:
        raise InvalidState("this run is not part of a group (seeds or a forgetting-budget search)")
    from .budget import advance, stop_search

    searching = stop_search(settings, group)
    stopped = []
    for view in store.list_group(user, group):
        if view.state in (QUEUED, INTERRUPTED, RUNNING):
            try:
                cancel(user, view.id, mode)
                stopped.append(view.id)
            except InvalidState:  # it ended between the list and the cancel
                pass
    if searching:
        advance(settings, store, group)  # the stopped answer, also when nothing was left to cancel
    return stopped


def resume(user: str, job_id: str) -> JobView:
    """Re-queue a CANCELLED / INTERRUPTED / FAILED job; it continues from its last complete checkpoint.
    Resuming a trial of a stopped forgetting-budget search lets the search go on."""
    settings, store = _ctx()
    rec = store.record(_user(user), job_id)
    has_ckpt = latest_checkpoint(Path(rec["run_dir"])) is not None
    view = store.requeue(user, job_id, max_queued=settings.max_queued_per_user, has_checkpoint=has_ckpt)
    if view.group:
        from .budget import reopen_search

        reopen_search(settings, view.group)
    task_id = queue.enqueue_run_job(user, job_id, view.attempts, priority=view.priority)
    store.set_task_id(user, job_id, task_id)
    return store.get(user, job_id)


def _run_dir(user: str, job_id: str) -> Path:
    return Path(_ctx()[1].record(_user(user), job_id)["run_dir"])


def job_events(user: str, job_id: str, *, kinds: Iterable[str] | None = None, tail: int | None = None) -> list[dict]:
    """The run's events (contracts §1), optionally only some types and only the last ``tail``."""
    events = event_log(_run_dir(user, job_id)).events()
    if kinds is not None:
        wanted = set(kinds)
        events = [e for e in events if e.get("type") in wanted]
    if tail is not None:
        events = events[-max(0, int(tail)):] if tail else []
    return events


def job_metrics(user: str, job_id: str, *, after_step: int = 0) -> list[dict]:
    """``step`` events with ``step > after_step`` (a UI polls with the last step it has)."""
    return [e for e in job_events(user, job_id, kinds=("step",))
            if isinstance(e.get("step"), (int, float)) and e["step"] > after_step]


def job_logs(user: str, job_id: str, n: int = 40) -> list[str]:
    """The last ``n`` human log lines; for a failed job, the engine's last output lines follow."""
    store = _ctx()[1]
    rec = store.record(_user(user), job_id)
    lines = [line for e in event_log(rec["run_dir"]).events() if (line := format_event(e))]
    if not lines:
        lines = list(rec["log_tail"])
    if rec["state"] == FAILED:
        extra = [ln for ln in stderr_tail(Path(rec["run_dir"]), 20) if ln.strip() and not ln.startswith("=== ")]
        if extra:
            lines += ["--- engine output (last lines) ---", *extra]
    return lines[-max(0, int(n)):] if n else []


def get_results(user: str, job_id: str) -> dict | None:
    """``results.json`` of a finished run (contracts §2), None before it exists."""
    path = _run_dir(user, job_id) / "results.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError:
        raise InvalidState(f"job {job_id}: results.json is unreadable") from None


def get_per_image(user: str, job_id: str) -> dict | None:
    """``per_image.json`` of a finished run (contracts §2a: which test images each head got right),
    None when the run has none (made before intervals existed, or not finished)."""
    from ldifs_engine.intervals import read_per_image  # numpy: only when asked, never for `ldifs jobs`

    return read_per_image(_run_dir(user, job_id))


def compare_runs(user: str, job_a: str, job_b: str) -> dict[str, Any]:
    """Run A's changes minus run B's, with 95 % paired-bootstrap intervals over the test images both
    were scored on (``tasks.differences``, ``ldifs.difference/1``; both runs owner-checked)."""
    from .differences import run_difference

    res = {}
    for jid in (job_a, job_b):
        res[jid] = get_results(user, jid)
        if res[jid] is None:
            raise InvalidState(f"job {jid} has no results yet; compare it once it has finished")
    out = run_difference(res[job_a], get_per_image(user, job_a), res[job_b], get_per_image(user, job_b))
    return {**out, "a": job_a, "b": job_b}


def group_results(user: str, group: str) -> dict[str, Any]:
    """A seed-repeat group: each job (id, seed, state, title, results or None) and, once at least one
    has finished, ``aggregate`` = ``ldifs_engine.stats.aggregate_runs`` of the finished ones (mean ± sd)."""
    from ldifs_engine.stats import aggregate_runs

    views = _ctx()[1].list_group(_user(user), group)
    jobs = []
    for v in views:
        results = get_results(user, v.id) if v.state == DONE else None
        jobs.append({"id": v.id, "seed": v.spec.get("seed"), "state": v.state, "title": v.title, "results": results})
    finished = [j["results"] for j in jobs if j["results"] is not None]
    return {"group": group, "jobs": jobs, "n_done": len(finished), "n_total": len(jobs),
            "aggregate": aggregate_runs(finished) if finished else None}


def budget_results(user: str, group: str) -> dict[str, Any] | None:
    """A forgetting-budget search (a group made from a spec with ``budget:``): ``{"group", "spec" (the search
    spec), "search" (the parameter searched), "document" (budget.json so far: recommendation, candidates each
    with its "setting" in words, sentence), "recommended_spec" (a plain run spec of the recommendation: what
    "Use this setting" fills in), "complete", "trials": [{"id", "state", "value", "title"}]}``; None for a
    group that is not one."""
    from .budget import group_budget

    settings, store = _ctx()
    return group_budget(settings, store, _user(user), group)


def status_dict(user: str, job_id: str) -> dict[str, Any]:
    """What ``ldifs status --json`` prints: the job without its spec, plus its spec hash.

    Served from a short-lived cache that is read again as soon as the store changes (pollers ask often)."""
    return dict(status_cache().status(_user(user), job_id))


def job_summaries(user: str, *, states: Iterable[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
    """What ``ldifs jobs --json`` prints: the user's jobs without their specs, newest first (cached like
    ``status_dict``; the dicts are shared, so copy one before changing it)."""
    return list(status_cache().jobs(_user(user), states=states, limit=limit))


def export_artifact(user: str, job_id: str, kind: str) -> Path:
    """A copy of one artifact in the user's export folder (never a path into the run directory)."""
    settings, store = _ctx()
    view = store.get(_user(user), job_id)
    if kind not in EXPORT_KINDS:
        raise SpecError(f"kind: {kind!r} is not allowed; choose one of: {', '.join(EXPORT_KINDS)}")
    run_dir = Path(store.record(user, job_id)["run_dir"])
    out_dir = settings.exports_dir / hashlib.sha256(user.encode()).hexdigest()[:24] / job_id
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"ldifs-{view.method}-{job_id[:8]}"
    if kind == "yaml":
        import yaml

        text = (f"# LDIFS Studio run {job_id} ({view.title})\n# re-run with: ldifs submit {stem}.yaml\n"
                + yaml.safe_dump(view.spec, sort_keys=False))
        return atomic_write_bytes(out_dir / f"{stem}.yaml", text.encode())
    results = get_results(user, job_id)
    if results is None:
        raise InvalidState(f"job {job_id} has no results yet (it is {view.state.lower()})")
    if kind == "results":
        return atomic_write_bytes(out_dir / f"{stem}-results.json", json.dumps(results, indent=2).encode())
    if kind == "csv":
        return atomic_write_bytes(out_dir / f"{stem}-metrics.csv", _results_csv(results).encode())
    final = run_dir / "final"
    files = [p for p in (final / "model.safetensors", final / "adapter.safetensors", final / "head.safetensors",
                         run_dir / "spec.json", run_dir / "results.json") if p.is_file()]
    if not (final / "model.safetensors").is_file() and not (final / "adapter.safetensors").is_file():
        raise InvalidState(f"job {job_id} has no final checkpoint")
    target = out_dir / f"{stem}-checkpoint.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as z:  # safetensors do not compress
        for p in files:
            z.write(p, arcname=p.name)
    tmp.replace(target)
    return target


CSV_FIELDS = ["dataset", "role", "metric", "before", "after", "delta", "before_ci_lo", "before_ci_hi",
              "after_ci_lo", "after_ci_hi", "delta_ci_lo", "delta_ci_hi", "n_test", "note"]


def _results_rows(results: dict) -> list[dict[str, Any]]:
    """One row per dataset and metric, with the 95 % intervals where the results carry them."""
    def ci(pair: Any, i: int) -> float | None:
        return pair[i] if isinstance(pair, (list, tuple)) and len(pair) == 2 else None

    rows = []
    for key, d in (results.get("datasets") or {}).items():
        before, after = d.get("before") or {}, d.get("after") or {}
        for metric in ("zs_acc", "zs_ece", "lp_acc", "lp_ece"):
            b, a = before.get(metric), after.get(metric)
            dci = d.get({"zs_acc": "delta_zs_ci", "lp_acc": "delta_lp_ci"}.get(metric, ""))
            rows.append({"dataset": key, "role": d.get("role", ""), "metric": metric, "before": b, "after": a,
                         "delta": (a - b) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None,
                         "before_ci_lo": ci(before.get(f"{metric}_ci"), 0), "before_ci_hi": ci(before.get(f"{metric}_ci"), 1),
                         "after_ci_lo": ci(after.get(f"{metric}_ci"), 0), "after_ci_hi": ci(after.get(f"{metric}_ci"), 1),
                         "delta_ci_lo": ci(dci, 0), "delta_ci_hi": ci(dci, 1), "n_test": d.get("n_test"),
                         "note": (d.get("zs_note") or "") if metric.startswith("zs_") else ""})
    return rows


def _results_csv(results: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS)
    w.writeheader()
    for row in _results_rows(results):
        # A leading = + - @ would make a spreadsheet evaluate a cell; dataset keys are catalog keys, but be safe.
        w.writerow({k: ("'" + v if isinstance(v, str) and v[:1] and v[:1] in "=+-@" else v) for k, v in row.items()})
    return buf.getvalue()


# ---- catalogs --------------------------------------------------------------------------------
def catalog_backbones() -> list[dict]:
    """Registered backbones (metadata only)."""
    from ldifs_engine.backbones import BACKBONES

    return [info.meta() for _, info in BACKBONES.items()]


def startup_warnings() -> list[str]:
    """One line per setup problem an operator should see (torch-free): a GPU that torch cannot use, bad
    entries in the operator's backbones file (LDIFS_BACKBONES)."""
    from ldifs_engine.backbone_file import check_shapes_in_child, from_env
    from ldifs_engine.hardware import gpu_warning

    gpu = gpu_warning()
    return ([gpu] if gpu else []) + from_env()[1] + check_shapes_in_child()  # shapes: in a child, torch-free here


def catalog_methods() -> list[dict]:
    """Registered fine-tuning methods with their parameters' help and bounds."""
    from ldifs_engine.methods import METHODS

    return [_jsonable(cls.meta()) for _, cls in METHODS.items()]


def catalog_datasets(user: str) -> list[dict]:
    """Built-in datasets plus the user's own uploads."""
    from ldifs_engine.data import DATASETS

    out = [info.meta() for _, info in DATASETS.items() if getattr(info, "source", "") != "upload"]
    try:
        out += list(list_user_datasets(_user(user)))
    except _UploadsMissing:
        pass
    return out


def validate_spec(spec_dict: Mapping[str, Any]) -> list[str]:
    """Every problem with a spec dict as ``"field: message"`` (empty = valid)."""
    from ldifs_engine.spec import validate

    return validate(spec_dict)


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


# ---- datasets (owned by tasks.uploads; imported on first use so `import tasks.api` stays light) ------
class _UploadsMissing(InvalidUpload):
    pass


def _uploads() -> Any:
    try:
        from . import uploads
    except ModuleNotFoundError as e:  # only a missing tasks.uploads; a broken one must fail loudly
        if e.name != f"{__package__}.uploads":
            raise
        raise _UploadsMissing("dataset uploads are not available in this installation") from None
    return uploads


def import_dataset(user: str, zip_path: Any, name: str | None = None, **kwargs: Any) -> dict:
    """Ingest a zip of class folders as the user's dataset; returns the ingestion report."""
    return _uploads().import_dataset(_user(user), zip_path, name, **kwargs)


def list_user_datasets(user: str, **kwargs: Any) -> list[dict]:
    """The user's uploaded datasets."""
    return _uploads().list_user_datasets(_user(user), **kwargs)


def show_dataset(user: str, key: str, **kwargs: Any) -> dict:
    """One dataset (the user's own or a catalog one) with its class names, templates and preview."""
    return _uploads().show_dataset(_user(user), key, **kwargs)


def update_dataset(user: str, key: str, classnames: list[str] | None = None, templates: list[str] | None = None,
                   **kwargs: Any) -> dict:
    """Rename classes or change prompt templates of the user's dataset."""
    return _uploads().update_dataset(_user(user), key, classnames=classnames, templates=templates, **kwargs)
