"""Real processes: a consumer (``python -m tasks.worker``) on the SQLite queue, killed and restarted.

These use the fake engine; each takes a few seconds.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from tasks import api, queue
from tasks.reaper import pid_alive
from tasks.settings import get_settings
from tasks.store import DONE, INTERRUPTED, open_store

from .conftest import REPO, spec, wait_for
from .test_jobs import events, reference_state, results

pytestmark = pytest.mark.slow


class Consumer:
    def __init__(self, log_path, workers: int = 1):
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "tasks.worker", str(workers)], cwd=REPO,
                                     env=dict(os.environ), stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self, sig=signal.SIGINT, timeout=15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()


@pytest.fixture
def consumers(home, tmp_path):
    queue.set_huey(None)  # the SQLite queue under LDIFS_HOME, shared with the consumer process
    started: list[Consumer] = []

    def start(workers: int = 1) -> Consumer:
        c = Consumer(tmp_path / "consumer.log", workers)
        started.append(c)
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait()
    for rec in open_store(get_settings()).running_all():  # never leave an engine behind
        if rec["pgid"] and pid_alive(rec["pid"]):
            os.killpg(rec["pgid"], signal.SIGKILL)
    log = tmp_path / "consumer.log"
    if log.exists():
        print(log.read_text()[-4000:])


def job(job_id):
    return api.get_job("alice", job_id)


def record(job_id):
    return open_store(get_settings()).record("alice", job_id)


@pytest.mark.parametrize("engine_survives", [True, False], ids=["orphan-engine", "power-loss"])
def test_sigkill_of_the_consumer_resumes_from_a_checkpoint(consumers, monkeypatch, engine_survives):
    monkeypatch.setenv("FAKE_STEP_S", "0.04")
    job_id = api.submit("alice", spec(steps=200, every=5))
    first = consumers()
    wait_for(lambda: job(job_id).step >= 12, timeout=30)
    engine = record(job_id)
    first.proc.kill()  # SIGKILL: huey loses the task; the store still says RUNNING
    first.proc.wait()
    if not engine_survives:
        os.killpg(engine["pgid"], signal.SIGKILL)
    assert job(job_id).state == "RUNNING"

    monkeypatch.setenv("FAKE_STEP_S", "0.002")  # the resumed attempt (the orphan keeps its pace)
    consumers()
    wait_for(lambda: job(job_id).state == DONE, timeout=40)
    v = job(job_id)
    starts = events(job_id, "start")
    assert v.attempts == 2 and [s["resumed_from"] is None for s in starts] == [True, False]
    resumed = starts[1]["resumed_from"]
    if engine_survives:  # the reaper asked the orphan to checkpoint where it was
        assert resumed == events(job_id, "stopped")[0]["step"] >= 12
    else:  # resumed from the last periodic checkpoint
        assert resumed % 5 == 0 and resumed >= 10
    assert results(job_id)["fake_state"] == reference_state(200)  # no step lost or repeated
    assert not pid_alive(engine["pid"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_consumer_checkpoints_the_running_job(consumers, monkeypatch, sig):
    monkeypatch.setenv("FAKE_STEP_S", "0.04")
    job_id = api.submit("alice", spec(steps=200, every=100))
    first = consumers()
    wait_for(lambda: job(job_id).step >= 5, timeout=30)
    engine = record(job_id)
    assert first.stop(sig) == 0
    v = job(job_id)
    stopped = events(job_id, "stopped")
    assert v.state == INTERRUPTED and v.resumable and len(stopped) == 1
    assert v.checkpoint_step == stopped[0]["step"] >= 5
    assert not pid_alive(engine["pid"])

    monkeypatch.setenv("FAKE_STEP_S", "0.002")
    consumers()
    wait_for(lambda: job(job_id).state == DONE, timeout=30)
    assert events(job_id, "start")[-1]["resumed_from"] == stopped[0]["step"]
    assert results(job_id)["fake_state"] == reference_state(200)


def test_two_jobs_on_one_worker_never_overlap(consumers, monkeypatch):
    monkeypatch.setenv("FAKE_STEP_S", "0.02")
    a, b = api.submit("alice", spec(steps=10)), api.submit("alice", spec(steps=10))
    consumers(workers=1)
    wait_for(lambda: job(a).state == DONE and job(b).state == DONE, timeout=30)
    spans = sorted((events(j, "start")[0]["t"], events(j, "done")[0]["t"]) for j in (a, b))
    assert spans[0][1] <= spans[1][0]
    first, second = sorted((job(a), job(b)), key=lambda v: v.started_at)
    assert first.id == a  # FIFO
    assert first.finished_at <= second.started_at


def test_embedded_consumer_runs_from_a_non_main_thread(home, monkeypatch):
    import threading

    from tasks.worker import start_embedded_consumer

    queue.set_huey(None)
    monkeypatch.setenv("FAKE_STEP_S", "0.03")
    handles = []
    starter = threading.Thread(target=lambda: handles.append(start_embedded_consumer()))
    starter.start()
    starter.join()
    handle = handles[0]
    try:
        done = api.submit("alice", spec(steps=4))
        wait_for(lambda: job(done).state == DONE, timeout=20)
        long = api.submit("alice", spec(steps=200, every=100))
        wait_for(lambda: job(long).step >= 3, timeout=20)
    finally:
        handle.stop()
    assert not handle.running
    v = job(long)
    assert v.state == INTERRUPTED and v.checkpoint_step == events(long, "stopped")[0]["step"]
