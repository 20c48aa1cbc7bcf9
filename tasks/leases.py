"""GPU leases: one job per GPU at a time on a host, across threads and processes.

A lease is an exclusive ``flock`` on ``<home>/locks/<host>-slot-<id>.lock``. The kernel drops it when
the holder exits, however it exits, so a crashed worker never leaves a GPU booked. Engine children
do not inherit the descriptor (``close_fds``), so an orphaned engine does not hold it either.
"""
from __future__ import annotations

import fcntl
import os
import re
import socket
import threading
from dataclasses import dataclass

from .settings import Settings

# The name this machine goes by in the job store (whose jobs are "mine to check by pid"). Containers that
# share the host's name (host networking) but not its process table need their own: LDIFS_HOST_NAME.
HOST = os.environ.get("LDIFS_HOST_NAME", "").strip() or socket.gethostname()


def process_start(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, Linux): tells a live process from a reused pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


@dataclass
class Lease:
    slot: str
    gpu: str | None  # the CUDA_VISIBLE_DEVICES value, None = let the engine choose
    _fd: int

    def release(self) -> None:
        if self._fd >= 0:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = -1


def slots(settings: Settings) -> list[tuple[str, str | None]]:
    """(lock name, GPU id) per slot: the configured GPU ids, else ``workers`` anonymous slots."""
    if settings.gpu_ids:
        return [(f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', g)}", g) for g in settings.gpu_ids]
    return [(f"auto-{i}", None) for i in range(settings.workers)]


def try_acquire(settings: Settings) -> Lease | None:
    """A free slot now, or None."""
    settings.locks_dir.mkdir(parents=True, exist_ok=True)
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", HOST)
    for name, gpu in slots(settings):
        fd = os.open(settings.locks_dir / f"{host}-slot-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return Lease(name, gpu, fd)
    return None


def acquire(settings: Settings, stop: threading.Event | None = None, poll_s: float | None = None) -> Lease | None:
    """Wait for a free slot; None if ``stop`` is set first."""
    while True:
        lease = try_acquire(settings)
        if lease is not None:
            return lease
        if stop is not None and stop.wait(poll_s or settings.poll_s):
            return None
        if stop is None:
            threading.Event().wait(poll_s or settings.poll_s)
