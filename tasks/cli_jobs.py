"""The job commands of the ``ldifs`` console script: submit, jobs, status, cancel, resume, logs, worker.

``register(subparsers)`` adds them to an argparse parser; each sets ``func(args) -> int``. Errors print
one readable line on stderr and return a non-zero exit code, never a traceback. The acting user is the
OS user unless ``--user`` is given. Job ids may be shortened to any unique prefix of 6+ characters.
"""
from __future__ import annotations

import argparse
import getpass
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ldifs_engine.cli import dispatch
from ldifs_engine.errors import SpecError

from .store import FINAL, STATES, JobNotFound



def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the job commands to ``subparsers`` (from ``parser.add_subparsers()``)."""
    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = subparsers.add_parser(name, help=help, description=help)
        p.add_argument("--user", default=None, help="act as this user (default: the OS user)")
        p.set_defaults(func=func)
        return p

    p = add("submit", cmd_submit, "Queue a run from a spec file (YAML or JSON); prints the job id.")
    p.add_argument("spec", help="path to the spec file")
    p.add_argument("--priority", type=int, default=0, help="-10..10, higher runs first (default 0)")

    p = add("jobs", cmd_jobs, "List your jobs, newest first.")
    p.add_argument("--state", action="append", choices=[s.lower() for s in STATES], help="only these states")
    p.add_argument("-n", "--limit", type=int, default=50)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = add("status", cmd_status, "Show one job: state, progress, failure message.")
    p.add_argument("id")
    p.add_argument("--json", action="store_true", help="print a JSON object")

    p = add("cancel", cmd_cancel, "Stop a job: queued jobs are dropped, running ones checkpoint and stop.")
    p.add_argument("id")
    p.add_argument("--kill", action="store_true", help="end the engine after the grace period, without waiting")
    p.add_argument("--group", action="store_true",
                   help="stop every waiting and running job of ID's group (its seeds, or a budget search: no more "
                        "trials start)")

    p = add("resume", cmd_resume, "Queue a cancelled, interrupted or failed job to continue from its checkpoint.")
    p.add_argument("id")

    p = add("logs", cmd_logs, "Print a job's log lines.")
    p.add_argument("id")
    p.add_argument("-n", type=int, default=40, help="how many lines (default 40)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until the job finishes")

    p = add("worker", cmd_worker, "Run a job worker (one thread per GPU slot) until Ctrl-C.")
    p.add_argument("--workers", type=int, default=None, help="job slots (default: LDIFS_WORKERS or GPU count)")


def _user(args: argparse.Namespace) -> str:
    return args.user or getpass.getuser()


def _resolve(user: str, text: str) -> str:
    """A full job id from an id or a unique prefix of the user's job ids."""
    from . import api

    text = text.strip().lower()
    if len(text) == 32:
        return text
    if len(text) < 6:
        raise JobNotFound(f"no job {text!r} (give at least 6 characters of the id)")
    matches = [j.id for j in api.list_jobs(user, limit=100_000) if j.id.startswith(text)]
    if not matches:
        raise JobNotFound(f"no job {text!r}")
    if len(matches) > 1:
        raise JobNotFound(f"{text!r} matches {len(matches)} jobs; give more characters")
    return matches[0]


