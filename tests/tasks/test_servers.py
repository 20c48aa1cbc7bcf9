"""The shared runs volume check at worker start, and the one-line back-off helper (both job store backends)."""
from __future__ import annotations

import dataclasses
import logging
import threading

import pytest

from tasks import cli_jobs, servers
from tasks.settings import get_settings
from tasks.store import StoreUnavailable


@pytest.fixture
def settings(home, db_url, monkeypatch):
    monkeypatch.setattr(servers, "MARK_GRACE_S", 0.3)  # a wrong folder is still refused, just sooner
    if db_url:
        monkeypatch.setenv("LDIFS_DB_URL", db_url)
    get_settings.cache_clear()
    return get_settings()


def test_the_first_start_marks_the_runs_volume_and_later_workers_find_it(settings, tmp_path):
    token = servers.check_runs_volume(settings)
    mark = settings.runs_dir / servers.VOLUME_MARK
    assert mark.read_text().strip() == token and len(token) == 32
    assert servers.check_runs_volume(settings) == token  # a second worker on the same volume
    assert not list(settings.runs_dir.glob(".probe-*"))  # the probe file is cleaned up

    elsewhere = dataclasses.replace(settings, shared_dir=tmp_path / "not-mounted")  # an empty local folder
    with pytest.raises(servers.VolumeMismatch, match="has no volume mark"):
        servers.check_runs_volume(elsewhere)
    other = tmp_path / "other-volume"
    (other / "runs").mkdir(parents=True)
    (other / "runs" / servers.VOLUME_MARK).write_text("0" * 32)
    with pytest.raises(servers.VolumeMismatch, match="different volume mark"):
        servers.check_runs_volume(dataclasses.replace(settings, shared_dir=other))


def test_workers_starting_together_wait_for_the_mark_being_written(settings, monkeypatch):
    """Seen in CI: worker B recorded the volume token in the store, and worker A read it before B had written
    the mark file, so A refused a correct folder. A now waits a short while for the mark to appear."""
    from tasks.store import open_store

    monkeypatch.setattr(servers, "MARK_GRACE_S", 10.0)
    token = open_store(settings).meta_setdefault("runs_volume", "f" * 32)  # B got as far as the store
    settings.runs_dir.mkdir(parents=True, exist_ok=True)
    writer = threading.Timer(0.5, lambda: servers._write_atomic(settings.runs_dir / servers.VOLUME_MARK, token))
    writer.start()  # ... and writes the mark half a second later
    try:
        assert servers.check_runs_volume(settings) == token
    finally:
        writer.join()


