"""Several workers, one queue, as on several machines: real PostgreSQL and Redis, the web app without a
worker, and two worker processes that go by different host names, each with its own scratch folder
(LDIFS_HOME) and the same shared runs volume (LDIFS_SHARED_DIR). One worker is SIGKILLed mid-job; its
engine outlives it (as on a machine whose worker process died): every job still ends DONE exactly once,
the killed one resumes from a checkpoint on the other worker, and no two engines ever run one job at once.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.tasks.conftest import wait_for


REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = REPO / "tests" / "tasks" / "fake_engine.py"
STALE_S = 3.0
STEPS = 200

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def reference_state(steps: int) -> float:
    """The fake engine's final state for a run in which no step was lost or repeated."""
    return round(sum((s % 7) * 0.25 + s * 1e-3 for s in range(1, steps + 1)), 9)


def engine_spans(events: list[dict]) -> list[tuple[int, float, float]]:
    """(pid, first t, last t) per engine process, in file order; a pid that shows up in two separate
    stretches of the file means two engines wrote at the same time."""
    spans: list[list] = []
    pid = None
    for ev in events:
        if ev["type"] == "start":
            pid = ev["pid"]
            assert all(s[0] != pid for s in spans), "an engine's events are interleaved with another's"
            spans.append([pid, ev["t"], ev["t"]])
        elif spans:
            spans[-1][2] = ev["t"]
    return [tuple(s) for s in spans]


