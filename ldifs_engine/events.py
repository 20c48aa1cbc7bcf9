"""The event sink: progress, metrics and heartbeats as JSON lines other processes can tail."""
from __future__ import annotations

import json
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


class EventSink:
    """Appends one JSON object per line (flushed at once) to ``path``; ``None`` path = memory only."""

    def __init__(self, path: str | Path | None = None, *, echo: bool = False):
        self.path = Path(path) if path else None
        self.echo = echo
        self.events: list[dict] = []
        self._lock = threading.Lock()
        self._file = open(self.path, "a", encoding="utf-8") if self.path else None
        self._hb: threading.Thread | None = None
        self._hb_stop = threading.Event()
        self.step = 0
        # A continual sequence runs one training loop per stage into one log: steps are reported
        # on the sequence's axis (offset) and "total_steps" is the sequence's total.
        self.step_offset = 0
        self.total_steps: int | None = None
        self.suppress: set[str] = set()  # event types not written (a stage's "done" is not the run's)

    def emit(self, type: str, **fields: Any) -> dict | None:
        if type in self.suppress:
            return None
        if self.step_offset and isinstance(fields.get("step"), int):
            fields["step"] += self.step_offset
        if self.total_steps is not None and "total_steps" in fields:
            fields["total_steps"] = self.total_steps
        event = {"t": round(time.time(), 3), "type": type, **_clean(fields)}
        line = json.dumps(event, allow_nan=False)
        with self._lock:
            self.events.append(event)
            if self._file:
                self._file.write(line + "\n")
                self._file.flush()
        if self.echo and type in ("phase", "log", "error", "oom_backoff", "stopped"):
            print(f"[{type}] {event.get('message') or event.get('phase') or ''}", flush=True)
        return event

    def log(self, message: str, level: str = "info") -> None:
        self.emit("log", level=level, message=message)

    def start_heartbeat(self, every_s: float = 5.0) -> None:
        """Emit ``heartbeat`` from a daemon thread so long evaluations still look alive."""
        if self._hb is not None and self._hb.is_alive():  # a sink shared by the stages of a sequence
            self._hb_stop.set()
            self._hb.join(timeout=2)
        self._hb_stop.clear()
        def beat() -> None:
            while not self._hb_stop.wait(every_s):
                self.emit("heartbeat", step=self.step, pid=os.getpid())

        self._hb = threading.Thread(target=beat, name="ldifs-heartbeat", daemon=True)
        self._hb.start()

    def stop_heartbeat(self) -> None:
        """Stop the heartbeat thread (the sink stays open: a sequence's next stage may start it again)."""
        self._hb_stop.set()
        if self._hb:
            self._hb.join(timeout=1)

    @contextmanager
    def heartbeat(self, every_s: float = 5.0) -> Iterator[None]:
        """Heartbeats for the duration of the ``with`` block."""
        self.start_heartbeat(every_s)
        try:
            yield
        finally:
            self.stop_heartbeat()

    def close(self) -> None:
        self.stop_heartbeat()
        with self._lock:
            if self._file:
                self._file.close()
                self._file = None


def read_events(path: str | Path, *, start: int = 0) -> list[dict]:
    """Events from line ``start`` on; a torn or bad line is skipped, not fatal."""
    out = []
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i < start:
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    except FileNotFoundError:
        return []
    return out
