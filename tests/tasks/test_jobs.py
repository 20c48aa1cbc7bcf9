"""run_job against the fake engine: exit codes → states, idempotence, OOM back-offs, cancel, stalls."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from tasks import api, jobs, leases, queue
from tasks.settings import get_settings
from tasks.store import CANCELLED, DONE, FAILED, INTERRUPTED, QUEUED, RUNNING, open_store

from .conftest import spec, wait_for

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL


def run_dir(job_id: str) -> Path:
    return get_settings().runs_dir / job_id


def events(job_id: str, kind: str | None = None) -> list[dict]:
    path = run_dir(job_id) / "events.jsonl"
    out = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in out if kind is None or e["type"] == kind]


def results(job_id: str) -> dict:
    return json.loads((run_dir(job_id) / "results.json").read_text())


def reference_state(steps: int) -> float:
    """The fake engine's final state for an uninterrupted run."""
    state = 0.0
    for step in range(1, steps + 1):
        state += (step % 7) * 0.25 + step * 1e-3
    return round(state, 9)


def run_in_thread() -> threading.Thread:
    t = threading.Thread(target=queue.run_pending, daemon=True)
    t.start()
    return t


def test_a_job_runs_to_done_with_progress_recorded(immediate):
    job_id = api.submit("alice", spec(steps=6, every=2))
    v = api.get_job("alice", job_id)
    assert (v.state, v.attempts, v.step, v.total_steps, v.checkpoint_step) == (DONE, 1, 6, 6, 6)
    assert v.result_path == str(run_dir(job_id) / "results.json") and v.message.startswith("Done")
    assert v.samples_per_s and v.finished_at >= v.started_at
    assert any("checkpoint saved at step 4" in line for line in api.job_logs("alice", job_id))
    env = json.loads((run_dir(job_id) / "fake-env.json").read_text())
    assert env["LDIFS_CACHE_DIR"] == str(get_settings().cache_dir / "engine")
    assert env["CUDA_VISIBLE_DEVICES"] is None
    spec_json = json.loads((run_dir(job_id) / "spec.json").read_text())
    assert spec_json == v.spec and spec_json["optim"]["steps"] == 6


@pytest.mark.parametrize("nice", [10, 0])
def test_engines_run_nicer_than_their_worker(immediate, monkeypatch, nice):
    """On shared CPUs a training engine must not starve the web app's status polls (LDIFS_ENGINE_NICE)."""
    import os

    monkeypatch.setenv("LDIFS_ENGINE_NICE", str(nice))
    get_settings.cache_clear()
    job_id = api.submit("alice", spec(steps=2))
    assert api.get_job("alice", job_id).state == DONE
    assert results(job_id)["fake_nice"] == min(19, os.nice(0) + nice)


def test_gpu_lease_sets_cuda_visible_devices(immediate, monkeypatch):
    monkeypatch.setenv("LDIFS_GPU_IDS", "3")
    get_settings.cache_clear()
    job_id = api.submit("alice", spec())
    assert json.loads((run_dir(job_id) / "fake-env.json").read_text())["CUDA_VISIBLE_DEVICES"] == "3"


def test_one_job_per_gpu_slot(home, monkeypatch):
    monkeypatch.setenv("LDIFS_GPU_IDS", "0")
    get_settings.cache_clear()
    s = get_settings()
    first = leases.try_acquire(s)
    assert first is not None and first.gpu == "0"
    assert leases.try_acquire(s) is None  # also across threads: flock is per open file
    first.release()
    again = leases.try_acquire(s)
    assert again is not None
    again.release()


def test_run_job_is_idempotent_under_concurrent_calls(manual):
    job_id = api.submit("alice", spec(steps=4))
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(queue.run_job("alice", job_id, 0))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["done", "skipped"]
    assert len(events(job_id, "start")) == 1
    assert api.get_job("alice", job_id).attempts == 1
    assert queue.run_job("alice", job_id, 0) == "skipped"  # a late duplicate message


