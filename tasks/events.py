"""Reading an engine's ``events.jsonl`` while it is being written, and folding it into job progress.

The engine appends one JSON object per line (contracts §1). A reader may see a torn last line, so it
only consumes complete lines and remembers the byte offset where it stopped.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .store import PHASE_NAMES

MEASURED_PHASES = frozenset({"evaluating_before", "fine_tuning", "evaluating_after", "wise_ft", "merging"})
STOP_KIND = "Cancelled"  # ldifs_engine.errors.Cancelled: the engine stopped on request (exit 3)


def read_new(path: str | Path, offset: int = 0, *, final: bool = False) -> tuple[list[dict], int]:
    """Events from byte ``offset`` to the last complete line, and the offset after it.

    Lines that do not parse are skipped. With ``final`` (the writer has exited) a last line without a
    newline is read too, if it parses.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() < offset:  # the file was replaced: start over
                offset = 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = len(data) if final else data.rfind(b"\n") + 1
    events = []
    for line in data[:end].splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict) and isinstance(ev.get("type"), str):
            events.append(ev)
    return events, offset + end


class EventLog:
    """All events of one run directory, read incrementally (cheap to poll from a UI)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._events: list[dict] = []
        self._offset = 0
        self._lock = threading.Lock()

    def events(self) -> list[dict]:
        with self._lock:
            new, offset = read_new(self.path, self._offset)
            if offset < self._offset:  # replaced file
                self._events = []
            self._events.extend(new)
            self._offset = offset
            return list(self._events)


_LOGS: dict[Path, EventLog] = {}
_LOGS_LOCK = threading.Lock()


def event_log(run_dir: str | Path) -> EventLog:
    """A shared incremental reader of ``<run_dir>/events.jsonl`` (bounded cache)."""
    path = Path(run_dir) / "events.jsonl"
    with _LOGS_LOCK:
        log = _LOGS.get(path)
        if log is None:
            if len(_LOGS) > 64:
                _LOGS.pop(next(iter(_LOGS)))
            log = _LOGS[path] = EventLog(path)
        return log


def format_event(ev: dict) -> str | None:
    """One human log line for the events a person wants to read (None for steps, evals, heartbeats)."""
    kind = ev.get("type")
    stamp = time.strftime("%H:%M:%S", time.localtime(ev["t"])) if isinstance(ev.get("t"), (int, float)) else "--:--:--"
    if kind == "log":
        text = f"{ev.get('level', 'info')}: {ev.get('message', '')}"
    elif kind == "phase":
        text = f"phase {ev.get('phase')}" + (f": {ev['message']}" if ev.get("message") else "")
    elif kind == "start":
        origin = f"resuming from step {ev['resumed_from']}" if ev.get("resumed_from") is not None else "fresh start"
        text = f"started ({origin}) on {ev.get('device', '?')}, {ev.get('total_steps', '?')} steps"
    elif kind == "checkpoint":
        text = f"checkpoint saved at step {ev.get('step')}"
    elif kind == "oom_backoff":
        text = (f"out of memory at step {ev.get('step')}: micro-batch now {ev.get('micro_batch')} "
                f"x {ev.get('accum')} accumulation steps" + (f" ({ev['message']})" if ev.get("message") else ""))
    elif kind == "stopped":
        text = f"stopped at step {ev.get('step')}, checkpoint {ev.get('checkpoint')}"
    elif kind == "error" and ev.get("kind") == STOP_KIND:
        text = f"stop: {ev.get('message', '')}"
    elif kind == "error":
        text = f"error ({ev.get('kind', 'Error')}): {ev.get('message', '')}"
    elif kind == "done":
        text = "finished; results written"
    else:
        return None
    return f"{stamp} {text}"


@dataclass
class Progress:
    """Folds the events of one attempt into the fields the job store keeps."""

    log_tail: list[str] = field(default_factory=list)
    backoffs: list[dict] = field(default_factory=list)
    checkpoint_step: int | None = None
    tail_lines: int = 40
    step: int | None = None
    total_steps: int | None = None
    samples_per_s: float | None = None
    eta_s: float | None = None
    phase: str | None = None  # in JobView's words (store.PHASE_NAMES)
    phase_progress: float | None = None  # the phase's own progress, 0..1; None for phases without one
    error: dict | None = None  # the attempt's ``error`` event
    stopped: dict | None = None
    done: bool = False
    _first: tuple[float, int] | None = None  # (time, step) of this attempt's first step event

    @classmethod
    def from_record(cls, rec: dict[str, Any], tail_lines: int = 40) -> Progress:
        return cls(log_tail=list(rec.get("log_tail") or []), backoffs=list(rec.get("backoffs") or []),
                   checkpoint_step=rec.get("checkpoint_step"), tail_lines=tail_lines)

    def apply(self, events: list[dict]) -> bool:
        """Fold events in; True when something the store keeps changed."""
        for ev in events:
            kind = ev.get("type")
            line = format_event(ev)
            if line:
                self.log_tail = (self.log_tail + [line])[-self.tail_lines:]
            if kind == "step":
                self._step(ev)
            elif kind == "start":
                self.total_steps = _int(ev.get("total_steps"), self.total_steps)
                self._enter("load")
            elif kind == "phase":
                self._enter(str(ev.get("phase") or "")[:40])
            elif kind == "progress":
                self._progress(ev)
            elif kind == "checkpoint":
                self.checkpoint_step = _int(ev.get("step"), self.checkpoint_step)
            elif kind == "oom_backoff":
                self.backoffs.append({k: ev.get(k) for k in ("t", "step", "micro_batch", "accum", "message")})
            elif kind == "stopped":
                self.stopped = ev
                self.checkpoint_step = _int(ev.get("step"), self.checkpoint_step) if ev.get("checkpoint") else \
                    self.checkpoint_step
            elif kind == "error" and ev.get("kind") == STOP_KIND:
                self.stopped = self.stopped or ev  # a requested stop, reported as the Cancelled error
            elif kind == "error":
                self.error = ev
            elif kind == "done":
                self.done = True
        return bool(events)

    def _enter(self, engine_phase: str) -> None:
        """A new phase starts: its progress is 0 if it reports any, else unknown."""
        if not engine_phase:
            return
        self.phase = PHASE_NAMES.get(engine_phase, engine_phase)
        self.phase_progress = 0.0 if self.phase in MEASURED_PHASES else None

    def _progress(self, ev: dict) -> None:
        done, total = ev.get("done"), ev.get("total")
        if isinstance(ev.get("phase"), str) and ev["phase"]:
            self.phase = PHASE_NAMES.get(ev["phase"], ev["phase"][:40])
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            self.phase_progress = round(min(1.0, max(0.0, done / total)), 4)

    def _step(self, ev: dict) -> None:
        step = _int(ev.get("step"), None)
        if step is None:
            return
        self.step = step
        self.total_steps = _int(ev.get("total_steps"), self.total_steps)
        sps = ev.get("samples_per_s")
        self.samples_per_s = float(sps) if isinstance(sps, (int, float)) else self.samples_per_s
        t = float(ev["t"]) if isinstance(ev.get("t"), (int, float)) else time.time()
        if self._first is None:
            self._first = (t, step)
        t0, s0 = self._first
        if step > s0 and t > t0 and self.total_steps:
            rate = (step - s0) / (t - t0)
            self.eta_s = round(max(0, self.total_steps - step) / rate, 1)
        self.phase = "fine_tuning"
        if self.total_steps:
            self.phase_progress = round(min(1.0, step / self.total_steps), 4)

    def fields(self) -> dict[str, Any]:
        """Columns for ``JobStore.progress`` (only the ones known so far)."""
        out: dict[str, Any] = {"log_tail": self.log_tail, "backoffs": self.backoffs}
        for name in ("step", "total_steps", "samples_per_s", "eta_s", "phase", "checkpoint_step"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.phase is not None:  # None is meaningful here: the phase has no progress of its own
            out["phase_progress"] = self.phase_progress
        return out


def _int(v: Any, default: int | None) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else default
