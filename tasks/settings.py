"""Settings from the environment, read in one place. Paths are created owner-only (0700)."""
from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache
from pathlib import Path

from ldifs_engine.errors import SpecError


class _Env:
    """Typed look-ups in one mapping of variables; a bad value names its variable and what is allowed."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def text(self, name: str) -> str:
        return (self.env.get(name) or "").strip()

    def number(self, name: str, kind: type[int] | type[float], default: float, minimum: float) -> float:
        raw = self.text(name)
        if not raw:
            return default
        try:
            value = kind(raw)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise SpecError(f"{name}: expected {what}, got {raw!r}") from None
        if value < minimum:
            raise SpecError(f"{name}: must be >= {minimum}, got {value}")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        raw = self.text(name).lower() or default
        if raw not in allowed:
            raise SpecError(f"{name}: {raw!r} is not allowed; choose one of: {', '.join(allowed)}")
        return raw

    def argv(self, name: str) -> tuple[str, ...]:
        raw = self.text(name)
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
    queue_url: str = field(default="", repr=False)  # "" → SqliteHuey under home; redis://… → Redis (may hold a password)
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


# Numeric settings: field → (variable, type, smallest allowed value); defaults are the fields' own.
NUMBERS: dict[str, tuple[str, type[int] | type[float], float]] = {
    "heartbeat_stale_s": ("LDIFS_HEARTBEAT_STALE_S", float, 0.1),
    "max_attempts": ("LDIFS_MAX_ATTEMPTS", int, 1),
    "kill_grace_s": ("LDIFS_KILL_GRACE_S", float, 0.0),
    "max_queued_per_user": ("LDIFS_MAX_QUEUED_PER_USER", int, 1),
    "max_running_per_user": ("LDIFS_MAX_RUNNING_PER_USER", int, 1),
    "upload_max_bytes": ("LDIFS_UPLOAD_MAX_BYTES", int, 1),
    "upload_max_members": ("LDIFS_UPLOAD_MAX_MEMBERS", int, 1),
    "upload_max_pixels": ("LDIFS_UPLOAD_MAX_PIXELS", int, 1),
    "upload_min_per_class": ("LDIFS_UPLOAD_MIN_PER_CLASS", int, 1),
    "upload_max_classes": ("LDIFS_UPLOAD_MAX_CLASSES", int, 2),
    "user_storage_quota_bytes": ("LDIFS_USER_STORAGE_QUOTA_BYTES", int, 1),
    "poll_s": ("LDIFS_POLL_S", float, 0.01),
    "reaper_interval_s": ("LDIFS_REAPER_INTERVAL_S", float, 0.05),
    "stop_timeout_s": ("LDIFS_STOP_TIMEOUT_S", float, 0.0),
    "queue_poll_max_s": ("LDIFS_QUEUE_POLL_MAX_S", float, 0.01),
    "cache_size_limit_bytes": ("LDIFS_CACHE_SIZE_LIMIT_BYTES", int, 1024**2),
    "log_tail_lines": ("LDIFS_LOG_TAIL_LINES", int, 1),
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read ``LDIFS_*`` variables (see README) from ``env`` (default: this process's environment) into a
    validated ``Settings``; an unset or empty variable keeps the field's default."""
    e = _Env(os.environ if env is None else env)
    defaults = {f.name: f.default for f in fields(Settings)}
    home = Path(e.text("LDIFS_HOME") or Path.home() / ".ldifs-studio").expanduser().resolve()
    gpu_ids = tuple(x.strip() for x in e.text("LDIFS_GPU_IDS").split(",") if x.strip())
    queue_url = e.text("LDIFS_QUEUE_URL")
    if queue_url and not queue_url.startswith(("redis://", "rediss://", "unix://")):
        raise SpecError(f"LDIFS_QUEUE_URL: expected redis://host:port/db (or unset for SQLite), got {queue_url!r}")
    if queue_url and len(e.env.get("LDIFS_QUEUE_SECRET", "")) < 16:
        # Queue messages are pickles: unsigned ones would let anyone who can write to Redis run code on workers.
        raise SpecError("LDIFS_QUEUE_SECRET: a Redis queue needs a secret of at least 16 characters that signs "
                        "every message (the same long random string on every machine, e.g. openssl rand -hex 32)")
    db_url = e.text("LDIFS_DB_URL")
    if db_url and not db_url.startswith(("postgresql://", "postgres://")):
        raise SpecError("LDIFS_DB_URL: expected postgresql://user:password@host:port/dbname (or unset for SQLite)")
    shared = e.text("LDIFS_SHARED_DIR")
    return Settings(
        home=home,
        queue_url=queue_url,
        workers=int(e.number("LDIFS_WORKERS", int, len(gpu_ids) or 1, 1)),
        gpu_ids=gpu_ids,
        engine_cmd=e.argv("LDIFS_ENGINE_CMD"),
        queue_secret=e.env.get("LDIFS_QUEUE_SECRET", ""),  # verbatim: a secret
        engine_nice=min(19, int(e.number("LDIFS_ENGINE_NICE", int, defaults["engine_nice"], 0))),
        db_journal_mode=e.choice("LDIFS_DB_JOURNAL", defaults["db_journal_mode"], ("wal", "delete")),
        db_url=db_url,
        shared_dir=Path(shared).expanduser().resolve() if shared else None,
        **{name: e.number(var, kind, defaults[name], minimum) for name, (var, kind, minimum) in NUMBERS.items()},
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings (tests call ``get_settings.cache_clear()`` after changing the env)."""
    return load_settings().ensure_dirs()
