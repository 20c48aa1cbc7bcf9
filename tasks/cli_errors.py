"""One error policy for the service-layer commands: a readable line on stderr and an exit code."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from ldifs_engine.errors import LdifsError

Command = Callable[[argparse.Namespace], int]


def guarded(fn: Command) -> Command:
    """Wrap a command: typed errors and file errors become ``error: …`` and a non-zero exit, never a traceback."""
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except LdifsError as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return getattr(e, "exit_code", 1) or 1
        except OSError as e:
            if isinstance(e, BrokenPipeError):  # output piped into `head`
                return 0
            print(f"error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            return 130

    run.__name__, run.__doc__ = fn.__name__, fn.__doc__
    return run
