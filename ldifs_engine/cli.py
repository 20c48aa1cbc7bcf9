"""The one error policy of every ``ldifs`` command (engine, job, dataset and app commands alike).

A command returns its exit code; what it raises becomes one readable line on stderr and an exit code
derived from the error's class: an ``LdifsError`` its ``exit_code`` (docs/CONTRACTS.md; a full disk,
whatever library noticed it, becomes ``DiskFull``), a file or network error (``OSError``) 1 with the
system's wording, Ctrl-C 130, anything else — a bug — 1 with
``internal error`` (``LDIFS_DEBUG=1`` shows the traceback). Output piped into a pager or ``head`` that
closed early is not an error.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import LdifsError
from .files import disk_full, is_disk_full

EXIT_OK = 0
EXIT_ERROR = 1  # what an error without an exit code of its own gets
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (newlines too) as one space."""
    return " ".join(str(text).split())


def exit_code(e: BaseException) -> int:
    """The exit code of a command that raised ``e``."""
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(e, BrokenPipeError):
        return EXIT_OK
    code = getattr(e, "exit_code", None)
    return code if isinstance(code, int) and code > 0 else EXIT_ERROR


def error_line(e: BaseException) -> str | None:
    """What the user reads about ``e`` (None: nothing to say)."""
    if isinstance(e, KeyboardInterrupt):
        return "error: interrupted"
    if isinstance(e, BrokenPipeError):
        return None
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        return f"error: {one_line(e.strerror)}{where}"
    return f"error: {one_line(e)}"


def dispatch(args: argparse.Namespace, *, user_errors: tuple[type[Exception], ...] = ()) -> int:
    """Run a parsed command (``args.func(args)``) under the policy above.

    ``user_errors``: further exception types a caller's commands raise for the user's own mistakes
    (treated like ``LdifsError``: their ``exit_code``, else 1)."""
    try:
        try:
            return int(args.func(args) or 0)
        except Exception as e:  # noqa: BLE001 — only a full disk is re-worded here
            if isinstance(e, LdifsError) or not is_disk_full(e):
                raise
            where = getattr(e, "filename", None)
            raise disk_full(Path(where).parent if where else Path.cwd(), Path(where).name if where else "a file") from None
    except (LdifsError, OSError, KeyboardInterrupt, *user_errors) as e:
        if isinstance(e, BrokenPipeError):
            _silence_stdout()
        line = error_line(e)
        if line:
            print(line, file=sys.stderr)
        return exit_code(e)
    except Exception as e:  # a bug, not a user error: one line here, the traceback on request
        if os.environ.get("LDIFS_DEBUG"):
            raise
        print(f"error: internal error: {type(e).__name__}: {one_line(e)[:300]} (set LDIFS_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return EXIT_ERROR


def _silence_stdout() -> None:
    # the reader went away: point stdout at /dev/null so the interpreter's final flush does not fail again
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
