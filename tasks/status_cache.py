"""A short-lived cache of what pollers ask most: a user's job list and one job's status.

Progress reaches the job store from the worker, which folds the engine's ``events.jsonl`` into it
(reading only the lines appended since its last offset) every ``LDIFS_POLL_S``; nobody re-reads event
files to answer a poll. What is left per request is the store query and turning rows into dicts —
cheap once, but several pollers every second while a job trains make it the web process's main work.

An entry is reused while the store has not changed since it was read: ``JobStore.data_version()``
(SQLite's ``PRAGMA data_version``: it moves whenever any other connection, in any process, commits) is
checked per request, a few microseconds. A backend that cannot tell (PostgreSQL: ``None``) falls back
to a plain age limit of ``ttl_s``, at most as stale as the worker's own progress updates. Either way an entry older than ``max_age_s`` is read again, and keys
include the user, so a cached answer is never served to anyone else.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from .settings import get_settings
from .store import JobStore, JobView, open_store

DEFAULT_TTL_S = 0.5  # stores that cannot say whether they changed: at most this stale (= the worker's default poll)
DEFAULT_MAX_AGE_S = 5.0  # belt and braces for stores that can
MAX_ENTRIES = 1024


def public_job(view: JobView) -> dict[str, Any]:
    """A job as ``ldifs status --json`` prints it: every field but the spec, plus ``resumable``."""
    d = {f.name: getattr(view, f.name) for f in dataclasses.fields(view) if f.name != "spec"}
    d["backoffs"] = list(view.backoffs)
    d["resumable"] = view.resumable
    return d


class StatusCache:
    """Job lists and statuses per user, reused while the store is unchanged. Thread-safe.

    Returned values are shared between callers: treat them as read-only.
    """

    def __init__(self, store: JobStore | None = None, *, ttl_s: float = DEFAULT_TTL_S,
                 max_age_s: float = DEFAULT_MAX_AGE_S, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic):
        self._store = store
        self.ttl_s, self.max_age_s, self.max_entries, self._clock = ttl_s, max_age_s, max_entries, clock
        self._entries: OrderedDict[tuple, tuple[Any, float, Any]] = OrderedDict()  # key → (version, at, value)
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def store(self) -> JobStore:
        return self._store if self._store is not None else open_store(get_settings())

    def jobs(self, user: str, *, states: Iterable[str] | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """``ldifs jobs --json`` for ``user``: newest first, optionally only some states."""
        states_key = None if states is None else tuple(sorted({s.upper() for s in states}))
        return self._get(("jobs", user, states_key, int(limit)),
                         lambda store: [public_job(v) for v in store.list(user, states=states_key, limit=limit)])

    def status(self, user: str, job_id: str) -> dict[str, Any]:
        """``ldifs status --json`` of one of ``user``'s jobs (``JobNotFound`` for anyone else's)."""
        return self._get(("status", user, job_id), lambda store: public_job(store.get(user, job_id)))

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _get(self, key: tuple, read: Callable[[JobStore], Any]) -> Any:
        store = self.store
        key = (id(store), *key)  # two stores (two LDIFS_HOMEs in one process) never share entries
        version_of = getattr(store, "data_version", None)
        version = version_of() if version_of is not None else None  # None: this store cannot tell
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                old_version, at, value = entry
                fresh = (old_version == version) if version is not None else (now - at < self.ttl_s)
                if fresh and now - at < self.max_age_s:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return value
        value = read(store)  # outside the lock: a slow read must not hold up other users' hits
        with self._lock:
            self.misses += 1
            self._entries[key] = (version, now, value)  # version read before the query: a commit in between only
            self._entries.move_to_end(key)              # makes the next request read again, never serve stale
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)
        return value


_CACHE: StatusCache | None = None
_CACHE_LOCK = threading.Lock()


def status_cache() -> StatusCache:
    """The process-wide cache over the configured store."""
    global _CACHE
    with _CACHE_LOCK:
        if _CACHE is None:
            _CACHE = StatusCache()
        return _CACHE