def test_a_worker_without_the_shared_volume_refuses_to_start_in_one_line(settings, tmp_path, monkeypatch, capsys):
    servers.check_runs_volume(settings)  # the web box started first and marked the volume
    monkeypatch.setenv("LDIFS_SHARED_DIR", str(tmp_path / "empty-mount-point"))
    get_settings.cache_clear()
    assert cli_jobs.main(["worker"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the runs folder ") and "\n" not in err
    assert "LDIFS_SHARED_DIR" in err and "DEPLOY-workers.md" in err


def test_backoff_doubles_logs_once_per_round_and_is_kept_per_server(caplog, home, monkeypatch):
    caplog.set_level(logging.WARNING, "ldifs.worker")
    b = servers.Backoff("the job store is", first=0.01, cap=0.04)
    s = get_settings()
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] <= 4:
            raise StoreUnavailable("cannot reach the job store (PostgreSQL at db:5432/ldifs): Connection refused")
        return "ok"

    assert servers.retrying(flaky, s, backoff=b) == "ok"
    lines = [r.getMessage() for r in caplog.records]
    assert [ln.rsplit("retrying in ", 1)[1] for ln in lines[:4]] == ["0.01 s", "0.02 s", "0.04 s", "0.04 s"]
    assert all(ln.startswith("cannot reach the job store (PostgreSQL at db:5432/ldifs)") for ln in lines[:4])
    assert b._delay == 0 and lines[-1].endswith("reachable again")
    with pytest.raises(ValueError):  # only "cannot reach" errors are retried
        servers.retrying(lambda: int("x"), s, backoff=b)

    import redis

    store, queue_ = servers.Backoff("the job store is"), servers.Backoff("the queue is")
    monkeypatch.setattr(servers, "STORE", store)
    monkeypatch.setattr(servers, "QUEUE", queue_)
    assert servers.backoff_for(StoreUnavailable("x")) is store
    assert servers.backoff_for(redis.exceptions.ConnectionError("y")) is queue_
    store.failed("cannot reach the job store (PostgreSQL at db:5432/ldifs): Connection refused")
    queue_.ok()  # an idle worker thread that just read the queue says nothing about the database
    assert store.failing and store.waiting


def test_the_queue_going_away_around_a_task_is_an_outage_line_not_a_traceback(caplog, home, monkeypatch):
    """Seen in a whole-suite run: Redis died just after a job finished, while huey was clearing the task's revoke
    flag; the worker logged a traceback. Now it is the same one line (with back-off) as any queue outage."""
    import redis

    monkeypatch.setattr(servers, "QUEUE", servers.Backoff("the queue is", first=0.01))
    worker_cls, _ = servers.consumer_classes(get_settings())

    class Task:
        id = "t1"

    class FakeHuey:
        class storage:
            blocking = True

        def __init__(self, error):
            self.error = error

        def dequeue(self):
            return Task()

        def execute(self, task, now):
            raise self.error

    caplog.set_level(logging.INFO)
    gone = redis.exceptions.ConnectionError("Error while reading from 127.0.0.1:6379 : (104, 'Connection reset')")
    worker_cls(FakeHuey(gone), threading.Event(), 0.1, 1.0, 1.15).loop()
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and not lines[0].exc_info
    assert lines[0].getMessage().startswith("cannot reach the queue (") and "retrying in 0.01 s" in lines[0].getMessage()

    caplog.clear()  # anything else is still a bug worth its traceback
    worker_cls(FakeHuey(ValueError("a bug")), threading.Event(), 0.1, 1.0, 1.15).loop()
    assert [r.levelno for r in caplog.records if r.exc_info] == [logging.ERROR]


def test_the_compose_file_uses_real_settings_and_commands():
    """deploy/compose.yaml stays in step with the code: every LDIFS_ variable it sets is read somewhere,
    and its commands parse."""
    import re
    from pathlib import Path

    import yaml

    from app.cli import build_parser

    repo = Path(__file__).resolve().parents[2]
    compose = yaml.safe_load((repo / "deploy" / "compose.yaml").read_text())
    sources = "\n".join(p.read_text() for d in ("tasks", "app") for p in (repo / d).rglob("*.py"))
    names = set(re.findall(r"LDIFS_[A-Z_]+", (repo / "deploy" / "compose.yaml").read_text()))
    names -= {"LDIFS_DB_PASSWORD"}  # compose's own variable: the postgres service's password, inside LDIFS_DB_URL
    assert names and all(f'"{n}"' in sources for n in names), sorted(n for n in names if f'"{n}"' not in sources)
    parser = build_parser()
    for name in ("web", "worker"):
        command = compose["services"][name]["command"]
        assert command[0] == "ldifs"
        parser.parse_args(command[1:])
    assert "--no-worker" in compose["services"]["web"]["command"]
    assert compose["services"]["worker"]["stop_signal"] == "SIGINT"


@pytest.mark.slow
def test_a_running_job_rides_out_a_database_outage_then_stops_at_a_checkpoint(manual, postgres, monkeypatch, caplog):
    """PostgreSQL goes down mid-run: the engine keeps training at first; past half the stale window the
    worker stops it at a checkpoint (another machine may take the job over after the window); once the
    database is back the job is INTERRUPTED, re-queued, and resumes to the same result."""
    import json
    import threading
    import time

    from tasks import api, queue

    from .conftest import spec, wait_for
    from .test_jobs import reference_state, results, run_dir

    stale = 4.0
    monkeypatch.setenv("LDIFS_DB_URL", postgres.fresh_schema())
    monkeypatch.setenv("LDIFS_HEARTBEAT_STALE_S", str(stale))
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    get_settings.cache_clear()
    caplog.set_level(logging.WARNING)
    job = api.submit("alice", spec(steps=400, every=1000))  # no periodic checkpoint: only the fencing stop saves one
    runner = threading.Thread(target=queue.run_pending, daemon=True)
    runner.start()
    wait_for(lambda: api.get_job("alice", job).step >= 10, timeout=30)
    try:
        postgres.stop("fast")
        down_at = time.time()
        events_path = run_dir(job) / "events.jsonl"

        def stopped():
            evs = [json.loads(ln) for ln in events_path.read_text().splitlines()]
            return [e for e in evs if e["type"] == "stopped"] and evs

        evs = wait_for(stopped, timeout=20)
        stop = next(e for e in evs if e["type"] == "stopped")
        trained_meanwhile = [e for e in evs if e["type"] == "step" and down_at < e["t"] < stop["t"]]
        assert len(trained_meanwhile) > 10  # the engine kept training through the first seconds
        assert stale / 2 - 0.5 < stop["t"] - down_at < stale / 2 + 3
    finally:
        postgres.start()
    wait_for(lambda: api.get_job("alice", job).state == "DONE", timeout=60)
    runner.join(10)
    starts = [json.loads(ln) for ln in events_path.read_text().splitlines() if '"start"' in ln]
    assert [s["resumed_from"] for s in starts] == [None, stop["step"]]
    assert results(job)["fake_state"] == reference_state(400)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("cannot reach the job store (PostgreSQL at 127.0.0.1:") for m in messages)
    assert any("unreachable for" in m and "stopping the engine at a checkpoint" in m for m in messages)
    assert any(m.endswith("reachable again") for m in messages)
    servers.STORE.ok()
