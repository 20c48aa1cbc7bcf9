"""The ``ldifs`` console script: subcommands from every package, one-line errors, no tracebacks."""
from __future__ import annotations

import io
import sys

import pytest

from app import cli, main


def test_parser_has_our_and_the_other_packages_commands():
    p = cli.build_parser()
    names = set(p._subparsers._group_actions[0].choices)  # noqa: SLF001 — argparse has no public listing
    assert {"app", "hash-password"} <= names
    assert {"train", "eval", "backbones", "methods", "demo"} <= names  # engine
    assert {"submit", "jobs", "status", "cancel", "resume", "logs", "worker"} <= names  # jobs
    assert "dataset" in names  # uploads


def test_app_defaults():
    args = cli.build_parser().parse_args(["app"])
    assert args.host == "127.0.0.1" and args.port == 7860 and args.worker is True
    assert cli.build_parser().parse_args(["app", "--no-worker"]).worker is False


def test_public_without_auth_is_one_readable_line(capsys, monkeypatch):
    monkeypatch.delenv("LDIFS_AUTH", raising=False)
    monkeypatch.delenv("LDIFS_AUTH_FILE", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    rc = cli.main(["app", "--host", "0.0.0.0", "--no-worker"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("error: host: refusing to serve on 0.0.0.0 without authentication")
    assert not any("Traceback" in line for line in err)


def test_hash_password_from_stdin(capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("s3cret\n"))
    assert cli.main(["hash-password", "alice"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("alice:scrypt$")  # salted: a fresh hash each time
    assert main.make_auth(main.parse_auth_file(line))("alice", "s3cret")


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
