"""The reaper: jobs whose worker died are recovered, others are left alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tasks import api, leases, queue, reaper
from tasks.settings import get_settings
from tasks.store import DONE, FAILED, INTERRUPTED, RUNNING, open_store

from .conftest import FAKE_ENGINE, spec, wait_for
from .test_jobs import events, reference_state, results, run_dir

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def running(job_id: str, *, host: str = leases.HOST, worker_pid: int | None = None, heartbeat_age: float = 0.0,
            pid: int | None = None, worker_start: int | None = None) -> None:
    """Put a queued job into RUNNING as if a worker had claimed it."""
    store = open_store(get_settings())
    worker_pid = worker_pid or dead_pid()
    if worker_start is None:
        worker_start = leases.process_start(worker_pid)
    assert store.claim("alice", job_id, 0, max_running=10, host=host, worker_pid=worker_pid,
                       worker_start=worker_start) == "claimed"
    store._con().execute("UPDATE jobs SET heartbeat_at = ?, pid = ?, pgid = ? WHERE id = ?",
                         (time.time() - heartbeat_age, pid, pid, job_id))


def test_job_of_a_dead_worker_on_this_host_is_interrupted_and_requeued(manual):
    job_id = api.submit("alice", spec())
    queue.get_huey().flush()
    running(job_id)
    assert reaper.reap_once() == [job_id]
    v = api.get_job("alice", job_id)
    assert v.state == INTERRUPTED and "stopped at start-up" in v.message
    assert [t.args for t in queue.get_huey().pending()] == [("alice", job_id, 1)]
    queue.run_pending()
    assert api.get_job("alice", job_id).state == DONE


def test_live_workers_and_fresh_heartbeats_are_left_alone(manual):
    here, there, stale = (api.submit("alice", spec()) for _ in range(3))
    running(here, worker_pid=os.getppid())  # a live process on this host
    running(there, host="elsewhere", heartbeat_age=1.0)
    running(stale, host="elsewhere", heartbeat_age=60.0)
    assert reaper.reap_once() == [stale]
    assert api.get_job("alice", here).state == RUNNING and api.get_job("alice", there).state == RUNNING
    assert "on elsewhere" in api.get_job("alice", stale).message


def test_a_reused_worker_pid_does_not_keep_a_job_running(manual):
    job_id = api.submit("alice", spec())
    live = os.getppid()
    running(job_id, worker_pid=live, worker_start=(leases.process_start(live) or 0) + 1)
    assert reaper.reap_once() == [job_id]


def test_gives_up_after_max_attempts(manual, monkeypatch):
    monkeypatch.setenv("LDIFS_MAX_ATTEMPTS", "1")
    get_settings.cache_clear()
    job_id = api.submit("alice", spec())
    running(job_id)
    reaper.reap_once()
    v = api.get_job("alice", job_id)
    assert v.state == FAILED and "Gave up after 1" in v.message


def test_an_orphaned_engine_is_stopped_at_a_checkpoint_and_resumed(manual, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    job_id = api.submit("alice", spec(steps=200, every=100))
    queue.get_huey().flush()
    d = run_dir(job_id)
    orphan = subprocess.Popen([sys.executable, str(FAKE_ENGINE), "run", "--spec", str(d / "spec.json"),
                               "--workdir", str(d)], start_new_session=True)
    running(job_id, pid=orphan.pid)
    wait_for(lambda: len(events(job_id, "step")) >= 3)
    assert reaper.reap_once() == [job_id]
    assert orphan.wait(5) == 3  # it saved a checkpoint and exited on SIGINT
    v = api.get_job("alice", job_id)
    stopped = events(job_id, "stopped")[0]
    assert v.state == INTERRUPTED and v.checkpoint_step == stopped["step"] >= 3
    monkeypatch.setenv("FAKE_STEP_S", "0.001")
    queue.run_pending()
    assert api.get_job("alice", job_id).state == DONE
    assert events(job_id, "start")[-1]["resumed_from"] == stopped["step"]
    assert results(job_id)["fake_state"] == reference_state(200)


def test_an_engine_that_finished_while_its_worker_was_down_is_done(manual):
    job_id = api.submit("alice", spec())
    queue.get_huey().flush()
    d = run_dir(job_id)
    subprocess.run([sys.executable, str(FAKE_ENGINE), "run", "--spec", str(d / "spec.json"), "--workdir", str(d)],
                   check=True)
    running(job_id)
    reaper.reap_once()
    v = api.get_job("alice", job_id)
    assert v.state == DONE and v.step == 6 and v.result_path.endswith("results.json")
    assert json.loads((d / "results.json").read_text())["fake_state"] == reference_state(6)


def test_recover_queue_reenqueues_lost_messages_once(manual):
    lost, kept = api.submit("alice", spec()), api.submit("alice", spec())
    huey = queue.get_huey()
    huey.flush()
    kept_task = queue.enqueue_run_job("alice", kept, 0)
    open_store(get_settings()).set_task_id("alice", kept, kept_task)
    assert reaper.recover_queue() == [lost]
    assert sorted(t.args[1] for t in huey.pending()) == sorted([lost, kept])
    assert reaper.recover_queue() == []
    queue.run_pending()
    assert {api.get_job("alice", j).state for j in (lost, kept)} == {DONE}


def test_pid_alive():
    assert reaper.pid_alive(os.getpid())
    assert not reaper.pid_alive(dead_pid())
    assert not reaper.pid_alive(None)
    assert not reaper.pid_alive(os.getpid(), must_contain="no-such-run-dir-xyz")


def test_the_periodic_recovery_leaves_a_message_in_flight_alone(manual, monkeypatch):
    """A waiting job without a message is re-enqueued only once it has stayed so for the grace period
    (its message may just be in a worker's hands on its way to the claim)."""
    lost = api.submit("alice", spec())
    queue.get_huey().flush()
    clock = [1000.0]
    monkeypatch.setattr(reaper.time, "monotonic", lambda: clock[0])
    suspects: dict = {}
    assert reaper.recover_queue(suspects=suspects, grace_s=5) == []  # first seen
    clock[0] += 4
    assert reaper.recover_queue(suspects=suspects, grace_s=5) == []  # still within the grace period
    clock[0] += 2
    assert reaper.recover_queue(suspects=suspects, grace_s=5) == [lost]
    assert reaper.recover_queue(suspects=suspects, grace_s=5) == []  # its message is back in the queue
    monkeypatch.undo()  # the real clock again before anything runs
    queue.run_pending()
    assert api.get_job("alice", lost).state == DONE
