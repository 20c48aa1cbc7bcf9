"""Settings from the environment, read in one place. Paths are created owner-only (0700)."""
from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from ldifs_engine.errors import SpecError


def _int(name: str, default: int, minimum: int = 0) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SpecError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise SpecError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SpecError(f"{name}: expected a number, got {raw!r}") from None
    if value < minimum:
        raise SpecError(f"{name}: must be >= {minimum}, got {value}")
    return value


def _choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower() or default
    if raw not in allowed:
        raise SpecError(f"{name}: {raw!r} is not allowed; choose one of: {', '.join(allowed)}")
    return raw


def _argv(name: str) -> tuple[str, ...]:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return ()
    try:
        return tuple(shlex.split(raw))
    except ValueError as e:
        raise SpecError(f"{name}: not a valid command line ({e})") from None


@dataclass(frozen=True)
class Settings:
    """Everything configurable about the service layer. See README "Configuration"."""

    home: Path
    queue_url: str = ""  # "" → SqliteHuey under home; redis://… → Redis-backed huey
    workers: int = 1  # jobs run at once by one consumer (one per GPU)
    gpu_ids: tuple[str, ...] = ()  # CUDA_VISIBLE_DEVICES per worker slot; empty = let the engine choose
    heartbeat_stale_s: float = 60.0  # a RUNNING job silent this long is interrupted
    max_attempts: int = 3  # automatic resumes before a job is FAILED
    kill_grace_s: float = 10.0  # SIGINT → SIGKILL delay for cancel(mode="kill")
    max_queued_per_user: int = 20
    max_running_per_user: int = 2
    upload_max_bytes: int = 500 * 1024**2  # decompressed bytes written per upload
    upload_max_members: int = 50_000
    upload_max_pixels: int = 4096 * 4096  # per image, from the header
    upload_min_per_class: int = 5
    upload_max_classes: int = 1000
    user_storage_quota_bytes: int = 2 * 1024**3
    engine_cmd: tuple[str, ...] = ()  # argv prefix of the engine; empty = this Python's `-m ldifs_engine`
    poll_s: float = 0.5  # how often a worker reads the engine's events and the cancel flag
    reaper_interval_s: float = 30.0  # how often a worker looks for jobs whose worker died
    stop_timeout_s: float = 300.0  # a graceful stop (checkpoint + exit) may take this long before SIGKILL
    queue_poll_max_s: float = 2.0  # longest pause between two looks at an empty queue
    queue_secret: str = field(default="", repr=False)  # HMAC-sign queue messages (set it for Redis)
    cache_size_limit_bytes: int = 4 * 1024**3
    log_tail_lines: int = 40
    # Engines run this much nicer than their worker: on shared CPUs the web app and status polls stay quick
    # while a job trains (a GPU-bound run barely notices). 0 = same priority as the worker.
    engine_nice: int = 10
    db_journal_mode: str = "wal"  # "delete" when LDIFS_HOME is on a shared network filesystem
    db_url: str = field(default="", repr=False)  # postgresql://… → job store on a database server; "" → SQLite
    shared_dir: Path | None = None  # runs/ and datasets/ live here (a volume every machine mounts); None → home
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def db_path(self) -> Path:
        return self.home / "jobs.sqlite3"

    @property
    def queue_path(self) -> Path:
        return self.home / "queue.sqlite3"

    @property
    def runs_dir(self) -> Path:
        return (self.shared_dir or self.home) / "runs"

    @property
    def datasets_dir(self) -> Path:
        return (self.shared_dir or self.home) / "datasets"

    @property
    def uploads_dir(self) -> Path:
        return self.datasets_dir / "uploads"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def engine_argv(self) -> list[str]:
        """The command that runs the engine, before ``run --spec … --workdir …``."""
        return list(self.engine_cmd) or [sys.executable, "-m", "ldifs_engine"]

    def ensure_dirs(self) -> Settings:
        """Create the data folders with owner-only permissions."""
        for p in (self.home, *((self.shared_dir,) if self.shared_dir else ()), self.runs_dir, self.datasets_dir, self.uploads_dir, self.cache_dir,
                  self.exports_dir, self.models_dir, self.locks_dir):
            p.mkdir(parents=True, exist_ok=True)
            os.chmod(p, 0o700)
        return self