# ---- commands ---------------------------------------------------------------------------------
def cmd_submit(args: argparse.Namespace) -> int:
    """ldifs submit SPEC.yaml"""
    from ldifs_engine.specio import MAX_SPEC_BYTES, parse_spec_text, quote

    from . import api

    path = Path(args.spec)
    if not path.is_file():
        raise SpecError(f"spec: file {quote(args.spec)} not found")
    if path.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"spec: file {quote(args.spec)} is larger than {MAX_SPEC_BYTES // 1024} KiB")
    data = parse_spec_text(path.read_bytes(), source=f"spec {quote(path.name)}",
                           fmt="json" if path.suffix.lower() == ".json" else None)
    job_id = api.submit(_user(args), dict(data), priority=args.priority)
    print(job_id)
    if isinstance(data, dict) and data.get("budget"):  # a search: say where its answer will be
        from .budget import group_dir
        from .settings import get_settings

        group = api.get_job(_user(args), job_id).group
        print(f"forgetting-budget search {group}: the first trials are queued, the next ones follow as they end; "
              f"the answer: {group_dir(get_settings(), group) / 'budget.json'} (and the Report)", file=sys.stderr)
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    """ldifs jobs"""
    from . import api

    views = api.list_jobs(_user(args), states=[s.upper() for s in args.state] if args.state else None,
                          limit=args.limit)
    if args.json:
        print(json.dumps([_public(v.to_dict()) for v in views], indent=2))
        return 0
    if not views:
        print("no jobs")
        return 0
    rows = [("ID", "STATE", "PROGRESS", "ETA", "METHOD", "TARGET", "CREATED", "TITLE")]
    for v in views:
        rows.append((v.id[:12], v.state, _progress(v.step, v.total_steps), _duration(v.eta_s), v.method, v.target,
                     time.strftime("%m-%d %H:%M", time.localtime(v.created_at)), v.title[:40]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """ldifs status ID"""
    from . import api

    user = _user(args)
    d = api.status_dict(user, _resolve(user, args.id))
    if args.json:
        print(json.dumps(_public(d), indent=2))
        return 0
    lines = [
        f"job       {d['id']}  ({d['title']})",
        f"state     {d['state']}" + (f"  (stop requested: {d['cancel_requested']})" if d.get("cancel_requested") else ""),
        f"progress  {_progress(d['step'], d['total_steps'])}" + (f"  phase {d['phase']}" if d.get("phase") else "")
        + (f"  eta {_duration(d['eta_s'])}" if d.get("eta_s") is not None else "")
        + (f"  {d['samples_per_s']:.0f} samples/s" if d.get("samples_per_s") else ""),
        f"attempts  {d['attempts']}" + (f"  checkpoint at step {d['checkpoint_step']}"
                                        if d.get("checkpoint_step") is not None else ""),
    ]
    for b in d.get("backoffs") or []:
        lines.append(f"oom       step {b.get('step')}: micro-batch {b.get('micro_batch')} x {b.get('accum')}")
    if d.get("message"):
        lines.append(f"message   {d['message']}")
    if d.get("resumable"):
        lines.append(f"resume    ldifs resume {d['id'][:12]}")
    print("\n".join(lines))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """ldifs cancel ID [--kill] [--group]"""
    from . import api

    user = _user(args)
    if args.group:
        ids = api.cancel_group(user, _resolve(user, args.id), mode="kill" if args.kill else "stop")
        print(f"stopped {len(ids)} job(s) of the group" + "".join(f"\n{i}" for i in ids))
        return 0
    v = api.cancel(user, _resolve(user, args.id), mode="kill" if args.kill else "stop")
    print(f"{v.id}: {v.state} — {v.message}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    """ldifs resume ID"""
    from . import api

    user = _user(args)
    v = api.resume(user, _resolve(user, args.id))
    print(f"{v.id}: {v.state} — {v.message}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    """ldifs logs ID [-n N] [-f]"""
    from . import api

    user = _user(args)
    job_id = _resolve(user, args.id)
    lines = api.job_logs(user, job_id, n=1_000_000)
    for line in lines[-args.n:] if args.n > 0 else []:
        print(line, flush=True)
    seen = len(lines)
    while args.follow:
        finished = api.get_job(user, job_id).state in FINAL  # read before the lines: none are missed
        lines = api.job_logs(user, job_id, n=1_000_000)
        for line in lines[seen:]:
            print(line, flush=True)
        seen = len(lines)
        if finished:
            break
        time.sleep(1.0)
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """ldifs worker [--workers N]"""
    from .worker import run_consumer

    if args.workers is not None and args.workers < 1:
        raise SpecError("--workers: must be at least 1")
    run_consumer(args.workers)
    return 0


# ---- formatting -------------------------------------------------------------------------------
def _public(d: dict[str, Any]) -> dict[str, Any]:
    d = dict(d)
    d.pop("spec", None)
    return d


def _progress(step: int | None, total: int | None) -> str:
    if not total:
        return f"{step or 0}"
    return f"{step or 0}/{total} ({100 * (step or 0) / total:.0f}%)"


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m tasks.cli_jobs``); ``ldifs`` wires ``register`` instead."""
    parser = argparse.ArgumentParser(prog="ldifs", description="LDIFS Studio job commands")
    register(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
