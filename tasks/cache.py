"""A diskcache of re-computable values for the web app and workers ("before" numbers, zero-shot heads,
pre-trained features), under content-hash keys.

Only ``str`` keys and ``bytes / str / int / float`` values go in: diskcache pickles anything else, and
unpickling a file someone slipped into the cache folder runs their code (CVE-2025-69872). ``SafeDisk``
refuses to write or read pickles at all. Tensors are stored as safetensors bytes (raw data + a JSON
header with dtype and shape). The folder is owner-only; a corrupt database is moved aside and the
cache starts empty (everything in it can be recomputed). Durable records never live here.

The engine child process uses its own file cache (``ldifs_engine.cache.DirCache`` at
``$LDIFS_CACHE_DIR``); ``FeatureCache`` offers the same ``get(key) -> bytes | None`` / ``set(key, bytes)``
interface, so either can be handed to code that expects the other.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import diskcache
from diskcache.core import MODE_PICKLE, UNKNOWN

from .settings import Settings, get_settings

log = logging.getLogger("ldifs.cache")

_VERSIONED = ("ldifs-studio", "torch", "torchvision", "open_clip_torch")


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
        if read or type(value) not in (bytes, str, int, float):
            raise TypeError(f"cache values must be bytes, str, int or float, got {type(value).__name__}")
        return super().store(value, read, key=key)

    def fetch(self, mode: int, filename: str | None, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise UnsafeCacheEntry("pickled value")
        return super().fetch(mode, filename, value, read)


def library_versions() -> dict[str, str]:
    """Versions that change what the "before" side computes (part of every key)."""
    out = {"python": ".".join(platform.python_version_tuple()[:2])}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "absent"
    return out


def cache_key(kind: str, **inputs: Any) -> str:
    """``kind:`` + sha256 of the canonical JSON of ``inputs`` and the library versions.

    Equal inputs give equal keys; changing any input (a template, the weights hash, a version) gives
    a different key, so a stale value is never served.
    """
    if not kind or not kind.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"kind must be a short identifier, got {kind!r}")
    payload = {"inputs": inputs, "versions": library_versions()}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return f"{kind}:{hashlib.sha256(blob.encode()).hexdigest()}"


def baseline_key(kind: str, *, backbone: str, weights_sha: str, dataset: str, manifest_sha: str,
                 classnames: Sequence[str], templates: Sequence[str], preprocess: Mapping[str, Any],
                 split: str = "test", **extra: Any) -> str:
    """Key of a pre-trained model's value on one dataset (features, zero-shot head, "before" accuracy)."""
    return cache_key(kind, backbone=backbone, weights_sha=weights_sha, dataset=dataset, manifest_sha=manifest_sha,
                     classnames=list(classnames), templates=list(templates), preprocess=dict(preprocess),
                     split=split, **extra)


class FeatureCache:
    """diskcache.Cache with the rules above. Thread- and process-safe."""

    def __init__(self, directory: str | Path, *, size_limit: int = 4 * 1024**3):
        self.directory = Path(directory)
        self.size_limit = size_limit
        self._lock = threading.Lock()
        self._cache = self._open()

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
        return diskcache.Cache(str(self.directory), disk=SafeDisk, size_limit=self.size_limit, tag_index=True,
                               timeout=30)

    def _move_aside(self, err: Exception) -> None:
        aside = self.directory.with_name(f"{self.directory.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
        log.warning("cache %s is corrupt (%s); moved to %s and starting empty", self.directory, err, aside)
        os.replace(self.directory, aside)
        self.directory.mkdir(parents=True)
        os.chmod(self.directory, 0o700)

    def _rebuild(self, err: Exception) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error, OSError):
                self._cache.close()
            self._move_aside(err)
            self._cache = self._make()

    def _call(self, fn: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return getattr(self._cache, fn)(*args, **kwargs)
        except sqlite3.OperationalError:
            raise
        except sqlite3.DatabaseError as e:
            self._rebuild(e)
            return getattr(self._cache, fn)(*args, **kwargs)

    # ---- the engine's cache interface -------------------------------------------------------
    def get(self, key: str) -> bytes | None:
        try:
            value = self._call("get", key, default=None)
        except UnsafeCacheEntry:
            log.warning("dropping a pickled cache entry for %s", key)
            self._call("delete", key)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes, *, tag: str | None = None) -> None:
        if not isinstance(value, bytes):
            raise TypeError(f"value must be bytes, got {type(value).__name__}")
        self._call("set", key, value, tag=tag)

    # ---- typed helpers --------------------------------------------------------------------------
    def get_json(self, key: str) -> Any:
        raw = self.get(key)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    def set_json(self, key: str, obj: Any, *, tag: str | None = None) -> None:
        self.set(key, json.dumps(obj, sort_keys=True, allow_nan=False).encode(), tag=tag)

    def get_tensors(self, key: str) -> tuple[dict, dict] | None:
        """(tensors by name, metadata) or None; safetensors bytes, never pickle."""
        raw = self.get(key)
        if raw is None:
            return None
        from ldifs_engine.cache import tensors_from_bytes

        try:
            return tensors_from_bytes(raw)
        except Exception as e:  # noqa: BLE001 — any undecodable blob is a miss (safetensors raises its own type)
            log.warning("dropping an undecodable cache entry %s (%s)", key, e)
            self._call("delete", key)
            return None

    def set_tensors(self, key: str, tensors: Mapping[str, Any], meta: Mapping[str, Any] | None = None, *,
                    tag: str | None = None) -> None:
        from ldifs_engine.cache import tensors_to_bytes

        self.set(key, tensors_to_bytes(dict(tensors), dict(meta or {})), tag=tag)

    def evict(self, tag: str) -> int:
        """Drop every entry stored with ``tag`` (e.g. a backbone key); returns how many."""
        return self._call("evict", tag)

    def __contains__(self, key: str) -> bool:
        return bool(self._call("__contains__", key))

    def __len__(self) -> int:
        return int(self._call("__len__"))

    def close(self) -> None:
        self._cache.close()


_caches: dict[Path, FeatureCache] = {}
_caches_lock = threading.Lock()


def open_cache(settings: Settings | None = None) -> FeatureCache:
    """The process-wide cache under ``<LDIFS_HOME>/cache/diskcache``."""
    settings = settings or get_settings()
    directory = settings.cache_dir / "diskcache"
    with _caches_lock:
        cache = _caches.get(directory)
        if cache is None:
            cache = _caches[directory] = FeatureCache(directory, size_limit=settings.cache_size_limit_bytes)
        return cache
