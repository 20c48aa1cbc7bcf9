"""The shared runs volume check at worker start, and the one-line back-off helper (both job store backends)."""
from __future__ import annotations

import dataclasses
import logging

import pytest

from tasks import cli_jobs, servers
from tasks.settings import get_settings
from tasks.store import StoreUnavailable


@pytest.fixture
def settings(home, db_url, monkeypatch):
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


def test_a_worker_without_the_shared_volume_refuses_to_start_in_one_line(settings, tmp_path, monkeypatch, capsys):
    servers.check_runs_volume(settings)  # the web box started first and marked the volume
    monkeypatch.setenv("LDIFS_SHARED_DIR", str(tmp_path / "empty-mount-point"))
    get_settings.cache_clear()
    assert cli_jobs.main(["worker"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the runs folder ") and "\n" not in err
    assert "LDIFS_SHARED_DIR" in err and "DEPLOY-workers.md" in err


def test_backoff_doubles_logs_once_per_round_and_restarts_for_another_server(caplog, home):
    caplog.set_level(logging.WARNING, "ldifs.worker")
    b = servers.Backoff(first=0.01, cap=0.04)
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
