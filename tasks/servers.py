"""What a worker needs from other machines: the job store's database, the Redis queue, the shared runs folder.

A server that cannot be reached is an *outage*, not a crash: the worker says so in one log line and
tries again after a growing pause (1, 2, 4 … 30 s), then says when it is back. Only errors that mean
"cannot reach" count (``StoreUnavailable``, Redis connection errors); anything else is a real error.

The runs folder must be one volume that the web box and every worker mount (see docs/DEPLOY-workers.md
for why this and not object storage): ``check_runs_volume`` proves at start that this machine sees the
same folder as the job store's other users, via a mark whose token is recorded in the store.
"""
from __future__ import annotations

import contextlib
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ldifs_engine.errors import LdifsError

from .db import StoreUnavailable, redact
from .settings import Settings
from .store import open_store

log = logging.getLogger("ldifs.worker")
T = TypeVar("T")

VOLUME_MARK = ".ldifs-volume"  # in the runs folder: the token the job store holds under "runs_volume"
MARK_GRACE_S = 15.0  # how long a starting worker waits for the mark another starting process is writing


def outage(exc: BaseException, settings: Settings | None = None) -> str | None:
    """A one-line description if ``exc`` means a server cannot be reached, else None."""
    if isinstance(exc, StoreUnavailable):
        return str(exc)
    try:
        import redis
    except ImportError:
        return None
    if isinstance(exc, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)):
        where = redact(settings.queue_url) if settings is not None and settings.queue_url else "Redis"
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        return f"cannot reach the queue ({where}): {detail}"
    return None


class Backoff:
    """Pauses that double up to ``cap`` for one server; one log line per retry, shared by a process's threads."""

    def __init__(self, what: str = "the server is", first: float = 1.0, cap: float = 30.0):
        self.what, self.first, self.cap = what, first, cap
        self._delay = 0.0
        self._until = 0.0
        self._lock = threading.Lock()

    @property
    def failing(self) -> bool:
        return self._delay > 0

    @property
    def waiting(self) -> bool:
        """Within the pause after the last failure (callers that poll skip their try meanwhile)."""
        return time.monotonic() < self._until

    def failed(self, message: str) -> float:
        """Record a failure; returns how long to wait before the next try."""
        with self._lock:
            now = time.monotonic()
            if now < self._until:  # another thread already reported this round
                return self._until - now
            self._delay = self.first if not self._delay else min(self.cap, self._delay * 2)
            self._until = now + self._delay
            log.warning("%s; retrying in %s s", message, f"{self._delay:g}")
            return self._delay

    def ok(self) -> None:
        """The server answered: say so once if it had not, and start the next outage at the shortest pause."""
        with self._lock:
            if self._delay:
                log.warning("%s reachable again", self.what)
            self._delay, self._until = 0.0, 0.0


# Process-wide, one per server: the worker threads, the scheduler and the reaper report one outage once,
# and a queue that answers says nothing about the job store (and back).
STORE = Backoff("the job store is")
QUEUE = Backoff("the queue is")


def backoff_for(exc: BaseException) -> Backoff:
    """The back-off of the server an outage error is about."""
    return STORE if isinstance(exc, StoreUnavailable) else QUEUE


def retrying(fn: Callable[[], T], settings: Settings, stop: threading.Event | None = None,
             backoff: Backoff | None = None) -> T | None:
    """``fn()``, retried with back-off while a server is unreachable; None if ``stop`` is set meanwhile."""
    used: set[Backoff] = set()
    while True:
        try:
            value = fn()
        except Exception as e:
            message = outage(e, settings)
            if message is None:
                raise
            b = backoff or backoff_for(e)
            used.add(b)
            delay = b.failed(message)
            if stop is not None:
                if stop.wait(delay):
                    return None
            else:
                time.sleep(delay)
            continue
        for b in used:
            b.ok()
        return value


def ping(settings: Settings, huey) -> None:
    """Open the job store (applying migrations) and reach the queue; raises what an outage raises."""
    open_store(settings).ping()
    conn = getattr(huey.storage, "conn", None)
    if conn is not None and hasattr(conn, "ping"):
        conn.ping()


def wait_for_servers(settings: Settings, huey, stop: threading.Event | None = None) -> bool:
    """Block until the job store and the queue answer (one line per retry); False if ``stop`` was set."""
    return retrying(lambda: ping(settings, huey) or True, settings, stop) is True


# ---- the shared runs folder -------------------------------------------------------------------
class VolumeMismatch(LdifsError):
    """This machine's runs folder is not the one the job store's other users write to."""


