"""Connections for the job store: SQLite (stdlib ``sqlite3``) or PostgreSQL (psycopg 3).

The store writes plain SQL with ``?`` placeholders and reads rows by name or position; both backends
present that same small interface (``execute(sql, args)`` returning a cursor-like object with
``fetchone``, ``fetchall``, iteration and ``rowcount``), so the store's statements are written once.

Transactions (``tx``) are the only place where the backends differ in meaning, and they are made to
behave alike: SQLite's ``BEGIN IMMEDIATE`` serialises every writer of the file; on PostgreSQL a
transaction first takes a transaction-scoped advisory lock named by ``lock`` (the job's owner), which
serialises the read-check-write sequences of one user (quota counts, state checks) across every
process and host, while different users' transactions run in parallel.

Why psycopg alone and not SQLAlchemy Core: the store's SQL is already portable (no ORM, no generated
statements, compare-and-set ``UPDATE … WHERE state = ? AND attempts = ?``); keeping it as text keeps the
SQLite path exactly the stdlib code it was, and the PostgreSQL path is a 150-line adapter over one
well-kept driver instead of a second abstraction layer in every statement.
"""
from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ldifs_engine.errors import LdifsError

log = logging.getLogger("ldifs.store")

JOURNAL_MODES = ("wal", "delete")  # delete: for a store on a shared network filesystem (WAL needs one host)
DB_URL_SCHEMES = ("postgresql://", "postgres://")

# A migration: (version, description, SQL text with ";"-separated statements, or a function of the
# transaction's connection and the backend name — for data migrations that read and rewrite rows).
Migration = tuple[int, str, "str | Callable[[Any, str], None]"]


class StoreUnavailable(LdifsError):
    """The job store's database server cannot be reached (the message is one line, password-free)."""


class StoreDamaged(LdifsError):
    """The job store file is not a readable database (or was emptied); one line says what to do."""

    exit_code = 2


FRESH_FILE_S = 10.0  # a zero-length store younger than this is one another process is creating right now


def damaged_message(path: Path, why: str) -> str:
    """One line: what is wrong and what to do (history is not silently replaced by an empty store)."""
    return (f"the job store {path} is damaged ({why}); stop LDIFS Studio, move the file aside "
            f"(mv {path} {path}.damaged), restore it from a backup (or start without it for an empty job "
            "history), then start again — run folders in runs/ are not affected")


