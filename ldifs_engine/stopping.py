"""Stop requests: a ``STOP`` file in the run directory, and SIGINT where an entry point asks for it.

Library calls (``run_task``, ``run_sequence``) only ever read a ``should_stop()`` callable; a signal
handler is process-wide state, so only an entry point (the CLI's ``run``/``train``/``demo``) installs
one, through ``StopFlag.installed()``.
"""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STOP_FILE = "STOP"


class StopFile:
    """True once ``workdir/STOP`` exists (the worker writes it to stop a job; a user may too)."""

    def __init__(self, workdir: Path | None):
        self.workdir = workdir

    def __call__(self) -> bool:
        return bool(self.workdir and (self.workdir / STOP_FILE).exists())


class StopFlag(StopFile):
    """Stop requested by the ``STOP`` file or by SIGINT while installed; a second SIGINT aborts
    (``KeyboardInterrupt``). The file alone does not count as a first SIGINT, so the worker's one
    SIGINT that follows its STOP file is not taken for a second."""

    def __init__(self, workdir: Path | None):
        super().__init__(workdir)
        self.requested = False

    def _on_sigint(self, *_: object) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        """SIGINT = save a checkpoint and exit at the next step boundary, for the ``with`` block only
        (outside the main thread no handler can be installed: the STOP file still works)."""
        try:
            old = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:
            old = None
        try:
            yield self
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def __call__(self) -> bool:
        return self.requested or super().__call__()
