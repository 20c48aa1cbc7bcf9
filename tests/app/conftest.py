"""Fixtures for the app's API-level tests: the real app, tasks layer and huey consumer in-process."""
from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FAKE_ENGINE = REPO / "tests" / "tasks" / "fake_engine.py"
FAST_ENV = {
    "LDIFS_POLL_S": "0.05",
    "LDIFS_KILL_GRACE_S": "1",
    "LDIFS_STOP_TIMEOUT_S": "20",
    "LDIFS_REAPER_INTERVAL_S": "1",
    "LDIFS_QUEUE_POLL_MAX_S": "0.1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(*, auth: str | None = None, worker: bool = True, max_file_size: str | None = None,
          poll_s: float = 0.5) -> Iterator[str]:
    """Launch the real app (tasks.api + an embedded consumer) on a free port; yields its URL."""
    from app.main import LaunchSettings, auth_mode, build_app, launch_kwargs
    from tasks import jobs, queue
    from tasks.settings import get_settings

    get_settings.cache_clear()
    queue.set_huey(None)
    jobs.reset_shutdown()
    settings = get_settings()
    s = LaunchSettings.from_env(port=free_port(), auth=auth, exports_dir=str(settings.exports_dir),
                                home=str(settings.home),
                                max_file_size=max_file_size or "500mb")
    kwargs = launch_kwargs(s)
    demo = build_app(auth=auth_mode(s), poll_s=poll_s)
    consumer = None
    if worker:
        from tasks.worker import start_embedded_consumer

        consumer = start_embedded_consumer(settings=settings)
    kwargs.update(prevent_thread_lock=True, quiet=True)
    kwargs["app_kwargs"] = {**kwargs.get("app_kwargs", {}), "routes": demo.ldifs_json_routes}
    _app, url, _ = demo.launch(**kwargs)
    try:
        yield url
    finally:
        demo.close()
        if consumer is not None:
            consumer.stop(graceful=True, timeout=30)
        queue.set_huey(None)
        get_settings.cache_clear()


@pytest.fixture
def fast_env(monkeypatch):
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    for k in ("LDIFS_QUEUE_URL", "LDIFS_GPU_IDS", "LDIFS_WORKERS", "LDIFS_AUTH", "LDIFS_AUTH_FILE", "SPACE_ID"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def fake_engine(fast_env, monkeypatch):
    """The tasks layer's contract-following stand-in engine (milliseconds per run, no torch)."""
    monkeypatch.setenv("LDIFS_ENGINE_CMD", f"{sys.executable} {FAKE_ENGINE}")
    monkeypatch.setenv("FAKE_STEP_S", "0.05")