def test_oom_backoffs_are_recorded_and_the_run_finishes(immediate, monkeypatch):
    monkeypatch.setenv("FAKE_OOM_AT", "2,4")
    job_id = api.submit("alice", spec(steps=6))
    v = api.get_job("alice", job_id)
    assert v.state == DONE and v.attempts == 1
    assert [(b["step"], b["micro_batch"], b["accum"]) for b in v.backoffs] == [(2, 32, 2), (4, 16, 4)]
    assert "micro-batch now 16" in "\n".join(api.job_logs("alice", job_id))


def test_oom_at_micro_batch_one_fails_without_retry(immediate, monkeypatch):
    monkeypatch.setenv("FAKE_OOM_AT", "1,2")
    job_id = api.submit("alice", spec(steps=6, batch_size=2))
    v = api.get_job("alice", job_id)
    assert v.state == FAILED and v.attempts == 1
    assert "micro-batch 1" in v.message and len(v.backoffs) == 1
    assert len(events(job_id, "start")) == 1


@pytest.mark.parametrize("fail, expected", [
    ("5:0:DatasetUnavailable:put the Quadrant files in ~/data/quadrant", "put the Quadrant files in ~/data/quadrant"),
    ("2:0:SpecError:optim.lr: must be > 0", "optim.lr: must be > 0"),
    ("4:3:Diverged:the loss became NaN at step 3", "the loss became NaN at step 3"),
    ("1:2::boom in the data loader", "RuntimeError: boom in the data loader"),  # no error event: stderr
])
def test_engine_errors_fail_the_job_with_a_readable_message(immediate, monkeypatch, fail, expected):
    monkeypatch.setenv("FAKE_FAIL", fail)
    job_id = api.submit("alice", spec(steps=6))
    v = api.get_job("alice", job_id)
    assert v.state == FAILED and v.attempts == 1, v.message
    assert expected in v.message
    assert len(events(job_id, "start")) == 1  # errors are not retried


def test_failed_job_logs_include_engine_output(immediate, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "1:1::kaboom")
    job_id = api.submit("alice", spec())
    assert any("kaboom" in line for line in api.job_logs("alice", job_id))


def test_killed_engine_is_resumed_from_its_checkpoint(immediate, monkeypatch):
    monkeypatch.setenv("FAKE_SELF_KILL_AT", "5")
    job_id = api.submit("alice", spec(steps=8, every=2))
    v = api.get_job("alice", job_id)
    assert v.state == DONE and v.attempts == 2
    starts = events(job_id, "start")
    assert [s["resumed_from"] for s in starts] == [None, 4]
    assert results(job_id)["fake_state"] == reference_state(8)


def test_cancel_a_queued_job_revokes_it(manual):
    job_id = api.submit("alice", spec())
    v = api.cancel("alice", job_id)
    assert v.state == CANCELLED and "before it ran" in v.message
    queue.run_pending()
    assert events(job_id) == []
    assert api.get_job("alice", job_id).state == CANCELLED


def test_run_job_rechecks_the_state_when_the_revoke_was_missed(manual):
    job_id = api.submit("alice", spec())
    api.cancel("alice", job_id)
    assert queue.run_job("alice", job_id, 0) == "skipped"
    assert events(job_id) == []


