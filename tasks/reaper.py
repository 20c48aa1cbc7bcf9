"""Recovery of jobs whose worker died (huey has no acknowledgements: a SIGKILLed worker's task is lost).

``reap_once`` looks at every RUNNING job. A live worker on this host watches its own engine (stalls
included), so the reaper leaves those alone. A job whose worker process on this host is gone, or whose
heartbeat is stale on another host, is recovered: an engine still running as an orphan is asked to
checkpoint and stop, its last events are read into the store, and the job ends DONE / FAILED /
CANCELLED if the engine got that far, else INTERRUPTED and re-queued to resume from its last complete
checkpoint (up to ``max_attempts`` crashes, then FAILED).

``recover_queue`` re-enqueues QUEUED / INTERRUPTED jobs whose queue message was lost.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from . import jobs, leases, queue, servers
from .events import Progress, read_new
from .settings import Settings, get_settings
from .store import CANCELLED, DONE, FAILED, JobStore, open_store

log = logging.getLogger("ldifs.reaper")


def pid_alive(pid: int | None, *, must_contain: str | None = None) -> bool:
    """True if ``pid`` runs (not a zombie) and, when given, its command line contains ``must_contain``."""
    if not pid or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return must_contain is None  # someone else's process: never ours to signal
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                return False
            if must_contain is not None:
                return must_contain in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, IndexError):
            return False
    return True


def reap_once(settings: Settings | None = None, store: JobStore | None = None) -> list[str]:
    """One pass over RUNNING jobs; returns the ids it recovered."""
    settings = settings or get_settings()
    store = store or open_store(settings)
    now = time.time()
    records = store.running_all()
    mine = jobs.active_ids()  # after the query: a worker marks a job active before it claims it
    recovered = []
    for rec in records:
        if rec["id"] in mine:
            continue
        same_host = rec["host"] == leases.HOST
        if same_host:
            if rec["worker_pid"] != os.getpid() and _worker_alive(rec):
                continue  # a live worker watches its own engine
        elif rec["heartbeat_at"] is not None and now - rec["heartbeat_at"] <= settings.heartbeat_stale_s:
            continue
        elif _engine_still_running(settings, rec):
            # Its worker went quiet but its engine (on the other machine) still writes events: resuming now
            # would run two engines at once. Ask it, through the shared volume, to checkpoint and exit;
            # a later pass recovers the job once the engine has stopped or gone silent.
            if not (Path(rec["run_dir"]) / "STOP").exists():
                log.warning("job %s: its worker on %s is silent but its engine still runs; asking it to stop at "
                            "a checkpoint", rec["id"], rec["host"])
                jobs.request_stop(Path(rec["run_dir"]), None, signal_child=False)
            continue
        try:
            _recover(settings, store, rec, same_host)
            recovered.append(rec["id"])
        except Exception:
            log.exception("could not recover job %s", rec["id"])
    return recovered


def _engine_still_running(settings: Settings, rec: dict[str, Any]) -> bool:
    """An engine of another host is alive if its events file (on the shared volume) changed within the stale
    window, unless its last attempt already wrote a final event (stopped, error, done) and has been quiet
    for a moment since (the process is gone, not still writing its last lines)."""
    events_path = Path(rec["run_dir"]) / "events.jsonl"
    try:
        age = time.time() - events_path.stat().st_mtime
    except OSError:
        return False
    if age > settings.heartbeat_stale_s:
        return False  # silent: dead with its machine, or hung
    events, _ = read_new(events_path, rec["events_offset"] or 0, final=True)
    progress = Progress.from_record(rec, settings.log_tail_lines)
    progress.apply(events)
    finished = progress.stopped or progress.error or progress.done
    return not (finished and age > min(1.0, settings.heartbeat_stale_s / 2))


def _worker_alive(rec: dict[str, Any]) -> bool:
    if not pid_alive(rec["worker_pid"]):
        return False
    started = leases.process_start(rec["worker_pid"])
    return rec["worker_start"] is None or started is None or started == rec["worker_start"]


def _recover(settings: Settings, store: JobStore, rec: dict[str, Any], same_host: bool) -> None:
    run_dir = Path(rec["run_dir"])
    owner, job_id, attempt = rec["owner"], rec["id"], rec["attempts"]
    if same_host and pid_alive(rec["pid"], must_contain=str(run_dir)):
        log.warning("job %s: its worker is gone but the engine (pid %s) still runs; stopping it", job_id, rec["pid"])
        _stop_orphan(settings, run_dir, rec["pid"], rec["pgid"] or rec["pid"])
    events, offset = read_new(run_dir / "events.jsonl", rec["events_offset"] or 0, final=True)
    progress = Progress.from_record(rec, settings.log_tail_lines)
    progress.apply(events)
    fields = {**progress.fields(), "events_offset": offset}
    ckpt = jobs.latest_checkpoint(run_dir)
    if ckpt is not None:
        fields["checkpoint_step"] = ckpt[0]
    with contextlib.suppress(FileNotFoundError):
        (run_dir / "STOP").unlink()
    if progress.done and (run_dir / "results.json").is_file():
        store.finish(owner, job_id, attempt, DONE, message=jobs.done_message(run_dir),
                     result_path=str(run_dir / "results.json"), **fields)
        return
    if progress.error is not None:
        store.finish(owner, job_id, attempt, FAILED, message=jobs.failure_message(1, progress, run_dir / "engine.log"),
                     **fields)
        return
    if rec["cancel_mode"]:
        store.finish(owner, job_id, attempt, CANCELLED, message="Stopped on request while its worker was down.",
                     **fields)
        return
    where = f"step {progress.step}" if progress.step is not None else "start-up"
    kept = f"resuming from the checkpoint at step {ckpt[0]}" if ckpt else "starting over (no checkpoint yet)"
    host = f" on {rec['host']}" if rec["host"] and rec["host"] != leases.HOST else ""
    msg = f"Its worker (pid {rec['worker_pid']}{host}) stopped at {where}; {kept}."
    outcome = store.interrupt(owner, job_id, attempt, message=msg, crashed=True,
                              max_attempts=settings.max_attempts, **fields)
    log.warning("job %s: %s → %s", job_id, msg, outcome)
    if outcome == "requeue":
        task_id = queue.enqueue_run_job(owner, job_id, attempt, priority=rec["priority"])
        store.set_task_id(owner, job_id, task_id)


def _stop_orphan(settings: Settings, run_dir: Path, pid: int, pgid: int) -> None:
    """SIGINT (checkpoint and exit), then SIGKILL after ``stop_timeout_s``; waits until it is gone."""
    jobs.request_stop(run_dir, pgid)
    deadline = time.monotonic() + settings.stop_timeout_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)


def recover_queue(settings: Settings | None = None, store: JobStore | None = None,
                  suspects: dict[str, tuple] | None = None, grace_s: float = 0.0) -> list[str]:
    """Re-enqueue waiting jobs that have no message in the queue (a duplicate would be a no-op anyway).

    ``suspects`` (the periodic reaper's memory between passes): re-enqueue only a job found without a
    message, unchanged, for ``grace_s`` or more, so one whose message is just being submitted or is in a
    worker's hands on its way to the claim is left alone.
    """
    settings = settings or get_settings()
    store = store or open_store(settings)
    waiting = queue.queued_task_ids()
    now = time.monotonic()
    out = []
    missing: dict[str, tuple] = {}
    for rec in store.pending_all():
        if rec["task_id"] in waiting:
            continue
        key = (rec["task_id"], rec["attempts"], rec["state"])
        if suspects is not None:
            seen = suspects.get(rec["id"])
            since = seen[1] if seen is not None and seen[0] == key else now
            if now - since < grace_s or seen is None or seen[0] != key:
                missing[rec["id"]] = (key, since)
                continue
        task_id = queue.enqueue_run_job(rec["owner"], rec["id"], rec["attempts"], priority=rec["priority"])
        store.set_task_id(rec["owner"], rec["id"], task_id)
        out.append(rec["id"])
    if suspects is not None:
        suspects.clear()
        suspects.update(missing)
    if out:
        log.warning("re-enqueued %d waiting job(s) whose queue message was missing", len(out))
    return out


class Reaper:
    """Runs ``reap_once`` every ``settings.reaper_interval_s`` in a daemon thread."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or get_settings()
        self._stop = threading.Event()
        self._suspects: dict[str, tuple] = {}  # waiting jobs seen without a queue message: (state key, since)
        self._thread = threading.Thread(target=self._loop, name="ldifs-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reaper_interval_s):
            try:
                reap_once(self.settings)
                servers.STORE.ok()
                if self.settings.queue_url:  # Redis: a message lost in an outage (or a failed enqueue) comes back
                    recover_queue(self.settings, suspects=self._suspects,
                                  grace_s=max(2 * self.settings.reaper_interval_s, 5.0))
                    servers.QUEUE.ok()
            except Exception as e:
                message = servers.outage(e, self.settings)
                if message is None:
                    log.exception("reaper pass failed")
                else:
                    servers.backoff_for(e).failed(message)
