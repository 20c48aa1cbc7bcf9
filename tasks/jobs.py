"""``run_job``: the huey task that runs one attempt of a job in an engine child process.

The worker never touches CUDA. It leases a GPU slot, moves the job QUEUED/INTERRUPTED → RUNNING
(compare-and-set: a duplicate or stale message does nothing), starts
``python -m ldifs_engine run --spec … --workdir … [--resume]`` in its own process group with
``CUDA_VISIBLE_DEVICES`` set, follows ``events.jsonl`` into the store, and maps the exit code
(contracts §1) to the job's next state. Stopping is cooperative: a ``STOP`` file plus one SIGINT
(the engine checkpoints and exits 3); SIGKILL of the group only after a grace period.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ldifs_engine import files
from ldifs_engine.errors import Cancelled, exit_meanings
from ldifs_engine.files import atomic_write_json

from . import leases, servers
from .events import Progress, read_new
from .ownership import upload_problems
from .settings import Settings, get_settings
from .store import CANCELLED, DONE, FAILED, PENDING, JobNotFound, JobStore, StoreUnavailable, open_store

log = logging.getLogger("ldifs.worker")

EXIT_MEANING = exit_meanings()  # the engine's exit status → what it means (from its error classes)
STOPPED = Cancelled.exit_code  # the engine checkpointed and exited on request

# Set while this process's consumer shuts down: running attempts checkpoint and are re-queued.
SHUTDOWN = threading.Event()
_SHUTDOWN_FAST = threading.Event()
_ACTIVE: set[str] = set()
_ACTIVE_LOCK = threading.Lock()


def begin_shutdown(*, fast: bool = False) -> None:
    """Ask every running attempt in this process to checkpoint and stop (fast: SIGKILL after kill_grace_s)."""
    if fast:
        _SHUTDOWN_FAST.set()
    SHUTDOWN.set()


def reset_shutdown() -> None:
    SHUTDOWN.clear()
    _SHUTDOWN_FAST.clear()


def active_ids() -> set[str]:
    """Jobs supervised by a thread of this process right now."""
    with _ACTIVE_LOCK:
        return set(_ACTIVE)


@contextlib.contextmanager
def _supervising(job_id: str) -> Iterator[None]:
    with _ACTIVE_LOCK:
        _ACTIVE.add(job_id)
    try:
        yield
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE.discard(job_id)


# Called as ``hook(settings, store, owner, job_id)`` after a job ended (done, failed or cancelled) and its
# lease was released; must not raise. tasks.budget adds the one that drives forgetting-budget searches.
ON_JOB_END: list[Callable[..., None]] = []


# ---- run directory helpers --------------------------------------------------------------------
def write_spec(run_dir: Path, spec: dict[str, Any]) -> Path:
    """Create ``run_dir`` (owner-only) and write ``spec.json`` atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o700)
    return atomic_write_json(run_dir / "spec.json", spec)


def latest_checkpoint(run_dir: Path) -> tuple[int, Path] | None:
    """(step, directory) of the run's newest complete checkpoint, or None (torch-free)."""
    found = files.latest_run_checkpoint(run_dir)
    return (files.checkpoint_step(found), found) if found is not None else None


def request_stop(run_dir: Path, pgid: int | None, *, signal_child: bool = True) -> None:
    """Write ``STOP`` and send one SIGINT to the engine's group (a second SIGINT would abort it)."""
    with contextlib.suppress(OSError):
        (run_dir / "STOP").touch()
    if signal_child and pgid:
        _killpg(pgid, signal.SIGINT)