def load_settings(env: dict[str, str] | None = None) -> Settings:
    """Read ``LDIFS_*`` variables (see README) into a validated ``Settings``."""
    env = os.environ if env is None else env
    saved = dict(os.environ)
    try:
        if env is not os.environ:
            os.environ.clear()
            os.environ.update(env)
        home = Path(os.environ.get("LDIFS_HOME") or Path.home() / ".ldifs-studio").expanduser().resolve()
        gpu_ids = tuple(x.strip() for x in os.environ.get("LDIFS_GPU_IDS", "").split(",") if x.strip())
        queue_url = os.environ.get("LDIFS_QUEUE_URL", "").strip()
        if queue_url and not queue_url.startswith(("redis://", "rediss://", "unix://")):
            raise SpecError(f"LDIFS_QUEUE_URL: expected redis://host:port/db (or unset for SQLite), got {queue_url!r}")
        db_url = os.environ.get("LDIFS_DB_URL", "").strip()
        if db_url and not db_url.startswith(("postgresql://", "postgres://")):
            raise SpecError("LDIFS_DB_URL: expected postgresql://user:password@host:port/dbname (or unset for SQLite)")
        shared = os.environ.get("LDIFS_SHARED_DIR", "").strip()
        return Settings(
            home=home,
            queue_url=queue_url,
            workers=_int("LDIFS_WORKERS", len(gpu_ids) or 1, 1),
            gpu_ids=gpu_ids,
            heartbeat_stale_s=_float("LDIFS_HEARTBEAT_STALE_S", 60.0, 0.1),
            max_attempts=_int("LDIFS_MAX_ATTEMPTS", 3, 1),
            kill_grace_s=_float("LDIFS_KILL_GRACE_S", 10.0, 0.0),
            max_queued_per_user=_int("LDIFS_MAX_QUEUED_PER_USER", 20, 1),
            max_running_per_user=_int("LDIFS_MAX_RUNNING_PER_USER", 2, 1),
            upload_max_bytes=_int("LDIFS_UPLOAD_MAX_BYTES", 500 * 1024**2, 1),
            upload_max_members=_int("LDIFS_UPLOAD_MAX_MEMBERS", 50_000, 1),
            upload_max_pixels=_int("LDIFS_UPLOAD_MAX_PIXELS", 4096 * 4096, 1),
            upload_min_per_class=_int("LDIFS_UPLOAD_MIN_PER_CLASS", 5, 1),
            upload_max_classes=_int("LDIFS_UPLOAD_MAX_CLASSES", 1000, 2),
            user_storage_quota_bytes=_int("LDIFS_USER_STORAGE_QUOTA_BYTES", 2 * 1024**3, 1),
            engine_cmd=_argv("LDIFS_ENGINE_CMD"),
            poll_s=_float("LDIFS_POLL_S", 0.5, 0.01),
            reaper_interval_s=_float("LDIFS_REAPER_INTERVAL_S", 30.0, 0.05),
            stop_timeout_s=_float("LDIFS_STOP_TIMEOUT_S", 300.0, 0.0),
            queue_poll_max_s=_float("LDIFS_QUEUE_POLL_MAX_S", 2.0, 0.01),
            queue_secret=os.environ.get("LDIFS_QUEUE_SECRET", ""),
            cache_size_limit_bytes=_int("LDIFS_CACHE_SIZE_LIMIT_BYTES", 4 * 1024**3, 1024**2),
            log_tail_lines=_int("LDIFS_LOG_TAIL_LINES", 40, 1),
            engine_nice=min(19, _int("LDIFS_ENGINE_NICE", 10, 0)),
            db_journal_mode=_choice("LDIFS_DB_JOURNAL", "wal", ("wal", "delete")),
            db_url=db_url,
            shared_dir=Path(shared).expanduser().resolve() if shared else None,
        )
    finally:
        if env is not os.environ:
            os.environ.clear()
            os.environ.update(saved)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (tests call ``get_settings.cache_clear()`` after changing the env)."""
    return load_settings().ensure_dirs()
