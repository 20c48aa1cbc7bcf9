"""Fixtures: a private LDIFS_HOME, the fake engine, and huey in immediate or manual mode."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tasks import jobs, queue
from tasks.settings import get_settings

FAKE_ENGINE = Path(__file__).with_name("fake_engine.py")
REPO = Path(__file__).resolve().parents[2]


def spec(steps: int = 6, every: int = 2, **optim) -> dict:
    """A small valid spec; the fake engine reads steps / checkpoint_every / batch sizes from it."""
    return {"name": "fake run", "optim": {"steps": steps, "checkpoint_every": every, "batch_size": 64, **optim}}


def wait_for(pred, timeout: float = 15.0, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")


FAST_ENV = {
    "LDIFS_ENGINE_CMD": f"{sys.executable} {FAKE_ENGINE}",
    "LDIFS_POLL_S": "0.02",
    "LDIFS_KILL_GRACE_S": "0.5",
    "LDIFS_STOP_TIMEOUT_S": "5",
    "LDIFS_HEARTBEAT_STALE_S": "5",
    "LDIFS_REAPER_INTERVAL_S": "0.2",
    "LDIFS_QUEUE_POLL_MAX_S": "0.1",
    "FAKE_STEP_S": "0.005",
}


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A fresh LDIFS_HOME with fast intervals and the fake engine."""
    h = tmp_path / "home"
    monkeypatch.setenv("LDIFS_HOME", str(h))
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("LDIFS_QUEUE_URL", "LDIFS_DB_URL", "LDIFS_SHARED_DIR", "LDIFS_HOST_NAME", "LDIFS_GPU_IDS", "LDIFS_WORKERS", "LDIFS_CACHE_DIR", "LDIFS_DATASETS_DIR",
              "FAKE_FAIL", "FAKE_OOM_AT", "FAKE_SELF_KILL_AT", "FAKE_HANG_AT", "FAKE_IGNORE_STOP"):
        monkeypatch.delenv(k, raising=False)
    get_settings.cache_clear()
    queue.set_huey(None)
    jobs.reset_shutdown()
    yield h
    get_settings.cache_clear()
    queue.set_huey(None)
    jobs.reset_shutdown()


@pytest.fixture
def immediate(home):
    """huey runs each task inline when it is enqueued."""
    h = queue.make_memory_huey(immediate=True)
    queue.set_huey(h)
    return h


@pytest.fixture
def manual(home):
    """huey keeps tasks until the test runs them with ``queue.run_pending()``."""
    h = queue.make_memory_huey(immediate=False)
    queue.set_huey(h)
    return h


# ---- the store on each backend (the servers are session fixtures in tests/conftest.py) ---------------
@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """The store's location on each backend: "" (SQLite under the test's home) or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return ""
    return request.getfixturevalue("postgres").fresh_schema()


@pytest.fixture(params=["sqlite", "postgresql"])
def store_backend(request, home, monkeypatch) -> str:
    """Run a test module on both job store backends: ``pytestmark = pytest.mark.usefixtures("store_backend")``."""
    if request.param == "postgresql":
        monkeypatch.setenv("LDIFS_DB_URL", request.getfixturevalue("postgres").fresh_schema())
    else:
        monkeypatch.delenv("LDIFS_DB_URL", raising=False)
    get_settings.cache_clear()
    return request.param
