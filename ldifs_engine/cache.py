"""The engine's cache of re-computable values: the "before" side of every run (zero-shot heads and
metrics of pre-trained weights), LP-FT starting heads and preprocessed evaluation tensors.

One store, built on diskcache (SQLite index + files), under ``$LDIFS_CACHE_DIR`` or
``$LDIFS_HOME/cache/engine``, capped at ``$LDIFS_CACHE_SIZE_LIMIT_BYTES`` (default 4 GiB) with
least-recently-used eviction. Only ``str`` keys and ``bytes`` values go in — JSON or safetensors,
never pickle: diskcache pickles anything else, and unpickling a file someone slipped into the cache
folder would run their code. ``SafeDisk`` refuses to write or read pickles; a pickled or undecodable
entry is dropped and recomputed, a corrupt database is moved aside and the store starts empty
(everything in it can be recomputed). Any object with ``get(key) -> bytes | None`` and
``set(key, bytes)`` can stand in (``NullCache`` caches nothing).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import diskcache
import torch
from diskcache.core import MODE_PICKLE, UNKNOWN

log = logging.getLogger("ldifs.cache")
DEFAULT_SIZE_LIMIT = 4 * 1024**3
SIZE_ENV = "LDIFS_CACHE_SIZE_LIMIT_BYTES"


class ByteCache(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> None: ...


class NullCache:
    """Caches nothing."""

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> None:
        return None

    def delete(self, key: str) -> None:
        return None


class UnsafeCacheEntry(Exception):
    """A pickled key or value was found in the cache; it is never loaded."""


class SafeDisk(diskcache.Disk):
    """A diskcache ``Disk`` that never pickles or unpickles."""

    def put(self, key: Any) -> tuple[Any, bool]:
        if type(key) is not str:
            raise TypeError(f"cache keys must be str, got {type(key).__name__}")
        return super().put(key)

    def get(self, key: Any, raw: bool) -> Any:
        if not raw:
            raise UnsafeCacheEntry("pickled key")
        return super().get(key, raw)

    def store(self, value: Any, read: bool, key: Any = UNKNOWN) -> tuple:
        if read or type(value) is not bytes:
            raise TypeError(f"cache values must be bytes, got {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise UnsafeCacheEntry("pickled value")
        return super().fetch(mode, filename, value, read)


class DiskStore:
    """diskcache.Cache with the rules above. Thread- and process-safe (several engines share it)."""

    def __init__(self, directory: str | Path, *, size_limit: int = DEFAULT_SIZE_LIMIT):
        self.directory = Path(directory)
        self.size_limit = int(size_limit)
        self._lock = threading.Lock()
        self._cache = self._open()

    def __getstate__(self) -> dict:
        # DataLoader workers started by spawn/forkserver get the store pickled: reopen it there by path
        return {"directory": str(self.directory), "size_limit": self.size_limit}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["directory"], size_limit=state["size_limit"])

    def _open(self) -> diskcache.Cache:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        try:
            return self._make()
        except sqlite3.OperationalError:
            raise  # locked or disk full: not corruption, do not throw the cache away
        except sqlite3.DatabaseError as e:
            self._move_aside(e)
            return self._make()

    def _make(self) -> diskcache.Cache:
        return diskcache.Cache(str(self.directory), disk=SafeDisk, size_limit=self.size_limit,
                               eviction_policy="least-recently-used", timeout=30,
                               cull_limit=2)  # diskcache culls 10 per set by default: the new entry too

    def _move_aside(self, err: Exception) -> None:
        aside = self.directory.with_name(f"{self.directory.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("cache %s is corrupt (%s); moved to %s and starting empty", self.directory, err, aside)
        os.replace(self.directory, aside)
        self.directory.mkdir(parents=True)
        os.chmod(self.directory, 0o700)

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._cache, fn)(*args, **kwargs)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as e:
            with self._lock:
                with contextlib.suppress(sqlite3.Error, OSError):
                    self._cache.close()
                self._move_aside(e)
                self._cache = self._make()
            return getattr(self._cache, fn)(*args, **kwargs)

    def get(self, key: str) -> bytes | None:
        try:
            value = self._call("get", key, default=None)
        except UnsafeCacheEntry:
            log.warning("dropping a pickled cache entry for %s", key)
            self.delete(key)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, got {type(value).__name__}")
        self._call("set", key, value)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def volume(self) -> int:
        """Bytes on disk (database and value files)."""
        return int(self._call("volume"))

    def __contains__(self, key: str) -> bool:
        return bool(self._call("__contains__", key))

    def count(self) -> int:
        """Entries stored (no ``__len__``: an empty store must not be falsy in ``cache or default``)."""
        return int(self._call("__len__"))

    def close(self) -> None:
        self._cache.close()


def size_limit_from_env() -> int:
    """``$LDIFS_CACHE_SIZE_LIMIT_BYTES`` (the service's setting; the engine child inherits it)."""
    raw = os.environ.get(SIZE_ENV, "").strip()
    try:
        return max(1024**2, int(raw)) if raw else DEFAULT_SIZE_LIMIT
    except ValueError:
        log.warning("%s=%r is not a number of bytes; using %d", SIZE_ENV, raw, DEFAULT_SIZE_LIMIT)
        return DEFAULT_SIZE_LIMIT


def content_key(kind: str, **parts: Any) -> str:
    """A stable key: ``kind:`` + sha256 of the canonical JSON of ``parts``."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return f"{kind}:{hashlib.sha256(blob.encode()).hexdigest()}"


def tensors_to_bytes(tensors: dict[str, torch.Tensor], meta: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                metadata={"json": json.dumps(meta or {})})


def tensors_from_bytes(blob: bytes) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load

    tensors = load(blob)
    # safetensors.torch.load drops metadata; parse the header for it (first 8 bytes = header size).
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    meta = json.loads(header.get("__metadata__", {}).get("json", "{}"))
    return tensors, meta


def get_tensors(cache: ByteCache, key: str) -> tuple[dict[str, torch.Tensor], dict] | None:
    """Decoded tensors of an entry, or None; an undecodable entry is dropped (never trusted)."""
    blob = cache.get(key)
    if blob is None:
        return None
    try:
        return tensors_from_bytes(blob)
    except Exception as e:  # noqa: BLE001 — safetensors raises its own types for damaged bytes
        log.warning("dropping an undecodable cache entry %s (%s)", key, e)
        delete = getattr(cache, "delete", None)
        if delete is not None:
            delete(key)
        return None
