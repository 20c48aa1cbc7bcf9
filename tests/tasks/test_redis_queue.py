"""The Redis queue against a real ``redis-server`` (append-only file on): signed messages, a crash of
Redis that loses no queued job, and a worker that waits out unreachable servers instead of dying."""
from __future__ import annotations

import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tasks import api, queue, reaper
from tasks.settings import get_settings
from tasks.store import DONE, open_store
from tests.servers import Redis, free_port

from .conftest import REPO, spec, wait_for

SECRET = "a-long-random-secret-for-tests"


@pytest.fixture
def redis_queue(home, redis_srv, monkeypatch):
    """The test's LDIFS_HOME with its queue on the session's Redis (emptied first), messages signed."""
    import redis

    redis.Redis.from_url(redis_srv.url).flushall()
    monkeypatch.setenv("LDIFS_QUEUE_URL", redis_srv.url)
    monkeypatch.setenv("LDIFS_QUEUE_SECRET", SECRET)
    get_settings.cache_clear()
    queue.set_huey(None)
    yield redis_srv
    queue.set_huey(None)


def raw_messages() -> list[bytes]:
    storage = queue.get_huey().storage
    return storage.conn.zrange(storage.queue_key, 0, -1)


def test_jobs_travel_signed_through_a_real_redis(redis_queue):
    ids = [api.submit("alice", spec(steps=3)) for _ in range(2)]
    raw = raw_messages()
    assert len(raw) == 2
    assert all(re.search(rb":[0-9a-f]{40}$", m) for m in raw)  # HMAC signature appended to every message
    assert queue.run_pending() == 2  # executes run_job with the fake engine, in this thread
    assert [api.get_job("alice", j).state for j in ids] == [DONE, DONE]
    assert raw_messages() == []


class _Payload:
    """Unpickling this creates a file: what a forged message could do if it were ever unpickled."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_forged_or_unsigned_messages_are_rejected_before_unpickling(redis_queue, tmp_path):
    from huey.serializer import SignedSerializer

    huey = queue.get_huey()
    marker = tmp_path / "pwned"
    forged = SignedSerializer(secret="not-the-secret", salt="ldifs-studio").serialize(_Payload(str(marker)))
    unsigned = pickle.dumps(_Payload(str(marker)))
    for data in (forged, unsigned):
        huey.storage.enqueue(data, 0)
        with pytest.raises(ValueError):
            huey.dequeue()
    assert not marker.exists()


def test_a_redis_crash_with_the_append_only_file_loses_no_queued_job(redis_queue):
    store = open_store(get_settings())
    ids = [api.submit("alice", spec(steps=3)) for _ in range(3)]
    task_ids = {store.record("alice", j)["task_id"] for j in ids}
    assert queue.queued_task_ids() == task_ids

    redis_queue.kill()  # SIGKILL: no shutdown save, only the append-only file survives
    redis_queue.start()
    queue.set_huey(None)
    assert queue.queued_task_ids() == task_ids  # all three messages came back from the append-only file
    assert reaper.recover_queue(get_settings()) == []  # nothing needed re-enqueueing from the store
    assert queue.run_pending() == 3
    assert {api.get_job("alice", j).state for j in ids} == {DONE}


@pytest.mark.slow
def test_a_worker_waits_for_unreachable_servers_then_runs_jobs(home, postgres, monkeypatch, tmp_path):
    """PostgreSQL down and Redis not started: the worker says so in one line per retry, with growing
    pauses, and starts working once both answer."""
    db_url = postgres.fresh_schema()
    redis_dir = Path(tempfile.mkdtemp(prefix="ldifs-redis-"))
    late_redis = Redis(redis_dir, free_port())
    monkeypatch.setenv("LDIFS_DB_URL", db_url)
    monkeypatch.setenv("LDIFS_QUEUE_URL", late_redis.url)
    monkeypatch.setenv("LDIFS_QUEUE_SECRET", SECRET)
    get_settings.cache_clear()
    queue.set_huey(None)
    log_path = tmp_path / "worker.log"
    postgres.stop("fast")
    worker = None
    try:
        with open(log_path, "wb") as log:
            worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=dict(os.environ), cwd=REPO,
                                      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        def lines(pattern: str) -> list[str]:
            return [ln for ln in log_path.read_text().splitlines() if pattern in ln]

        wait_for(lambda: len(lines("cannot reach the job store")) >= 3, timeout=40)
        assert worker.poll() is None, "the worker died instead of waiting"
        postgres.start()
        wait_for(lambda: lines("cannot reach the queue"), timeout=30)
        assert lines("cannot reach the queue")[0].endswith("retrying in 1 s")  # another server: back to the shortest pause
        late_redis.start()
        job_id = api.submit("alice", spec(steps=4))
        wait_for(lambda: api.get_job("alice", job_id).state == DONE, timeout=60)

        before = len(lines("cannot reach the queue"))  # Redis dies while the worker waits for work
        late_redis.kill()
        wait_for(lambda: len(lines("cannot reach the queue")) > before, timeout=30)
        late_redis.start()
        second = api.submit("alice", spec(steps=4))
        wait_for(lambda: api.get_job("alice", second).state == DONE, timeout=60)
        assert worker.poll() is None

        text = log_path.read_text()
        assert "Traceback" not in text
        store_lines = lines("cannot reach the job store")
        delays = [int(m.group(1)) for ln in store_lines if (m := re.search(r"retrying in (\d+) s", ln))]
        assert delays[:3] == [1, 2, 4]  # back-off doubles
        assert all("PostgreSQL at 127.0.0.1" in ln for ln in store_lines)
        assert len(lines("reachable again")) >= 2
        worker.send_signal(signal.SIGINT)
        assert worker.wait(30) == 0
    finally:
        if worker is not None and worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        if not (postgres.datadir / "postmaster.pid").exists():
            postgres.start()
        late_redis.stop()
        shutil.rmtree(redis_dir, ignore_errors=True)
        print(log_path.read_text()[-3000:] if log_path.exists() else "")
