"""Suite-wide fixtures: every test runs offline with its own LDIFS_HOME."""
from __future__ import annotations

import os

import pytest

from tests.servers import postgres_server, redis_server

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported: see ldifs_engine/__init__.py
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """A fresh data root per test, so caches, jobs and uploads never leak between tests."""
    home = tmp_path / "ldifs-home"
    monkeypatch.setenv("LDIFS_HOME", str(home))
    monkeypatch.delenv("LDIFS_CACHE_DIR", raising=False)
    try:
        from tasks.settings import get_settings

        get_settings.cache_clear()
    except Exception:
        pass
    yield home
    try:
        from tasks.settings import get_settings

        get_settings.cache_clear()
    except Exception:
        pass


# ---- real database and queue servers (started once per session, on free loopback ports) ------------
@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own (``initdb`` in a temp folder); skipped if its binaries are missing."""
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="session")
def redis_srv():
    """A ``redis-server`` with its append-only file on (fsync always); skipped if it is not installed."""
    with redis_server() as r:
        yield r
