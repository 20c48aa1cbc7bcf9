"""Typed errors with user-readable messages. Every error a user can cause is one of these."""
from __future__ import annotations


class LdifsError(Exception):
    """Base class: ``str(err)`` is a message fit to show a user as is."""

    exit_code = 1


class SpecError(LdifsError):
    """A run spec (or another user-supplied value) is invalid. ``problems`` lists every one."""

    exit_code = 2
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


class Diverged(LdifsError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 4


class ModelUnavailable(LdifsError):
    """Backbone weights cannot be loaded (offline, missing, corrupt)."""

    exit_code = 5


class DatasetUnavailable(LdifsError):
    """A dataset's files are missing; the message says where to put which files."""

    exit_code = 5


class OutOfMemory(LdifsError):
    """Out of memory even at micro-batch 1."""

    exit_code = 6


class InvalidUpload(LdifsError):
    """An uploaded archive was rejected; nothing was kept."""

    exit_code = 2


class InvalidCheckpoint(LdifsError):
    """A checkpoint is incomplete, of another spec, or has unexpected tensors."""

    exit_code = 2


class DiskFull(LdifsError):
    """A write failed because the disk (or the user's quota) is full; the message says where and how much
    space is left. Nothing half-written is kept: the run resumes from its last checkpoint once space is free."""

    exit_code = 7