def test_stop_a_running_job_then_resume_it(manual, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    job_id = api.submit("alice", spec(steps=200, every=10))
    worker = run_in_thread()
    wait_for(lambda: api.get_job("alice", job_id).step >= 3)
    v = api.cancel("alice", job_id)
    assert v.state == RUNNING and v.cancel_requested == "stop"
    worker.join(15)
    v = api.get_job("alice", job_id)
    stopped = events(job_id, "stopped")
    assert v.state == CANCELLED and v.resumable and len(stopped) == 1
    assert v.checkpoint_step == stopped[0]["step"] >= 3
    assert (run_dir(job_id) / "checkpoints" / f"step-{v.checkpoint_step:08d}" / "COMPLETE").exists()
    assert not (run_dir(job_id) / "STOP").exists()

    monkeypatch.setenv("FAKE_STEP_S", "0.001")
    assert api.resume("alice", job_id).state == QUEUED
    queue.run_pending()
    v = api.get_job("alice", job_id)
    assert v.state == DONE and v.attempts == 2
    assert events(job_id, "start")[-1]["resumed_from"] == stopped[0]["step"]
    assert results(job_id)["fake_state"] == reference_state(200)


def test_kill_ends_an_engine_that_ignores_stop(manual, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    monkeypatch.setenv("FAKE_IGNORE_STOP", "1")
    job_id = api.submit("alice", spec(steps=400, every=5))
    worker = run_in_thread()
    wait_for(lambda: api.get_job("alice", job_id).step >= 6)
    api.cancel("alice", job_id, mode="kill")
    worker.join(10)
    assert not worker.is_alive()
    v = api.get_job("alice", job_id)
    assert v.state == CANCELLED and v.checkpoint_step >= 5 and v.step < 400


def test_a_stalled_engine_is_stopped_and_resumed(immediate, monkeypatch):
    monkeypatch.setenv("LDIFS_HEARTBEAT_STALE_S", "0.5")
    monkeypatch.setenv("FAKE_HANG_AT", "3")
    get_settings.cache_clear()
    job_id = api.submit("alice", spec(steps=6, every=2))
    v = api.get_job("alice", job_id)
    assert v.state == DONE and v.attempts == 2
    assert [s["resumed_from"] for s in events(job_id, "start")] == [None, 2]
    assert results(job_id)["fake_state"] == reference_state(6)


def test_worker_shutdown_checkpoints_and_requeues_without_using_an_attempt(manual, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    job_id = api.submit("alice", spec(steps=200, every=100))
    worker = run_in_thread()
    wait_for(lambda: api.get_job("alice", job_id).step >= 2)
    jobs.begin_shutdown()
    worker.join(10)
    v = api.get_job("alice", job_id)
    assert v.state == INTERRUPTED and "shut down" in v.message
    assert v.checkpoint_step == events(job_id, "stopped")[0]["step"]
    assert open_store(get_settings()).record("alice", job_id)["crashes"] == 0
    assert len(queue.get_huey().pending()) == 1  # re-queued for the next worker
    jobs.reset_shutdown()
    monkeypatch.setenv("FAKE_STEP_S", "0.001")
    queue.run_pending()
    assert api.get_job("alice", job_id).state == DONE
    assert results(job_id)["fake_state"] == reference_state(200)


def test_running_quota_defers_the_job(manual, monkeypatch):
    monkeypatch.setenv("LDIFS_MAX_RUNNING_PER_USER", "1")
    get_settings.cache_clear()
    first, second = api.submit("alice", spec()), api.submit("alice", spec())
    store = open_store(get_settings())
    store.claim("alice", first, 0, max_running=1, host="h", worker_pid=1)
    assert queue.run_job("alice", second, 0) == "deferred"
    assert api.get_job("alice", second).state == QUEUED
    later = [t for t in queue.get_huey().pending() if t.args == ("alice", second, 0) and t.eta is not None]
    assert len(later) == 1  # retried after a delay


def test_missing_spec_snapshot_fails_clearly(manual):
    job_id = api.submit("alice", spec())
    (run_dir(job_id) / "spec.json").unlink()
    queue.run_pending()
    v = api.get_job("alice", job_id)
    assert v.state == FAILED and "spec.json" in v.message


def test_a_worker_that_lost_its_job_stops_its_engine(manual, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
    job_id = api.submit("alice", spec(steps=200, every=100))
    worker = run_in_thread()
    wait_for(lambda: api.get_job("alice", job_id).step >= 2)
    # Another host's reaper judged the heartbeat stale and took the job over.
    store = open_store(get_settings())
    assert store.interrupt("alice", job_id, 1, message="taken over", crashed=True, max_attempts=3) == "requeue"
    worker.join(10)
    assert not worker.is_alive() and len(events(job_id, "stopped")) == 1
    v = api.get_job("alice", job_id)
    assert v.state == INTERRUPTED and v.message == "taken over"
