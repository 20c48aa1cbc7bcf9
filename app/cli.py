"""``ldifs``: the one command line of LDIFS Studio.

``ldifs app`` serves the web UI (with an embedded job worker); the job, dataset and engine commands
are registered by the packages that own them, each imported on its own so a missing part never
breaks the rest. Errors print one readable line and exit non-zero, without a traceback.
"""
from __future__ import annotations

import argparse
import getpass
import importlib
import logging
import os
import sys
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads; see ldifs_engine/__init__.py

# Command groups owned by other packages: (module, what they add). Each exposes ``register(subparsers)``.
REGISTRARS = (
    ("tasks.cli_jobs", "submit, jobs, status, cancel, resume, logs, worker"),
    ("tasks.cli_datasets", "dataset import / list / show"),
    ("ldifs_engine.__main__", "train, budget, eval, backbones, methods, datasets, demo, pretrain-demo, merge, card, push"),
)


def cmd_app(args: argparse.Namespace) -> int:
    """Serve the web app until Ctrl-C."""
    from .main import launch

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpcore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    print(f"LDIFS Studio on http://{args.host}:{args.port}"
          + ("" if args.worker else "  (no embedded worker: run `ldifs worker` next to it)"), file=sys.stderr)
    launch(host=args.host, port=args.port, auth=args.auth, embedded_worker=args.worker, poll_s=args.poll,
           max_file_size=args.max_file_size)
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    """Print a ``user:scrypt$…`` line for LDIFS_AUTH_FILE (salted; the password is read without echo)."""
    from .main import hash_password

    password = getpass.getpass("password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if not password:
        raise _usage("hash-password: empty password")
    print(f"{args.user}:{hash_password(password)}")
    return 0


class _UsageError(Exception):
    exit_code = 2


def _usage(msg: str) -> _UsageError:
    return _UsageError(msg)


def _register_app(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("app", help="serve the web UI (127.0.0.1:7860, with an embedded job worker)",
                       description="Serve the LDIFS Studio web app. Binding beyond localhost needs auth: "
                                   "--auth user:pass, LDIFS_AUTH or LDIFS_AUTH_FILE.")
    p.add_argument("--host", default=os.environ.get("LDIFS_HOST", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1; 0.0.0.0 requires auth)")
    p.add_argument("--port", type=int, default=int(os.environ.get("LDIFS_PORT", "7860")), help="port (default 7860)")
    p.add_argument("--auth", default=None, metavar="USER:PASS[,USER:PASS]",
                   help="require sign-in (also LDIFS_AUTH, or LDIFS_AUTH_FILE with `ldifs hash-password` lines)")
    p.add_argument("--no-worker", dest="worker", action="store_false",
                   help="do not run jobs in this process (run `ldifs worker` separately)")
    p.add_argument("--poll", type=float, default=2.0, help="seconds between live updates in the browser (default 2)")
    p.add_argument("--max-file-size", default=None, help="largest upload, e.g. 500mb (default; LDIFS_MAX_FILE_SIZE)")
    p.set_defaults(func=cmd_app)

    p = sub.add_parser("hash-password", help="print a user:<salted scrypt> line for LDIFS_AUTH_FILE")
    p.add_argument("user")
    p.set_defaults(func=cmd_hash_password)


def build_parser() -> argparse.ArgumentParser:
    """The full ``ldifs`` parser: our commands plus every registrar that imports."""
    parser = argparse.ArgumentParser(
        prog="ldifs", description="LDIFS Studio: fine-tune CLIP and measure what it forgot.",
        epilog="Start here: `ldifs app`, then open http://127.0.0.1:7860.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _register_app(sub)
    for module, _what in REGISTRARS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):  # that part is not installed yet: skip it
                continue
            raise
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    parser.set_defaults(card_headline=card_headline)  # `ldifs card` / `ldifs push` tell the report's story
    return parser


def card_headline(results: Any) -> str:
    """The report's plain-language headline of a run (its wording lives in ``app/story.py``)."""
    from .story import headline

    return headline(results)


def _dispatch(args: argparse.Namespace) -> int:
    from ldifs_engine.cli import dispatch  # the one error policy of every ldifs command

    return dispatch(args, user_errors=(_UsageError,))


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    parser = build_parser()
    args = parser.parse_args(argv)
    return _dispatch(args)


def run() -> Any:  # pragma: no cover — console-script convenience
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