def check_sqlite_file(path: Path) -> None:
    """Refuse a store file that is empty (SQLite would silently treat it as a new, empty database) or does
    not start like a SQLite database. A file that does not exist yet is fine: this process creates it."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        return
    if st.st_size == 0:
        if time.time() - st.st_mtime < FRESH_FILE_S:
            return  # just created (by us or by a process starting next to us)
        raise StoreDamaged(damaged_message(path, "the file is empty"))
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise StoreDamaged(damaged_message(path, f"unreadable: {e.strerror}")) from None
    if head != b"SQLite format 3\x00":
        raise StoreDamaged(damaged_message(path, "not a SQLite database"))


def redact(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}").geturl()


class Database:
    """What the store needs from a backend."""

    name: str
    where: str  # a password-free description for messages

    def con(self) -> Any:
        raise NotImplementedError

    @contextmanager
    def tx(self, lock: str | None = None) -> Iterator[Any]:
        raise NotImplementedError
        yield

    def close(self) -> None:
        raise NotImplementedError

    def data_version(self) -> int | None:
        """Changes whenever anyone commits a write; None = this backend cannot tell cheaply."""
        return None

    def migrate(self, migrations: Sequence[Migration]) -> int:
        """Apply the migrations newer than the database's version, all in one transaction; returns the version.

        Concurrent starts are safe: the transaction holds the backend's write lock (SQLite) or a
        dedicated advisory lock (PostgreSQL), so the second process sees the first one's result.
        """
        versions = [v for v, _, _ in migrations]
        if len(set(versions)) != len(versions):
            dup = sorted({v for v in versions if versions.count(v) > 1})
            raise ValueError(f"job store migrations: version(s) {dup} used twice; give each migration its own number")
        newest = max(versions)
        with self.tx(lock="ldifs:migrations") as con:
            con.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL, applied_at DOUBLE PRECISION)")
            current = con.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
            if current > newest:
                raise LdifsError(f"the job store ({self.where}) has schema version {current}, newer than this "
                                 f"version of LDIFS Studio understands ({newest}); upgrade LDIFS Studio")
            for version, what, step in sorted(migrations, key=lambda m: m[0]):
                if version <= current:
                    continue
                if callable(step):
                    step(con, self.name)
                else:
                    for stmt in filter(str.strip, step.split(";")):
                        con.execute(stmt)
                con.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, time.time()))
                log.info("job store %s: applied migration %d (%s)", self.where, version, what)
            return max(current, newest)


# ---- SQLite ------------------------------------------------------------------------------------
class SqliteDatabase(Database):
    """One connection per thread; ``tx`` is ``BEGIN IMMEDIATE`` (one writer at a time, consistent reads)."""

    name = "sqlite"

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0, journal_mode: str = "wal"):
        if journal_mode not in JOURNAL_MODES:
            raise ValueError(f"journal_mode must be one of {JOURNAL_MODES}, got {journal_mode!r}")
        self.path = Path(path)
        self.where = str(self.path)
        self.busy_timeout_s = busy_timeout_s
        self.journal_mode = journal_mode
        self._local = threading.local()
        self._version_con: sqlite3.Connection | None = None
        self._version_lock = threading.Lock()

    def data_version(self) -> int:
        """SQLite's ``PRAGMA data_version`` on a connection of its own that never writes, so every commit of
        every other connection (this process's threads included) moves it. Microseconds per call."""
        with self._version_lock:
            if self._version_con is None:
                self._version_con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None,
                                                    check_same_thread=False)
            return self._version_con.execute("PRAGMA data_version").fetchone()[0]

    def con(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            con.row_factory = sqlite3.Row
            con.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            _retry_locked(lambda: con.execute(f"PRAGMA journal_mode = {self.journal_mode}"), self.busy_timeout_s)
            con.execute("PRAGMA synchronous = NORMAL")
            self._local.con = con
        return con

    @contextmanager
    def tx(self, lock: str | None = None) -> Iterator[sqlite3.Connection]:
        con = self.con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None


def _retry_locked(fn, timeout_s: float) -> Any:
    """Switching a fresh database to WAL needs a write lock; retry briefly when another process has it."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# ---- PostgreSQL ----------------------------------------------------------------------------------
class Row(dict):
    """A row readable by column name (``row["state"]``) or position (``row[0]``), like ``sqlite3.Row``."""

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int):
            return list(self.values())[key]
        return super().__getitem__(key)


def _row_factory(cursor: Any) -> Callable[[Sequence[Any]], Row]:
    names = [c.name for c in cursor.description or ()]
    return lambda values: Row(zip(names, values))


class _Result:
    """Rows fetched eagerly (the connection goes back to the pool before the caller reads them)."""

    def __init__(self, rows: list[Row], rowcount: int):
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Row]:
        return list(self._rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)


def _pg_sql(sql: str, args: Sequence[Any] | None) -> tuple[str, Sequence[Any] | None]:
    """``?`` placeholders → psycopg's ``%s`` (the store's SQL has no ``?`` or ``%`` in literals)."""
    if not args:
        return sql, None
    return sql.replace("%", "%%").replace("?", "%s"), tuple(args)


class _TxCon:
    """The connection of one PostgreSQL transaction."""

    def __init__(self, db: PostgresDatabase, conn: Any):
        self._db, self._conn = db, conn

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> _Result:
        q, a = _pg_sql(sql, args)
        with self._db._errors():
            cur = self._conn.execute(q, a)
            return _Result(cur.fetchall() if cur.description else [], cur.rowcount)


class _AutoCon:
    """Single statements in autocommit mode, each on a connection borrowed from the pool."""

    def __init__(self, db: PostgresDatabase):
        self._db = db

    def execute(self, sql: str, args: Sequence[Any] | None = None) -> _Result:
        q, a = _pg_sql(sql, args)

        def run(conn: Any) -> _Result:
            cur = conn.execute(q, a)
            return _Result(cur.fetchall() if cur.description else [], cur.rowcount)

        return self._db._with_connection(run)


class PostgresDatabase(Database):
    """A small pool of autocommit psycopg connections (created on demand, at most ``pool_size``)."""

    name = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 8, connect_timeout_s: int = 5, wait_s: float = 30.0):
        try:
            import psycopg
        except ImportError:
            raise LdifsError("LDIFS_DB_URL: a PostgreSQL job store needs the psycopg package "
                             "(pip install 'ldifs-studio[servers]')") from None
        self._psycopg = psycopg
        self.url = url
        parts = urlsplit(url)
        self.where = f"PostgreSQL at {parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
        self.connect_timeout_s, self.wait_s = connect_timeout_s, wait_s
        self._idle: list[Any] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(pool_size)

    # -- connections
    def _connect(self) -> Any:
        with self._errors():
            return self._psycopg.connect(self.url, autocommit=True, row_factory=_row_factory,
                                         connect_timeout=self.connect_timeout_s)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Connection-level failures → ``StoreUnavailable`` with one line; anything else passes through."""
        try:
            yield
        except self._psycopg.OperationalError as e:
            # psycopg: 'connection failed: connection to server at "h", port p failed: Connection refused\n\tIs the…'
            first = (str(e).strip().splitlines() or [type(e).__name__])[0].rsplit(" failed: ", 1)[-1].strip()
            raise StoreUnavailable(f"cannot reach the job store ({self.where}): {first}") from e

    @contextmanager
    def _borrow(self) -> Iterator[tuple[Any, bool]]:
        """(connection, reused): a pooled connection is returned after use unless it broke."""
        if not self._slots.acquire(timeout=self.wait_s):
            raise StoreUnavailable(f"the job store ({self.where}) is busy: no free connection after {self.wait_s:.0f} s")
        conn = None
        try:
            with self._lock:
                while self._idle and conn is None:
                    c = self._idle.pop()
                    conn = None if (c.closed or c.broken) else c
            reused = conn is not None
            conn = conn or self._connect()
            yield conn, reused
        finally:
            if conn is not None:
                if conn.closed or conn.broken or conn.info.transaction_status != 0:  # 0: idle
                    conn.close()
                else:
                    with self._lock:
                        self._idle.append(conn)
            self._slots.release()

    def _with_connection(self, fn: Callable[[Any], Any]) -> Any:
        """Run ``fn(conn)``; a pooled connection that turns out dead (server restarted) is replaced once."""
        for tries_left in (1, 0):
            with self._borrow() as (conn, reused):
                try:
                    with self._errors():
                        return fn(conn)
                except StoreUnavailable:
                    if not (reused and conn.broken and tries_left):
                        raise
        raise AssertionError("unreachable")

    def con(self) -> _AutoCon:
        return _AutoCon(self)

    @contextmanager
    def tx(self, lock: str | None = None) -> Iterator[_TxCon]:
        for tries_left in (1, 0):
            with self._borrow() as (conn, reused):
                try:
                    with self._errors():
                        conn.execute("BEGIN")
                        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                                     (f"ldifs:{lock or 'all'}",))
                except StoreUnavailable:
                    if reused and conn.broken and tries_left:
                        continue  # a stale pooled connection: nothing ran yet, so try a fresh one
                    raise
                try:
                    yield _TxCon(self, conn)
                except BaseException:
                    if not conn.broken:
                        conn.execute("ROLLBACK")
                    raise
                with self._errors():
                    conn.execute("COMMIT")
                return

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the server answers."""
        self._with_connection(lambda conn: conn.execute("SELECT 1"))

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for c in idle:
            c.close()


def open_database(*, db_url: str = "", path: str | Path | None = None, journal_mode: str = "wal",
                  busy_timeout_s: float = 30.0) -> Database:
    """PostgreSQL when ``db_url`` is set, else SQLite at ``path``."""
    if db_url:
        if not db_url.startswith(DB_URL_SCHEMES):
            raise LdifsError(f"LDIFS_DB_URL: expected postgresql://user:password@host:port/dbname, got {redact(db_url)!r}")
        return PostgresDatabase(db_url)
    if path is None:
        raise ValueError("open_database needs db_url or path")
    return SqliteDatabase(path, busy_timeout_s=busy_timeout_s, journal_mode=journal_mode)
