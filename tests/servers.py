"""Real PostgreSQL and Redis servers for tests, on free loopback ports in temporary folders.

No fakes: ``initdb`` + ``pg_ctl`` (Debian's PostgreSQL binaries or ones on PATH; run as the
``postgres`` user when the tests run as root, since PostgreSQL refuses to run as root) and
``redis-server``. A missing binary skips the tests that need it with a reason; ``.ci/run``
installs both.
"""
from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen | None, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


# ---- PostgreSQL ---------------------------------------------------------------------------------
def pg_bin(name: str) -> str | None:
    """Path of a PostgreSQL server binary (PATH first, then Debian's versioned folders)."""
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return cand
    return None


@dataclass
class Postgres:
    datadir: Path
    port: int
    as_user: list[str]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, dbname: str = "ldifs", search_path: str | None = None) -> str:
        url = f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"
        return url + (f"?options=-csearch_path%3D{search_path}" if search_path else "")

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        import psycopg

        with psycopg.connect(self.url(dbname), autocommit=True) as con:
            con.execute(statement)

    def fresh_schema(self, dbname: str = "ldifs") -> str:
        """A URL whose tables live in a new, empty schema (a clean store per test, no new database)."""
        schema = "t_" + uuid.uuid4().hex[:16]
        self.sql(f"CREATE SCHEMA {schema}", dbname)
        return self.url(dbname, schema)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([*self.as_user, pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.datadir), *args],
                              check=check, capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        opts = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='{self.datadir}'"
                " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self.pg_ctl("-w", "-t", "60", "-o", opts, "-l", str(self.datadir / "server.log"), "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-w", "-m", mode, "stop", check=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[Postgres]:
    """``initdb`` into a temporary folder, start on a free port with a database ``ldifs``; stop and delete at the end."""
    import pytest

    pytest.importorskip("psycopg", reason="psycopg not installed (pip install -e '.[test]')")
    initdb = pg_bin("initdb")
    if initdb is None or pg_bin("pg_ctl") is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed; .ci/run installs them")
    root = Path(tempfile.mkdtemp(prefix="ldifs-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(root, "postgres")
    datadir = root / "data"
    try:
        subprocess.run([*as_user, initdb, "-D", str(datadir), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                        "--no-sync", "--no-instructions"], check=True, capture_output=True, text=True, timeout=120)
        pg = Postgres(datadir, free_port(), as_user)
        pg.start()
        pg.sql("CREATE DATABASE ldifs")
        try:
            yield pg
        finally:
            pg.stop("immediate")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- Redis ----------------------------------------------------------------------------------------
@dataclass
class Redis:
    dir: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart) on the same port and folder: the append-only file is replayed."""
        log = open(self.dir / "redis.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        _wait_port(self.port, self.proc, 20, "redis-server")
        import redis

        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 20
        while True:  # the port opens before the append-only file has been loaded
            try:
                client.ping()
                break
            except redis.exceptions.BusyLoadingError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save; only what the append-only file already holds survives."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


@contextlib.contextmanager
def redis_server() -> Iterator[Redis]:
    import pytest

    pytest.importorskip("redis", reason="the redis package is not installed (pip install -e '.[test]')")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed; .ci/run installs it")
    root = Path(tempfile.mkdtemp(prefix="ldifs-redis-"))
    r = Redis(root, free_port())
    try:
        r.start()
        yield r
    finally:
        r.stop()
        shutil.rmtree(root, ignore_errors=True)