@pytest.fixture
def cluster(tmp_path, monkeypatch, postgres, redis_srv):
    """PostgreSQL + Redis + env shared by the web box and the GPU boxes."""
    import redis

    redis.Redis.from_url(redis_srv.url).flushall()
    env = {
        "LDIFS_DB_URL": postgres.fresh_schema(), "LDIFS_QUEUE_URL": redis_srv.url,
        "LDIFS_QUEUE_SECRET": "test-secret-0123456789", "LDIFS_SHARED_DIR": str(tmp_path / "shared-volume"),
        "LDIFS_ENGINE_CMD": f"{sys.executable} {FAKE_ENGINE}", "LDIFS_POLL_S": "0.05", "LDIFS_KILL_GRACE_S": "1",
        "LDIFS_STOP_TIMEOUT_S": "20", "LDIFS_HEARTBEAT_STALE_S": str(STALE_S), "LDIFS_REAPER_INTERVAL_S": "0.3",
        "LDIFS_QUEUE_POLL_MAX_S": "0.1",
        "LDIFS_HOME": str(tmp_path / "web-box"),  # the web box's local scratch (the workers get their own)
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("LDIFS_GPU_IDS", "LDIFS_WORKERS", "LDIFS_AUTH", "LDIFS_AUTH_FILE", "SPACE_ID", "LDIFS_HOST_NAME"):
        monkeypatch.delenv(k, raising=False)
    return tmp_path


def start_worker(tmp_path: Path, name: str, step_s: float) -> tuple[subprocess.Popen, Path]:
    log = tmp_path / f"{name}.log"
    env = {**os.environ, "LDIFS_HOME": str(tmp_path / name), "LDIFS_HOST_NAME": name, "FAKE_STEP_S": str(step_s)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    return proc, log


def test_two_workers_share_one_queue_and_survive_a_sigkill(cluster):
    from gradio_client import Client

    from tasks.reaper import pid_alive
    from tasks.settings import get_settings
    from tasks.store import DONE, RUNNING, open_store
    from tests.app.conftest import serve

    tmp = cluster
    # box-a is the slower machine, so the job it holds is far from done when it dies (robust under load)
    workers = {name: start_worker(tmp, name, step_s) for name, step_s in (("box-a", 0.06), ("box-b", 0.02))}
    try:
        with serve(worker=False) as url:  # the web box: the real app, no embedded worker
            client = Client(url, verbose=False)
            spec = yaml.safe_dump({"name": "shared", "optim": {"steps": STEPS, "checkpoint_every": 10,
                                                               "batch_size": 8}})
            ids = [client.predict(spec, 0, api_name="/submit") for _ in range(3)]
            store = open_store(get_settings())

            def running_on(host):
                for j in ids:
                    r = store.record(_owner(store, j), j)
                    if r["state"] == RUNNING and r["host"] == host and (r["step"] or 0) >= 15:
                        return r
                return None

            wait_for(lambda: any(store.record(_owner(store, j), j)["host"] == "box-b" for j in ids), timeout=60)
            victim = wait_for(lambda: running_on("box-a"), timeout=60)
            workers["box-a"][0].send_signal(signal.SIGKILL)  # the worker dies; its engine does not
            workers["box-a"][0].wait()
            killed_at = time.time()
            assert pid_alive(victim["pid"])  # its engine runs on as an orphan, as on a machine whose worker died

            def all_done():
                states = [store.record(_owner(store, j), j)["state"] for j in ids]
                assert "FAILED" not in states, [store.record(_owner(store, j), j)["message"] for j in ids]
                return all(s == DONE for s in states)

            wait_for(all_done, timeout=90)
            statuses = [client.predict(j, api_name="/status") for j in ids]
        assert [s["state"] for s in statuses] == [DONE] * 3

        runs = get_settings().runs_dir
        assert runs == tmp / "shared-volume" / "runs"
        for j in ids:
            events = [json.loads(ln) for ln in (runs / j / "events.jsonl").read_text().splitlines()]
            assert [e["type"] for e in events].count("done") == 1  # DONE exactly once
            spans = engine_spans(events)
            assert all(a[2] <= b[1] for a, b in zip(spans, spans[1:]))  # one engine at a time
            result = json.loads((runs / j / "results.json").read_text())
            assert result["fake_state"] == reference_state(STEPS)  # no step lost or repeated
            rec = store.record(_owner(store, j), j)
            if j != victim["id"]:
                assert rec["attempts"] == 1 and len(spans) == 1

        rec = store.record(victim["owner"], victim["id"])
        events = [json.loads(ln) for ln in (runs / victim["id"] / "events.jsonl").read_text().splitlines()]
        starts = [e for e in events if e["type"] == "start"]
        stopped = [e for e in events if e["type"] == "stopped"]
        assert rec["attempts"] == 2 and rec["host"] == "box-b" and len(starts) == 2
        # the orphaned engine was asked (through the shared volume) to checkpoint; the resumed one started there
        assert len(stopped) == 1 and starts[1]["resumed_from"] == stopped[0]["step"] >= victim["step"]
        # taken over within the stale window (plus a reaper pass and the engine's own stop); it then waits
        # its turn in the queue behind the jobs submitted before it
        assert stopped[0]["t"] - killed_at < STALE_S + 5
        assert rec["message"].startswith("Done")
        log_b = workers["box-b"][1].read_text()
        assert "Traceback" not in log_b and "re-enqueued" not in log_b  # no message was lost
    finally:
        for proc, _ in workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        for name, (_, log) in workers.items():
            print(f"---- {name}\n{log.read_text()[-3000:]}")
        _kill_leftover_engines(tmp / "shared-volume" / "runs")


def _kill_leftover_engines(runs: Path) -> None:
    """Never leave an engine behind, whatever failed (each runs in its own process group)."""
    from tasks.reaper import pid_alive

    for events_path in runs.glob("*/events.jsonl"):
        for line in events_path.read_text().splitlines():
            ev = json.loads(line)
            if ev["type"] == "start" and pid_alive(ev["pid"], must_contain=str(events_path.parent)):
                os.killpg(ev["pid"], signal.SIGKILL)


def _owner(store, job_id: str) -> str:
    """The owner the app recorded (the local user when auth is off)."""
    row = store._con().execute("SELECT owner FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return row[0]
