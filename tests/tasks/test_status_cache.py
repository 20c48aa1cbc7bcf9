"""The pollers' cache: reused while the store is unchanged, fresh as soon as a worker writes, owner-scoped."""
from __future__ import annotations

import sqlite3
import uuid

import pytest

from tasks.status_cache import StatusCache, public_job
from tasks.store import JobNotFound, JobStore


def new_job(store, owner="alice"):
    job_id = uuid.uuid4().hex
    row = {"id": job_id, "spec": {"optim": {"steps": 30}}, "spec_hash": "h" * 64, "title": "t", "method": "ce",
           "target": "quadrant", "run_dir": f"/nonexistent/{job_id}"}
    return store.create(owner, [row], max_queued=100)[0]


@pytest.fixture
def path(tmp_path):
    return tmp_path / "jobs.sqlite3"


def running(worker: JobStore, job_id: str, owner="alice") -> None:
    assert worker.claim(owner, job_id, 0, max_running=5, host="h", worker_pid=1) == "claimed"


def test_reused_while_nothing_changes(path):
    store = JobStore(path)
    job = new_job(store)
    cache = StatusCache(store)
    first = cache.status("alice", job.id)
    assert cache.status("alice", job.id) is first and (cache.hits, cache.misses) == (1, 1)
    listed = cache.jobs("alice")
    assert cache.jobs("alice") is listed and [j["id"] for j in listed] == [job.id]
    assert "spec" not in first and first["state"] == "QUEUED" and first["resumable"] is False


def test_fresh_after_the_worker_records_new_events(path):
    """The worker (another process: another connection) folds new events into the store; the very next poll
    shows them, without waiting for any expiry."""
    store, worker = JobStore(path), JobStore(path)
    job = new_job(store)
    cache = StatusCache(store, ttl_s=3600, max_age_s=3600)
    assert cache.status("alice", job.id)["step"] == 0 and cache.jobs("alice")[0]["state"] == "QUEUED"
    running(worker, job.id)
    for step in (5, 12):
        assert worker.progress("alice", job.id, 1, step=step, total_steps=30, eta_s=9.0, phase="train")
        assert cache.status("alice", job.id)["step"] == step
        assert cache.jobs("alice")[0]["step"] == step
    assert cache.jobs("alice", states=["running"])[0]["state"] == "RUNNING"
    assert worker.finish("alice", job.id, 1, "DONE", message="Done.", step=30)
    assert cache.status("alice", job.id)["state"] == "DONE"
    assert cache.jobs("alice", states=["RUNNING"]) == []


def test_same_process_writes_are_seen_too(path):
    """The embedded worker writes through the app's own store object (another thread: another connection)."""
    import threading

    store = JobStore(path)
    job = new_job(store)
    cache = StatusCache(store, ttl_s=3600, max_age_s=3600)
    assert cache.status("alice", job.id)["state"] == "QUEUED"
    t = threading.Thread(target=running, args=(store, job.id))
    t.start()
    t.join()
    assert cache.status("alice", job.id)["state"] == "RUNNING"


def test_owner_scoped_even_when_cached(path):
    store = JobStore(path)
    job = new_job(store, owner="alice")
    cache = StatusCache(store)
    cache.status("alice", job.id)
    cache.jobs("alice")
    with pytest.raises(JobNotFound):
        cache.status("bob", job.id)
    assert cache.jobs("bob") == []


def test_a_store_that_cannot_tell_changes_expires_entries_by_age(path):
    class NoVersion:
        """Another backend: the store API without data_version()."""

        def __init__(self, inner):
            self.inner = inner

        def get(self, *a, **k):
            return self.inner.get(*a, **k)

        def list(self, *a, **k):
            return self.inner.list(*a, **k)

    store, worker = JobStore(path), JobStore(path)
    job = new_job(store)
    now = [100.0]
    cache = StatusCache(NoVersion(store), ttl_s=0.5, clock=lambda: now[0])
    assert cache.status("alice", job.id)["state"] == "QUEUED"
    running(worker, job.id)
    now[0] += 0.3
    assert cache.status("alice", job.id)["state"] == "QUEUED"  # within the age limit: the cached answer
    now[0] += 0.3
    assert cache.status("alice", job.id)["state"] == "RUNNING"


def test_bounded(path):
    store = JobStore(path)
    jobs = [new_job(store) for _ in range(5)]
    cache = StatusCache(store, max_entries=3)
    for j in jobs:
        cache.status("alice", j.id)
    assert len(cache._entries) == 3


def test_public_job_is_what_status_json_prints(path):
    store = JobStore(path)
    view = new_job(store)
    expected = view.to_dict()
    expected.pop("spec")
    assert public_job(view) == expected


def test_data_version_moves_whenever_a_job_is_written(path):
    store = JobStore(path)
    new_job(store)
    v0 = store.data_version()
    assert store.data_version() == v0  # reads change nothing
    store.list("alice")
    assert store.data_version() == v0
    new_job(store)  # the store's own writes (its per-thread connection) count
    v1 = store.data_version()
    assert v1 != v0
    con = sqlite3.connect(path)  # so do other processes'
    con.execute("UPDATE jobs SET title = 'x'")
    con.commit()
    con.close()
    assert store.data_version() != v1