def lower_priority(pid: int, nice: int) -> None:
    """Make a fresh engine process ``nice`` steps nicer than this worker (capped at 19). Called right after
    it starts: its compute threads, created later when torch loads, inherit the priority."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):  # gone already, or a platform that refuses: run at normal priority
        os.setpriority(os.PRIO_PROCESS, pid, min(19, os.getpriority(os.PRIO_PROCESS, 0) + nice))


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def done_message(run_dir: Path) -> str:
    """A one-line summary of ``results.json`` for the job list."""
    try:
        res = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
        s = res.get("summary") or {}
        parts = []
        if isinstance(s.get("target_gain"), (int, float)):
            parts.append(f"target {s['target_gain'] * 100:+.1f} pts")
        if isinstance(s.get("mean_delta_zs_controls"), (int, float)):
            parts.append(f"controls zero-shot {s['mean_delta_zs_controls'] * 100:+.1f} pts")
        return "Done" + (": " + ", ".join(parts) if parts else ".")
    except (OSError, ValueError, AttributeError):
        return "Done."


def push_message(run_dir: Path) -> str:
    """'Pushed to <url>.' for a finished upload to the Hub."""
    try:
        d = json.loads((run_dir / "push.json").read_text(encoding="utf-8"))
        return f"Pushed to {d['repo']} ({'private' if d.get('private') else 'public'}): {str(d.get('url'))[:200]}"
    except (OSError, ValueError, KeyError, TypeError):
        return "Pushed."


def failure_message(code: int, progress: Progress, log_path: Path) -> str:
    """The engine's own one-line error if it wrote one, else the exit code's meaning and stderr's last line."""
    if progress.error and progress.error.get("message"):
        kind = progress.error.get("kind")
        return f"{progress.error['message']}" + (f" ({kind})" if kind and kind not in ("SpecError",) else "")
    meaning = EXIT_MEANING.get(code, f"the engine exited with code {code}")
    last = _last_line(log_path)
    return f"{meaning[0].upper()}{meaning[1:]}" + (f": {last}" if last else ".")


