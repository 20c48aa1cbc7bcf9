"""The durable job store: one SQLite table (WAL) that owns the truth about every job.

Huey only carries job ids, and a worker that dies loses the one it held, so everything a user sees
about a job, and every change of state, goes through here. Transitions are compare-and-set: one
UPDATE whose WHERE names the expected state and attempt, so two workers, or a worker and the reaper,
can race without harm (the loser's UPDATE matches no row).

Every read and write a user can cause takes the owner: another user's job is ``JobNotFound``, exactly
like a missing one. The two system-wide queries the reaper needs end in ``_all``.
"""
from __future__ import annotations

import copy
import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ldifs_engine.errors import LdifsError

from .db import (  # noqa: F401 — re-exported
    JOURNAL_MODES,
    Database,
    Migration,
    StoreDamaged,
    StoreUnavailable,
    check_sqlite_file,
    damaged_message,
    open_database,
)

if TYPE_CHECKING:
    from .settings import Settings

QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED = (
    "QUEUED", "RUNNING", "DONE", "FAILED", "CANCELLED", "INTERRUPTED")
STATES = (QUEUED, RUNNING, DONE, FAILED, CANCELLED, INTERRUPTED)
PENDING = (QUEUED, INTERRUPTED)  # waiting for a worker (INTERRUPTED = will resume from a checkpoint)
FINAL = (DONE, FAILED, CANCELLED)
JOB_ID = re.compile(r"^[0-9a-f]{32}$")
CANCEL_MODES = ("stop", "kill")


# Stored phase → the words of JobView.phase (rows written before phases were renamed keep working).
PHASE_NAMES = {"starting": "loading", "start": "loading", "load": "loading", "stage": "loading",
               "before_eval": "evaluating_before", "sanity": "fine_tuning", "train": "fine_tuning",
               "after_eval": "evaluating_after", "wise_ft": "wise_ft", "write": "writing_results", "done": "done",
               "merge": "merging", "push": "uploading"}


class JobNotFound(LdifsError):
    """No job with this id belongs to the acting user (another user's job looks exactly the same)."""


class QuotaExceeded(LdifsError):
    """A per-user limit (queued or running jobs, storage) would be exceeded."""


class InvalidState(LdifsError):
    """The job is not in a state that allows the operation (e.g. resuming a finished run)."""


@dataclass(frozen=True)
class JobView:
    """What a user may see about one job (the contract of ``tasks.api``)."""

    id: str
    owner: str
    state: str
    spec: dict
    spec_hash: str
    title: str
    method: str
    target: str
    priority: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    attempts: int
    heartbeat_at: float | None
    step: int
    total_steps: int | None
    eta_s: float | None
    samples_per_s: float | None
    checkpoint_step: int | None
    message: str
    backoffs: list = field(default_factory=list)
    result_path: str | None = None
    phase: str | None = None
    cancel_requested: str | None = None  # "stop" | "kill" while a requested stop is under way
    phase_progress: float | None = None  # the current phase's own progress (0..1), None when it has none
    group: str | None = None  # seed-repeat group id shared by the jobs of one ``seeds: [...]`` spec

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    @property
    def resumable(self) -> bool:
        """``resume`` would be accepted (the checkpoint itself is checked by ``resume``)."""
        return self.state in (CANCELLED, INTERRUPTED) or (self.state == FAILED and self.checkpoint_step is not None)

    def to_dict(self) -> dict[str, Any]:
        d = copy.deepcopy(asdict(self))
        d["resumable"] = self.resumable
        return d


