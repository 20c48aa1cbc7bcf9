"""A small content-addressed cache for re-computable values (the "before" side of every run).

Values are bytes (JSON or safetensors) — never pickle — written atomically. Any object with
``get(key) -> bytes | None`` and ``set(key, bytes)`` can stand in (the service layer passes its own).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

import torch


class ByteCache(Protocol):
    def get(self, key: str) -> bytes | None: ...
    def set(self, key: str, value: bytes) -> None: ...


class NullCache:
    """Caches nothing."""

    def get(self, key: str) -> bytes | None:
        return None

    def set(self, key: str, value: bytes) -> None:
        return None


class DirCache:
    """Files named by the sha256 of the key under one owner-only directory."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)

    def _path(self, key: str) -> Path:
        return self.root / hashlib.sha256(key.encode()).hexdigest()

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, OSError):
            return None

    def set(self, key: str, value: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(value)
            os.replace(tmp, self._path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


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