def _last_line(path: Path, limit: int = 8192) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            lines = [ln.strip() for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    lines = [ln for ln in lines if not ln.startswith("=== ")]
    return lines[-1][:300] if lines else ""


def stderr_tail(run_dir: Path, n: int = 20) -> list[str]:
    """The last lines the engine wrote to stdout/stderr (tracebacks of crashes land here)."""
    try:
        with open(run_dir / "engine.log", "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            return f.read().decode("utf-8", "replace").splitlines()[-n:]
    except OSError:
        return []


def signal_name(signum: int) -> str:
    """``SIGKILL`` for 9; ``signal 77`` for a number this platform does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ---- the task ---------------------------------------------------------------------------------
Requeue = Callable[..., str]  # (owner, job_id, attempt, *, priority, delay) → the queue's task id


def run_job(owner: str, job_id: str, attempt: int, *, requeue: Requeue) -> str:
    """Run attempt ``attempt + 1`` of a job; returns what happened (for logs and tests).

    Idempotent on (job, attempt): only the caller whose compare-and-set moves the job to RUNNING
    starts an engine; every other call returns ``"skipped"``. A job that has to run again (deferred,
    interrupted) is handed to ``requeue`` — the queue passes its own enqueue, so this module does not
    need to know the queue.
    """
    settings = get_settings()
    # An unreachable job store holds this message (one log line per retry) instead of dropping it.
    store = servers.retrying(lambda: open_store(settings), settings, SHUTDOWN)
    if store is None:
        return "deferred"  # shutting down; the job is still waiting in the store and is re-enqueued later
    return _Attempt(settings, store, owner, job_id, attempt, requeue).execute()


class _Attempt:
    def __init__(self, settings: Settings, store: JobStore, owner: str, job_id: str, attempt: int,
                 requeue: Requeue):
        self.settings, self.store, self.owner, self.job_id, self.attempt = settings, store, owner, job_id, attempt
        self.requeue = requeue
        self.run = attempt + 1  # the attempts value once claimed

    def execute(self) -> str:
        try:
            rec = servers.retrying(lambda: self.store.record(self.owner, self.job_id), self.settings, SHUTDOWN)
            if rec is None:
                return "deferred"
        except JobNotFound:
            log.warning("job %s no longer exists; dropping its message", self.job_id)
            return "skipped"
        if rec["state"] not in PENDING or rec["attempts"] != self.attempt or rec["cancel_mode"]:
            return "skipped"
        if SHUTDOWN.is_set():
            self._requeue(rec["priority"])
            return "deferred"
        # an upload to the Hub spends network, not a GPU: it takes no GPU slot
        lease = (leases.Lease("network", None, -1) if rec.get("method") == "push"
                 else leases.acquire(self.settings, SHUTDOWN))
        if lease is None:  # shutting down while waiting for a GPU
            self._requeue(rec["priority"])
            return "deferred"
        follow_up = None
        try:
            with _supervising(self.job_id):  # before the claim, so the reaper never sees it unwatched
                claimed = self.store.claim(self.owner, self.job_id, self.attempt,
                                           max_running=self.settings.max_running_per_user,
                                           host=leases.HOST, worker_pid=os.getpid(),
                                           worker_start=leases.process_start(os.getpid()))
                if claimed == "quota":
                    follow_up = ("delay", rec["priority"])
                    outcome = "deferred"
                elif claimed == "lost":
                    outcome = "skipped"
                else:
                    outcome = self._supervise(Path(rec["run_dir"]), lease.gpu)
                    if outcome == "requeue":
                        follow_up = ("now", rec["priority"])
        finally:
            lease.release()
        # Re-enqueue only after the lease is released: in immediate mode the next attempt runs inline.
        if follow_up is not None:
            self._requeue(follow_up[1], attempt=self.run if follow_up[0] == "now" else self.attempt,
                          delay=max(1.0, 10 * self.settings.poll_s) if follow_up[0] == "delay" else None)
        if outcome in ("done", "failed", "cancelled"):
            for hook in ON_JOB_END:
                hook(self.settings, self.store, self.owner, self.job_id)
        return outcome

    def _requeue(self, priority: int, attempt: int | None = None, delay: float | None = None) -> None:
        try:
            task_id = self.requeue(self.owner, self.job_id, self.attempt if attempt is None else attempt,
                                   priority=priority, delay=delay)
            self.store.set_task_id(self.owner, self.job_id, task_id)
        except Exception as e:
            message = servers.outage(e, self.settings)
            if message is None:
                raise
            # The job waits in the store; a worker's reaper re-enqueues it once the queue is back.
            log.warning("job %s: not re-queued now (%s)", self.job_id, message)

    # ---- one engine process ------------------------------------------------------------------
    def _supervise(self, run_dir: Path, gpu: str | None) -> str:
        proc = None
        try:
            spec_path = run_dir / "spec.json"
            if not spec_path.is_file():
                self._finish(FAILED, "The run's spec snapshot (spec.json) is missing; submit the spec again.", None)
                return "failed"
            bad = upload_problems(self.owner, self.store.record(self.owner, self.job_id)["spec"],
                                  self.settings.datasets_dir)
            if bad:  # checked at submit too; the upload may have been deleted (or the spec edited) since
                self._finish(FAILED, "Refused to start: " + "; ".join(bad), None)
                return "failed"
            with contextlib.suppress(FileNotFoundError):
                (run_dir / "STOP").unlink()
            resume = latest_checkpoint(run_dir) is not None
            argv = [*self.settings.engine_argv, "run", "--spec", str(spec_path), "--workdir", str(run_dir)]
            if resume:
                argv.append("--resume")
            events_path = run_dir / "events.jsonl"
            offset = events_path.stat().st_size if events_path.exists() else 0
            with open(run_dir / "engine.log", "ab") as out:
                out.write(f"=== attempt {self.run} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                          f"{' '.join(argv)}\n".encode())
                out.flush()
                proc = subprocess.Popen(argv, env=self._env(gpu), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
            lower_priority(proc.pid, self.settings.engine_nice)
            self.store.set_child(self.owner, self.job_id, self.run, pid=proc.pid, pgid=proc.pid, events_offset=offset)
            log.info("job %s attempt %d: engine pid %d%s", self.job_id, self.run, proc.pid, " (resume)" if resume else "")
            return self._follow(proc, run_dir, events_path, offset)
        except BaseException as e:
            if proc is not None and proc.poll() is None:
                _killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.exception("job %s: worker error", self.job_id)
            if files.is_disk_full(e):  # the worker's own writes (engine.log, events offset) hit a full disk
                self._finish(FAILED, str(files.disk_full(run_dir, "the run's log")), None)
            else:
                self._finish(FAILED, f"Internal error in the worker: {type(e).__name__}: {e}", None)
            if not isinstance(e, Exception):
                raise
            return "failed"

    def _env(self, gpu: str | None) -> dict[str, str]:
        env = dict(os.environ)
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        env["LDIFS_HOME"] = str(self.settings.home)
        env.setdefault("LDIFS_CACHE_DIR", str(self.settings.cache_dir / "engine"))
        env.setdefault("LDIFS_DATASETS_DIR", str(self.settings.datasets_dir))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _follow(self, proc: subprocess.Popen, run_dir: Path, events_path: Path, offset: int) -> str:
        s = self.settings
        rec = self.store.record(self.owner, self.job_id)
        progress = Progress.from_record(rec, s.log_tail_lines)
        reason: str | None = None  # why it is being stopped: user | shutdown | stall | lost
        kill_at: float | None = None  # SIGKILL the group at this monotonic time
        signalled = killed = False
        shutdown_at: float | None = None
        last_event = time.monotonic()
        store_lost_at: float | None = None  # monotonic time the job store stopped answering

        def store_call(fn, default):
            nonlocal store_lost_at
            if store_lost_at is not None and servers.STORE.waiting:
                return default  # not before the back-off pause is over
            try:
                value = fn()
            except StoreUnavailable as e:
                servers.STORE.failed(str(e))
                store_lost_at = store_lost_at or time.monotonic()
                return default
            if store_lost_at is not None:
                servers.STORE.ok()
                store_lost_at = None
            return value

        def ask_stop(why: str, deadline: float | None) -> None:
            nonlocal reason, kill_at, signalled
            reason = why
            request_stop(run_dir, proc.pid, signal_child=not signalled)  # one SIGINT only: a second aborts
            signalled = True
            if deadline is not None:
                kill_at = deadline if kill_at is None else min(kill_at, deadline)

        while True:
            try:
                code = proc.wait(timeout=s.poll_s)
                break
            except subprocess.TimeoutExpired:
                pass
            now = time.monotonic()
            events, offset = read_new(events_path, offset)
            applied = progress.apply(events)
            if applied:
                last_event = now
            if applied or store_lost_at is not None:
                owned = store_call(lambda: self.store.progress(
                    self.owner, self.job_id, self.run, heartbeat_at=time.time(), events_offset=offset,
                    **progress.fields()), True)
                if not owned and reason != "lost":  # the reaper of another host took the job over
                    log.warning("job %s: no longer ours (attempt %d); stopping the engine", self.job_id, self.run)
                    ask_stop("lost", now + s.kill_grace_s)
            if (store_lost_at is not None and reason is None
                    and now - store_lost_at > s.heartbeat_stale_s / 2):
                # Past half the stale window another host's reaper may take the job over: checkpoint and
                # stop now, so two engines never run one job.
                log.warning("job %s: the job store has been unreachable for %.0f s; stopping the engine at a "
                            "checkpoint", self.job_id, now - store_lost_at)
                ask_stop("outage", None)
            mode = store_call(lambda: self.store.cancel_mode(self.owner, self.job_id), None)
            if mode and reason not in ("user", "lost"):
                ask_stop("user", None)
            if mode == "kill" and reason == "user" and kill_at is None:
                kill_at = now + s.kill_grace_s
            if SHUTDOWN.is_set():
                shutdown_at = now if shutdown_at is None else shutdown_at
                if reason is None:
                    ask_stop("shutdown", None)
                limit = s.kill_grace_s if _SHUTDOWN_FAST.is_set() else s.stop_timeout_s
                kill_at = min(math.inf if kill_at is None else kill_at, shutdown_at + limit)
            if reason is None and now - last_event > s.heartbeat_stale_s:
                log.warning("job %s: no event for %.0f s; stopping the engine", self.job_id, now - last_event)
                ask_stop("stall", now + s.kill_grace_s)
            if kill_at is not None and now >= kill_at and not killed:
                _killpg(proc.pid, signal.SIGKILL)
                killed = True
        _killpg(proc.pid, signal.SIGKILL)  # anything the engine left behind in its group
        events, offset = read_new(events_path, offset, final=True)
        progress.apply(events)
        with contextlib.suppress(FileNotFoundError):
            (run_dir / "STOP").unlink()
        if reason not in ("user", "lost") and servers.retrying(
                lambda: self.store.cancel_mode(self.owner, self.job_id), self.settings):
            reason = "user"
        if reason == "lost":
            return "lost"
        return self._conclude(code, reason, progress, run_dir, offset)

    def _conclude(self, code: int, reason: str | None, progress: Progress, run_dir: Path, offset: int) -> str:
        fields = {**progress.fields(), "events_offset": offset, "heartbeat_at": time.time()}
        ckpt = latest_checkpoint(run_dir)
        if ckpt is not None:
            fields["checkpoint_step"] = ckpt[0]
        where = f"step {progress.step}" if progress.step is not None else "start-up"
        kept = f" Checkpoint at step {ckpt[0]} kept." if ckpt else " No checkpoint was saved yet."
        if code == 0:
            results = run_dir / "results.json"
            if results.is_file():
                self._finish(DONE, done_message(run_dir), code, result_path=str(results), **fields)
                return "done"
            if (run_dir / "push.json").is_file():  # an upload to the Hub (tasks/sharing.py)
                self._finish(DONE, push_message(run_dir), code, **fields)
                return "done"
            self._finish(FAILED, "The engine exited without writing results.json.", code, **fields)
            return "failed"
        if code == STOPPED or code < 0:
            if reason == "user" or (code == STOPPED and reason is None):
                self._finish(CANCELLED, f"Stopped at {where}.{kept} Resume to continue.", code, **fields)
                return "cancelled"
            if reason == "shutdown":
                msg = f"The worker shut down at {where}.{kept} It resumes when a worker is running."
                crashed = False
            elif reason == "outage":
                msg = f"Stopped at {where} because the job store was unreachable.{kept} It resumes on a worker."
                crashed = False
            elif reason == "stall":
                msg = f"No progress for {self.settings.heartbeat_stale_s:.0f} s at {where}; the engine was stopped.{kept}"
                crashed = True
            else:
                name = signal_name(-code)
                msg = f"The engine was killed by {name} at {where} (out of host memory?).{kept}"
                crashed = True
            return servers.retrying(lambda: self.store.interrupt(
                self.owner, self.job_id, self.run, message=msg, crashed=crashed,
                max_attempts=self.settings.max_attempts, exit_code=code, **fields), self.settings)
        msg = failure_message(code, progress, run_dir / "engine.log")
        self._finish(FAILED, msg, code, **fields)
        return "failed"

    def _finish(self, state: str, message: str, code: int | None, **fields: Any) -> None:
        if not servers.retrying(lambda: self.store.finish(self.owner, self.job_id, self.run, state, message=message,
                                                          exit_code=code, **fields), self.settings):
            log.warning("job %s: state changed under us; not marking it %s", self.job_id, state)
