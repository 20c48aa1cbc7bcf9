"""The huey instance that carries job ids to workers.

SQLite on local disk by default (``settings.queue_path``); ``LDIFS_QUEUE_URL=redis://…`` switches to a
Redis-backed huey with priorities so several machines can share one queue. Messages hold only
``(owner, job_id, attempt)``: the job store is the truth, and a stale or duplicate message is a no-op.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any

from . import jobs
from .settings import Settings, get_settings

if TYPE_CHECKING:
    from huey import Huey
    from huey.api import TaskWrapper

QUEUE_NAME = "ldifs"
RUN_JOB = "ldifs.run_job"

_huey: Huey | None = None
_lock = threading.Lock()
# the run_job task of each huey made here (what ``enqueue_run_job`` builds messages with)
_run_job_tasks: weakref.WeakKeyDictionary[Huey, TaskWrapper] = weakref.WeakKeyDictionary()
_tasks_lock = threading.Lock()


def make_huey(settings: Settings, *, immediate: bool = False) -> Huey:
    """A new huey for ``settings`` with the job task registered."""
    # huey is imported on first use: it pulls in redis and psycopg when they are installed (a third of a
    # second), which `ldifs jobs` and the status routes, reading only the job store, never need.
    from huey import SqliteHuey

    kwargs: dict[str, Any] = {"results": False, "immediate": immediate, "utc": True}
    if settings.queue_secret:
        from huey.serializer import SignedSerializer

        kwargs["serializer"] = SignedSerializer(secret=settings.queue_secret, salt="ldifs-studio")
    if settings.queue_url:
        try:
            import redis  # noqa: F401 — imported here so a SQLite deployment does not need it
            from huey import PriorityRedisHuey
        except ImportError:
            from ldifs_engine.errors import SpecError

            raise SpecError("LDIFS_QUEUE_URL: a Redis queue needs the redis package "
                            "(pip install 'ldifs-studio[redis]')") from None
        huey: Huey = PriorityRedisHuey(QUEUE_NAME, url=settings.queue_url, **kwargs)
    else:
        settings.queue_path.parent.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey(QUEUE_NAME, filename=str(settings.queue_path), strict_fifo=True, timeout=30, **kwargs)
    register_tasks(huey)
    return huey


def make_memory_huey(*, immediate: bool = True) -> Huey:
    """An in-process huey for tests: ``immediate`` runs tasks inline, otherwise ``run_pending`` does."""
    from huey import MemoryHuey

    huey = MemoryHuey(QUEUE_NAME, results=False, immediate=immediate, utc=True)
    register_tasks(huey)
    return huey


def run_job(owner: str, job_id: str, attempt: int) -> str:
    """The queue's one task: an attempt of a job (``jobs.run_job``), re-queued here when it must run again."""
    return jobs.run_job(owner, job_id, attempt, requeue=enqueue_run_job)


def register_tasks(huey: Huey) -> None:
    """Register the job task on ``huey`` (a consumer decodes messages by the task's name)."""
    with _tasks_lock:
        if huey not in _run_job_tasks:
            _run_job_tasks[huey] = huey.task(name=RUN_JOB)(run_job)


def get_huey() -> Huey:
    """The process-wide huey (created from the settings on first use)."""
    global _huey
    with _lock:
        if _huey is None:
            _huey = make_huey(get_settings())
        return _huey


def set_huey(huey: Huey | None) -> Huey | None:
    """Replace the process-wide huey (tests; None = build from settings again). Returns the old one."""
    global _huey
    with _lock:
        old, _huey = _huey, huey
        return old


def use_immediate(flag: bool = True) -> Huey:
    """Switch the process-wide huey to immediate mode (tasks run inline, in-memory storage)."""
    huey = get_huey()
    huey.immediate = flag
    return huey


def enqueue_run_job(owner: str, job_id: str, attempt: int, *, priority: int = 0,
                    delay: float | None = None) -> str:
    """Queue ``run_job(owner, job_id, attempt)``; returns the huey task id (for revoke)."""
    huey = get_huey()
    register_tasks(huey)  # a huey handed to set_huey may come from elsewhere
    task = _run_job_tasks[huey].s(owner, job_id, attempt, priority=priority, delay=delay)
    huey.enqueue(task)
    return task.id


def revoke(task_id: str | None) -> None:
    """Drop a queued message (a best effort: ``run_job`` re-checks the job's state anyway)."""
    if task_id:
        get_huey().revoke_by_id(task_id, revoke_once=True)


def queued_task_ids() -> set[str]:
    """Ids of messages waiting in the queue or its schedule."""
    huey = get_huey()
    ids: set[str] = set()
    for getter in (huey.pending, huey.scheduled):
        try:
            ids.update(t.id for t in getter())
        except Exception as e:  # noqa: BLE001 — an undecodable message must not stop recovery of the others
            logging.getLogger("ldifs.queue").warning("could not read the queue (%s)", e)
    return ids


def run_pending(huey: Huey | None = None, *, limit: int = 100) -> int:
    """Execute waiting messages in this thread (tests with a non-immediate memory huey)."""
    huey = huey or get_huey()
    n = 0
    while n < limit:
        task = huey.dequeue()
        if task is None:
            break
        huey.execute(task)
        n += 1
    return n