# Types are spelled so both backends read them right: SQLite maps DOUBLE PRECISION / BIGINT to its REAL /
# INTEGER affinities; PostgreSQL's REAL would be 4-byte floats (timestamps need 8).
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
  id TEXT PRIMARY KEY,
  owner TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ({", ".join(repr(s) for s in STATES)})),
  spec_json TEXT NOT NULL,
  spec_hash TEXT NOT NULL,
  title TEXT NOT NULL DEFAULT '',
  method TEXT NOT NULL DEFAULT '',
  target TEXT NOT NULL DEFAULT '',
  priority BIGINT NOT NULL DEFAULT 0,
  created_at DOUBLE PRECISION NOT NULL,
  started_at DOUBLE PRECISION,
  finished_at DOUBLE PRECISION,
  attempts BIGINT NOT NULL DEFAULT 0,
  crashes BIGINT NOT NULL DEFAULT 0,
  heartbeat_at DOUBLE PRECISION,
  phase TEXT,
  step BIGINT NOT NULL DEFAULT 0,
  total_steps BIGINT,
  eta_s DOUBLE PRECISION,
  samples_per_s DOUBLE PRECISION,
  checkpoint_step BIGINT,
  message TEXT NOT NULL DEFAULT '',
  log_tail TEXT NOT NULL DEFAULT '[]',
  backoffs TEXT NOT NULL DEFAULT '[]',
  run_dir TEXT NOT NULL,
  result_path TEXT,
  task_id TEXT,
  host TEXT,
  worker_pid BIGINT,
  worker_start BIGINT,
  pid BIGINT,
  pgid BIGINT,
  events_offset BIGINT NOT NULL DEFAULT 0,
  cancel_mode TEXT,
  cancel_at DOUBLE PRECISION,
  exit_code BIGINT
);
CREATE INDEX IF NOT EXISTS jobs_owner_created ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state);
"""

# Applied in order on start (``Database.migrate``), on SQLite and PostgreSQL alike: a new column or
# index is a new entry here (portable SQL, or a function ``(con, backend_name)`` for data rewrites).
# Seed repeats share a group id; phase_progress is the current phase's own progress (0..1).
_GROUPS_AND_PHASE_PROGRESS = """
ALTER TABLE jobs ADD COLUMN group_id TEXT;
ALTER TABLE jobs ADD COLUMN phase_progress DOUBLE PRECISION;
CREATE INDEX IF NOT EXISTS jobs_owner_group ON jobs (owner, group_id)
"""

def stored_path(root: Path | None, path: str | Path | None) -> str | None:
    """How the store keeps a path: relative to the data root (``LDIFS_HOME``, or ``LDIFS_SHARED_DIR``)
    when it lies inside it — so a copied or moved data folder keeps working — else absolute."""
    if path is None:
        return None
    p = Path(path)
    if root is not None and p.is_absolute():
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(p)


def resolved_path(root: Path | None, stored: str | None) -> str | None:
    """The absolute path of a stored one (relative ones are under the data root of this process)."""
    if stored is None or root is None or Path(stored).is_absolute():
        return stored
    return str(root / stored)


_UNDER_RUNS = re.compile(r"^.*?/(runs/[0-9a-f]{32}(?:/.*)?)$")


def _relative_run_paths(con: Any, backend: str) -> None:
    """Migration 5: absolute run paths written by older versions become relative to the data root.

    The old root is detected per row: whatever precedes ``runs/<job id>`` (how every run folder was
    made). Paths elsewhere (a folder the operator chose) stay absolute."""
    rows = con.execute("SELECT id, run_dir, result_path FROM jobs").fetchall()
    for row in rows:
        new = {}
        for col in ("run_dir", "result_path"):
            value = row[col]
            m = _UNDER_RUNS.match(value) if isinstance(value, str) and value.startswith("/") else None
            if m and m.group(1).split("/")[1] == row["id"]:
                new[col] = m.group(1)
        if new:
            sets = ", ".join(f"{c} = ?" for c in sorted(new))
            con.execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*[new[c] for c in sorted(new)], row["id"]))


MIGRATIONS: list[Migration] = [
    (1, "jobs table", _SCHEMA),
    (2, "seed-repeat groups and phase progress", _GROUPS_AND_PHASE_PROGRESS),
    (3, "installation facts (the runs volume's token)",
     "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"),
    # pollers list one user's jobs in some states, newest first (``list(states=...)``)
    (4, "index for state-filtered job lists",
     "CREATE INDEX IF NOT EXISTS jobs_owner_state_created ON jobs (owner, state, created_at)"),
    # (landed as a second "3"; idempotent, so stores that ran it under that number are safe to run it again)
    (5, "run paths relative to the data folder", _relative_run_paths),
]

# Columns the worker may write while a job runs (everything else changes only through transitions).
_PROGRESS = frozenset({"heartbeat_at", "phase", "phase_progress", "step", "total_steps", "eta_s", "samples_per_s",
                       "checkpoint_step", "message", "log_tail", "backoffs", "events_offset"})
_JSON_COLUMNS = frozenset({"log_tail", "backoffs"})


class JobStore:
    """Job records in SQLite or PostgreSQL (``db_url``). Thread-safe; several processes and hosts share it."""

    def __init__(self, path: str | Path | None = None, *, db_url: str = "", busy_timeout_s: float = 30.0,
                 journal_mode: str = "wal", data_root: str | Path | None = None):
        if journal_mode not in JOURNAL_MODES:
            raise ValueError(f"journal_mode must be one of {JOURNAL_MODES}, got {journal_mode!r}")
        self.path = Path(path) if path is not None and not db_url else None
        self.db_url = db_url
        self.busy_timeout_s = busy_timeout_s
        self.journal_mode = journal_mode
        self._db: Database = open_database(db_url=db_url, path=self.path, journal_mode=journal_mode,
                                           busy_timeout_s=busy_timeout_s)
        self.backend = self._db.name
        # Paths inside the data root are stored relative to it (a copied data folder keeps working).
        root = data_root if data_root is not None else (self.path.parent if self.path is not None else None)
        self.data_root = Path(root).resolve() if root is not None else None
        if self.path is not None:
            check_sqlite_file(self.path)  # a damaged or emptied store is named before it is used
        try:
            self._db.migrate(MIGRATIONS)
            if self.path is not None:  # damage in pages the migration did not read
                verdict = self._con().execute("PRAGMA quick_check").fetchone()[0]
                if verdict != "ok":
                    raise StoreDamaged(damaged_message(self.path, str(verdict)[:120]))
        except sqlite3.DatabaseError as e:
            if self.path is None or isinstance(e, sqlite3.OperationalError) and "malformed" not in str(e):
                raise  # locked, I/O: not damage
            raise StoreDamaged(damaged_message(self.path, str(e))) from None

    # ---- connections ---------------------------------------------------------------------
    def _con(self) -> Any:
        """A connection for single statements (each commits on its own)."""
        return self._db.con()

    def _tx(self, lock: str | None = None) -> Any:
        """One write transaction, taken up front so reads inside it are consistent.

        ``lock`` (the owner) scopes the serialisation on PostgreSQL; SQLite serialises every writer.
        """
        return self._db.tx(lock)

    def close(self) -> None:
        self._db.close()

    def data_version(self) -> int | None:
        """A number that changes whenever any connection, in any thread or process, commits a write; None
        when the backend cannot tell cheaply (PostgreSQL). A poller's cache asks this instead of re-querying."""
        return self._db.data_version()

    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the database answers."""
        self._con().execute("SELECT 1").fetchone()

    # ---- installation facts ------------------------------------------------------------------
    def meta_setdefault(self, key: str, value: str) -> str:
        """The stored value of ``key``, storing ``value`` first if there is none (first writer wins)."""
        con = self._con()
        con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", (key, value))
        return con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0]

    # ---- creating jobs -------------------------------------------------------------------
    def create(self, owner: str, jobs: Sequence[dict[str, Any]], *, max_queued: int) -> list[JobView]:
        """Insert QUEUED jobs (``id, spec, spec_hash, title, method, target, priority, run_dir``).

        The per-user limit on waiting jobs is checked in the same transaction, so parallel submits
        cannot overshoot it.
        """
        now = time.time()
        with self._tx(owner) as con:
            waiting = con.execute(
                f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ({_qs(PENDING)})", (owner, *PENDING)
            ).fetchone()[0]
            if waiting + len(jobs) > max_queued:
                raise QuotaExceeded(
                    f"queue limit reached: you have {waiting} job(s) waiting and may have at most {max_queued}; "
                    "wait for some to start or cancel them")
            for i, j in enumerate(jobs):
                con.execute(
                    "INSERT INTO jobs (id, owner, state, spec_json, spec_hash, title, method, target, priority,"
                    " created_at, run_dir, message, group_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (j["id"], owner, QUEUED, json.dumps(j["spec"], sort_keys=True), j["spec_hash"], j.get("title", ""),
                     j.get("method", ""), j.get("target", ""), int(j.get("priority", 0)), now + i * 1e-6,
                     stored_path(self.data_root, j["run_dir"]), "Waiting for a worker.", j.get("group")),
                )
        return [self.get(owner, j["id"]) for j in jobs]

    # ---- reading -------------------------------------------------------------------------
    def get(self, owner: str, job_id: str) -> JobView:
        return _view(self._row(owner, job_id), self.data_root)

    def record(self, owner: str, job_id: str) -> dict[str, Any]:
        """The full row, worker-side fields included (run dir, pids, cancel flag, attempts)."""
        return _decode(self._row(owner, job_id), self.data_root)

    def list(self, owner: str, *, states: Iterable[str] | None = None, limit: int = 200) -> list[JobView]:
        """The user's jobs, newest first."""
        sql, args = "SELECT * FROM jobs WHERE owner = ?", [owner]
        if states is not None:
            states = [s.upper() for s in states]
            bad = [s for s in states if s not in STATES]
            if bad:
                raise InvalidState(f"states: unknown state {bad[0]!r}; choose from {', '.join(STATES)}")
            sql += f" AND state IN ({_qs(states)})"
            args += states
        sql += " ORDER BY created_at DESC LIMIT ?"
        args.append(max(0, int(limit)))
        return [_view(r, self.data_root) for r in self._con().execute(sql, args)]

    def list_group(self, owner: str, group: str) -> list[JobView]:
        """The user's jobs of one seed-repeat group, oldest (= first seed) first; ``JobNotFound`` when
        the user has no such group (another user's group looks exactly the same)."""
        if not isinstance(group, str) or not JOB_ID.match(group):
            raise JobNotFound(f"no group {str(group)[:40]!r}")
        rows = self._con().execute("SELECT * FROM jobs WHERE owner = ? AND group_id = ? ORDER BY created_at",
                                   (owner, group)).fetchall()
        if not rows:
            raise JobNotFound(f"no group {group!r}")
        return [_view(r, self.data_root) for r in rows]

    def _row(self, owner: str, job_id: str) -> sqlite3.Row:
        if not isinstance(job_id, str) or not JOB_ID.match(job_id):
            raise JobNotFound(f"no job {str(job_id)[:40]!r}")
        row = self._con().execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
        if row is None:
            raise JobNotFound(f"no job {job_id!r}")
        return row

    # ---- worker side: compare-and-set transitions ---------------------------------------
    def set_task_id(self, owner: str, job_id: str, task_id: str | None) -> None:
        self._con().execute("UPDATE jobs SET task_id = ? WHERE id = ? AND owner = ?", (task_id, job_id, owner))

    def claim(self, owner: str, job_id: str, attempts: int, *, max_running: int, host: str, worker_pid: int,
              worker_start: int | None = None) -> str:
        """QUEUED/INTERRUPTED at ``attempts`` → RUNNING at ``attempts + 1``.

        Returns ``"claimed"``, ``"quota"`` (the owner already runs ``max_running`` jobs; try later) or
        ``"lost"`` (someone else claimed it, it was cancelled, or this message is stale).
        """
        now = time.time()
        with self._tx(owner) as con:
            running = con.execute("SELECT COUNT(*) FROM jobs WHERE owner = ? AND state = ?", (owner, RUNNING)).fetchone()[0]
            row = con.execute("SELECT state, attempts FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
            if row is None or row["state"] not in PENDING or row["attempts"] != attempts:
                return "lost"
            if running >= max_running:
                return "quota"
            cur = con.execute(
                "UPDATE jobs SET state = ?, attempts = attempts + 1, started_at = COALESCE(started_at, ?),"
                " finished_at = NULL, heartbeat_at = ?, host = ?, worker_pid = ?, worker_start = ?, pid = NULL, pgid = NULL,"
                " exit_code = NULL, eta_s = NULL, samples_per_s = NULL, phase = 'loading', phase_progress = NULL, message = ?"
                f" WHERE id = ? AND owner = ? AND state IN ({_qs(PENDING)}) AND attempts = ? AND cancel_mode IS NULL",
                (RUNNING, now, now, host, worker_pid, worker_start, "Starting the engine.", job_id, owner, *PENDING,
                 attempts),
            )
            return "claimed" if cur.rowcount == 1 else "lost"

    def set_child(self, owner: str, job_id: str, attempt: int, *, pid: int, pgid: int, events_offset: int) -> bool:
        cur = self._con().execute(
            "UPDATE jobs SET pid = ?, pgid = ?, events_offset = ?, heartbeat_at = ?"
            " WHERE id = ? AND owner = ? AND state = ? AND attempts = ?",
            (pid, pgid, events_offset, time.time(), job_id, owner, RUNNING, attempt))
        return cur.rowcount == 1

    def progress(self, owner: str, job_id: str, attempt: int, **fields: Any) -> bool:
        """Record progress of a RUNNING attempt (a stale attempt's update matches nothing)."""
        unknown = set(fields) - _PROGRESS
        if unknown:
            raise ValueError(f"not progress fields: {sorted(unknown)}")
        if not fields:
            return True
        sets, args = _assignments(fields)
        cur = self._con().execute(
            f"UPDATE jobs SET {sets} WHERE id = ? AND owner = ? AND state = ? AND attempts = ?",
            (*args, job_id, owner, RUNNING, attempt))
        return cur.rowcount == 1

    def cancel_mode(self, owner: str, job_id: str) -> str | None:
        row = self._con().execute("SELECT cancel_mode FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
        return row["cancel_mode"] if row else None

    def finish(self, owner: str, job_id: str, attempt: int, state: str, *, message: str,
               exit_code: int | None = None, result_path: str | None = None, **fields: Any) -> bool:
        """RUNNING at ``attempt`` → DONE / FAILED / CANCELLED."""
        if state not in FINAL:
            raise ValueError(f"finish() needs one of {FINAL}, got {state!r}")
        unknown = set(fields) - _PROGRESS
        if unknown:
            raise ValueError(f"not progress fields: {sorted(unknown)}")
        sets, args = _assignments({**_without(fields, "eta_s", "phase"), "message": message})
        cur = self._con().execute(
            f"UPDATE jobs SET {sets}, state = ?, finished_at = ?, exit_code = ?, result_path = ?, pid = NULL,"
            " pgid = NULL, eta_s = NULL, phase = ? WHERE id = ? AND owner = ? AND state = ? AND attempts = ?",
            (*args, state, time.time(), exit_code, stored_path(self.data_root, result_path),
             "done" if state == DONE else None,
             job_id, owner, RUNNING, attempt))
        return cur.rowcount == 1

    def interrupt(self, owner: str, job_id: str, attempt: int, *, message: str, crashed: bool,
                  max_attempts: int, exit_code: int | None = None, **fields: Any) -> str:
        """RUNNING at ``attempt`` → INTERRUPTED (to be resumed), or FAILED / CANCELLED.

        ``crashed`` counts towards ``max_attempts`` (a worker shutting down cleanly does not). A job
        whose user asked it to stop becomes CANCELLED instead. Returns ``"requeue"``, ``"failed"``,
        ``"cancelled"`` or ``"lost"``.
        """
        unknown = set(fields) - _PROGRESS
        if unknown:
            raise ValueError(f"not progress fields: {sorted(unknown)}")
        with self._tx(owner) as con:
            row = con.execute("SELECT state, attempts, crashes, cancel_mode, checkpoint_step FROM jobs"
                              " WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
            if row is None or row["state"] != RUNNING or row["attempts"] != attempt:
                return "lost"
            crashes = row["crashes"] + (1 if crashed else 0)
            if row["cancel_mode"]:
                state, outcome = CANCELLED, "cancelled"
                message = f"Stopped on request. {message}"
            elif crashed and crashes >= max_attempts:
                state, outcome = FAILED, "failed"
                message = (f"{message} Gave up after {crashes} interrupted attempt(s) (limit {max_attempts}); "
                           "use resume to try again.")
            else:
                state, outcome = INTERRUPTED, "requeue"
            sets, args = _assignments({**_without(fields, "eta_s", "phase"), "message": message})
            finished = time.time() if state in FINAL else None
            con.execute(
                f"UPDATE jobs SET {sets}, state = ?, crashes = ?, finished_at = ?, exit_code = ?, pid = NULL,"
                " pgid = NULL, eta_s = NULL, phase = NULL WHERE id = ? AND owner = ? AND state = ? AND attempts = ?",
                (*args, state, crashes, finished, exit_code, job_id, owner, RUNNING, attempt))
            return outcome

    # ---- user side: cancel and resume -----------------------------------------------------
    def request_cancel(self, owner: str, job_id: str, mode: str = "stop") -> tuple[JobView, bool]:
        """Cancel a waiting job at once, or flag a running one for its worker to stop.

        Returns the new view and whether it was cancelled while waiting (so its queue message should
        be revoked).
        """
        if mode not in CANCEL_MODES:
            raise InvalidState(f"mode: {mode!r} is not allowed; choose one of: {', '.join(CANCEL_MODES)}")
        now = time.time()
        with self._tx(owner) as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ? AND owner = ?", (job_id, owner)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            state = row["state"]
            if state in PENDING:
                kept = (f" The checkpoint at step {row['checkpoint_step']} is kept; resume to continue."
                        if row["checkpoint_step"] is not None else "")
                con.execute(
                    "UPDATE jobs SET state = ?, finished_at = ?, message = ?, phase = NULL"
                    " WHERE id = ? AND owner = ? AND state = ? AND attempts = ?",
                    (CANCELLED, now, "Cancelled before it ran." + kept if state == QUEUED else "Cancelled." + kept,
                     job_id, owner, state, row["attempts"]))
                was_waiting = True
            elif state == RUNNING:
                if row["cancel_mode"] != "kill":  # a kill is never softened back into a stop
                    con.execute(
                        "UPDATE jobs SET cancel_mode = ?, cancel_at = ?, message = ? WHERE id = ? AND owner = ?",
                        (mode, now, "Stopping: saving a checkpoint, then exiting." if mode == "stop"
                         else "Killing the run.", job_id, owner))
                was_waiting = False
            else:
                raise InvalidState(f"job {job_id} is already {state.lower()}; there is nothing to cancel")
        return self.get(owner, job_id), was_waiting

    def requeue(self, owner: str, job_id: str, *, max_queued: int, has_checkpoint: bool) -> JobView:
        """CANCELLED / INTERRUPTED / FAILED-with-a-checkpoint → QUEUED (fresh retry budget)."""
        with self._tx(owner) as con:
            row = con.execute("SELECT state, attempts, checkpoint_step FROM jobs WHERE id = ? AND owner = ?",
                              (job_id, owner)).fetchone()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}")
            state = row["state"]
            if state == FAILED and not has_checkpoint:
                raise InvalidState(f"job {job_id} failed before it saved a checkpoint; there is nothing to resume "
                                   "(fix the cause and submit the spec again)")
            if state not in (CANCELLED, INTERRUPTED, FAILED):
                raise InvalidState(f"job {job_id} is {state.lower()}; only cancelled, interrupted or failed jobs "
                                   "can be resumed")
            waiting = con.execute(
                f"SELECT COUNT(*) FROM jobs WHERE owner = ? AND state IN ({_qs(PENDING)}) AND id != ?",
                (owner, *PENDING, job_id)).fetchone()[0]
            if waiting + 1 > max_queued:
                raise QuotaExceeded(f"queue limit reached: you have {waiting} job(s) waiting and may have at most "
                                    f"{max_queued}")
            message = (f"Queued to resume from the checkpoint at step {row['checkpoint_step']}."
                       if has_checkpoint and row["checkpoint_step"] is not None else "Queued to run again.")
            con.execute(
                "UPDATE jobs SET state = ?, crashes = 0, cancel_mode = NULL, cancel_at = NULL, finished_at = NULL,"
                " exit_code = NULL, message = ?, phase = NULL WHERE id = ? AND owner = ? AND state = ? AND attempts = ?",
                (QUEUED, message, job_id, owner, state, row["attempts"]))
        return self.get(owner, job_id)

    # ---- system-wide (the reaper and queue recovery) ---------------------------------------
    def running_all(self) -> list[dict[str, Any]]:
        """Every RUNNING job of every user (the reaper checks that its worker is still alive)."""
        rows = self._con().execute("SELECT * FROM jobs WHERE state = ?", (RUNNING,))
        return [_decode(r, self.data_root) for r in rows]

    def pending_all(self) -> list[dict[str, Any]]:
        """Every QUEUED / INTERRUPTED job of every user, oldest first (to re-enqueue lost messages)."""
        return [_decode(r, self.data_root) for r in self._con().execute(
            f"SELECT * FROM jobs WHERE state IN ({_qs(PENDING)}) ORDER BY created_at", PENDING)]


# ---- helpers ---------------------------------------------------------------------------------
def _qs(items: Sequence[Any]) -> str:
    return ", ".join("?" * len(items))


def _without(fields: dict[str, Any], *names: str) -> dict[str, Any]:
    """``fields`` less the columns a statement sets itself (PostgreSQL rejects a column assigned twice;
    SQLite would keep the statement's own, rightmost value — the same result)."""
    return {k: v for k, v in fields.items() if k not in names}


def _assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    names = sorted(fields)
    args = [json.dumps(fields[n]) if n in _JSON_COLUMNS else fields[n] for n in names]
    return ", ".join(f"{n} = ?" for n in names), args


def _decode(row: sqlite3.Row, root: Path | None = None) -> dict[str, Any]:
    d = dict(row)
    d["run_dir"] = resolved_path(root, d["run_dir"])
    d["result_path"] = resolved_path(root, d.get("result_path"))
    d["spec"] = json.loads(d.pop("spec_json"))
    for k in _JSON_COLUMNS:
        d[k] = json.loads(d[k] or "[]")
    return d


def _view(row: sqlite3.Row, root: Path | None = None) -> JobView:
    d = _decode(row, root)
    return JobView(
        id=d["id"], owner=d["owner"], state=d["state"], spec=d["spec"], spec_hash=d["spec_hash"], title=d["title"],
        method=d["method"], target=d["target"], priority=d["priority"], created_at=d["created_at"],
        started_at=d["started_at"], finished_at=d["finished_at"], attempts=d["attempts"],
        heartbeat_at=d["heartbeat_at"], step=d["step"], total_steps=d["total_steps"], eta_s=d["eta_s"],
        samples_per_s=d["samples_per_s"], checkpoint_step=d["checkpoint_step"], message=d["message"],
        backoffs=d["backoffs"], result_path=d["result_path"], phase=_phase(d["state"], d["phase"]),
        cancel_requested=d["cancel_mode"] if d["state"] == RUNNING else None,
        phase_progress=d.get("phase_progress") if d["state"] == RUNNING else None, group=d.get("group_id"),
    )


def _phase(state: str, stored: str | None) -> str | None:
    """The job's phase in the contract's words (a stopped or failed job has none)."""
    if state in PENDING:
        return "queued"
    if state == DONE:
        return "done"
    if state != RUNNING:
        return None
    return PHASE_NAMES.get(stored or "", stored) or "loading"


_STORES: dict[str, JobStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(where: Settings | str | Path) -> JobStore:
    """The process-wide store of ``settings`` (PostgreSQL at its ``db_url``, else SQLite at its ``db_path``
    with its journal mode) or of a SQLite database path."""
    from .settings import Settings

    if isinstance(where, Settings) and where.db_url:
        key, kwargs = where.db_url, {"db_url": where.db_url, "data_root": where.shared_dir or where.home}
    else:
        path, journal = (where.db_path, where.db_journal_mode) if isinstance(where, Settings) else (where, "wal")
        key, kwargs = str(Path(path).resolve()), {"path": Path(path).resolve(), "journal_mode": journal}
        if isinstance(where, Settings):
            kwargs["data_root"] = where.shared_dir or where.home
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = _STORES[key] = JobStore(**kwargs)
        return store