def check_runs_volume(settings: Settings) -> str:
    """Prove this machine sees the shared runs folder; returns the volume token.

    The first process to start with a store records a random token in it and writes the same token to
    ``runs/.ldifs-volume``. Every later worker must find that file with that token in *its* runs folder
    (so an unmounted volume, a different NFS export or a typo in ``LDIFS_SHARED_DIR`` is caught before a
    job runs against an empty local folder), and must be able to write and read a probe file there.
    """
    store = open_store(settings)
    runs = settings.runs_dir
    mark = runs / VOLUME_MARK
    try:
        runs.mkdir(parents=True, exist_ok=True)
        mine = secrets.token_hex(16)
        token = store.meta_setdefault("runs_volume", mine)
        if token == mine:  # this process created the volume's identity: write the mark
            _write_atomic(mark, token)
        _probe(runs)
        found = _read_mark(mark)
        # Workers started together: another one may have recorded the token a moment ago and not yet written
        # the mark (or be replacing an old one), so give it a short while before calling the folder wrong.
        deadline = time.monotonic() + MARK_GRACE_S
        while found != token and time.monotonic() < deadline:
            time.sleep(0.1)
            found = _read_mark(mark)
    except OSError as e:
        raise VolumeMismatch(f"cannot use the runs folder {runs}: {e.strerror or e}; it must be the shared runs "
                             "volume, writable by this user (see docs/DEPLOY-workers.md)") from None
    if found != token:
        why = "has no volume mark" if found is None else "has a different volume mark"
        raise VolumeMismatch(
            f"the runs folder {runs} is not the one the job store uses (it {why} {VOLUME_MARK}); mount the shared "
            "runs volume there or set LDIFS_SHARED_DIR to where it is mounted (see docs/DEPLOY-workers.md)")
    return token


def _read_mark(mark: Path) -> str | None:
    return mark.read_text(encoding="utf-8").strip() if mark.is_file() else None


def _probe(runs: Path) -> None:
    """Write, read back and remove a file: the folder is writable and reads what was written."""
    probe = runs / f".probe-{os.getpid()}-{secrets.token_hex(4)}"
    payload = secrets.token_hex(8)
    try:
        probe.write_text(payload, encoding="utf-8")
        if probe.read_text(encoding="utf-8") != payload:
            raise OSError(f"a probe file read back differently from what was written ({probe})")
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)


# ---- huey's consumer parts, with outages reported in one line ----------------------------------
def consumer_classes(settings: Settings) -> tuple[type, type]:
    """(worker class, scheduler class) for ``huey.consumer.Consumer``: like huey's, but an unreachable
    queue is one line per retry with a growing pause, instead of a traceback at every poll."""
    from huey.consumer import Scheduler, Worker

    class QueueWorker(Worker):
        def loop(self, now=None):
            try:
                task = self.huey.dequeue()
            except Exception as e:
                message = outage(e, settings)
                if message is None:
                    self._logger.exception("Error reading from queue")
                    self.sleep()
                else:
                    self.stop_flag.wait(QUEUE.failed(message))
                return
            if QUEUE.failing:
                QUEUE.ok()
            if task is None:
                if not self.huey.storage.blocking:
                    self.sleep()
                return
            self.delay = self.default_delay
            try:
                self.huey.execute(task, now)
            except Exception as e:
                message = outage(e, settings)
                if message is None:
                    self._logger.exception("Unhandled error during execution of task %s.", task.id)
                else:
                    # The queue went away during huey's bookkeeping around the task (its revoke flag, its result):
                    # the job's own state is in the job store, and the reaper re-enqueues a job whose task never
                    # ran, so this is an outage line like any other, not a traceback.
                    self.stop_flag.wait(QUEUE.failed(message))

    class QueueScheduler(Scheduler):
        def loop(self, now=None):
            try:
                due = self.huey.read_schedule(now)
            except Exception as e:
                message = outage(e, settings)
                if message is None:
                    self._logger.exception("Error reading schedule.")
                else:
                    QUEUE.failed(message)
                due = []
            for task in due:
                try:
                    self.huey.enqueue(task)
                except Exception as e:
                    message = outage(e, settings)
                    if message is None:
                        self._logger.exception("Error enqueueing %s.", task)
                    else:
                        QUEUE.failed(message)  # the job stays QUEUED in the store; the reaper re-enqueues it
            self.stop_flag.wait(self.interval)

    return QueueWorker, QueueScheduler
