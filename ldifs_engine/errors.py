"""Typed errors with user-readable messages. Every error a user can cause is one of these."""
from __future__ import annotations


class LdifsError(Exception):
    """Base class: ``str(err)`` is a message fit to show a user as is.

    ``exit_code`` is the engine process's exit status when this error ends it, ``exit_meaning`` what a
    supervisor that only sees the status should say (docs/CONTRACTS.md lists them)."""

    exit_code = 1
    exit_meaning = "the engine failed with an unexpected error"


class SpecError(LdifsError):
    """A run spec (or another user-supplied value) is invalid. ``problems`` lists every one."""

    exit_code = 2
    exit_meaning = "the run spec or the engine's command line was rejected"
    MAX_SHOWN = 12

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        shown = self.problems[:self.MAX_SHOWN]
        more = len(self.problems) - len(shown)
        # A hostile spec can have thousands of problems; the message stays a few lines.
        super().__init__("; ".join(shown) + (f"; … and {more} more problem(s)" if more > 0 else ""))


class Cancelled(LdifsError):
    """A stop was requested; a checkpoint was written."""

    exit_code = 3
    exit_meaning = "stopped on request"


class Diverged(LdifsError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 4
    exit_meaning = "training diverged (the loss became NaN or infinite); the last good checkpoint is kept"


class ModelUnavailable(LdifsError):
    """Backbone weights cannot be loaded (offline, missing, corrupt)."""

    exit_code = 5
    exit_meaning = "a model or dataset is unavailable"


class DatasetUnavailable(LdifsError):
    """A dataset's files are missing; the message says where to put which files."""

    exit_code = 5
    exit_meaning = "a model or dataset is unavailable"


class OutOfMemory(LdifsError):
    """Out of memory even at micro-batch 1."""

    exit_code = 6
    exit_meaning = "out of memory even at micro-batch 1"


class InvalidUpload(LdifsError):
    """An uploaded archive was rejected; nothing was kept."""

    exit_code = 2
    exit_meaning = "the run spec or the engine's command line was rejected"


class InvalidCheckpoint(LdifsError):
    """A checkpoint is incomplete, of another spec, or has unexpected tensors."""

    exit_code = 2
    exit_meaning = "the run spec or the engine's command line was rejected"


class DiskFull(LdifsError):
    """A write failed because the disk (or the user's quota) is full; the message says where and how much
    space is left. Nothing half-written is kept: the run resumes from its last checkpoint once space is free."""

    exit_code = 7
    exit_meaning = "the disk is full (free some space, then resume: the run continues from its last checkpoint)"


def exit_meanings() -> dict[int, str]:
    """Exit status → its meaning, from the error classes (the first class defined with a status names it)."""
    out: dict[int, str] = {}
    todo = [LdifsError]
    while todo:
        cls = todo.pop(0)
        out.setdefault(cls.exit_code, cls.exit_meaning)
        todo.extend(cls.__subclasses__())
    return dict(sorted(out.items()))
