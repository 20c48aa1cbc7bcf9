"""The one error policy of every ldifs command: one line, an exit code from the error's class."""
from __future__ import annotations

import argparse

import pytest

from ldifs_engine.cli import EXIT_INTERRUPTED, dispatch, exit_code
from ldifs_engine.errors import Cancelled, DatasetUnavailable, LdifsError, SpecError, exit_meanings


def _run(exc: BaseException, capsys, **kw) -> tuple[int, str]:
    def fn(_args):
        raise exc

    code = dispatch(argparse.Namespace(func=fn), **kw)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("exc", [SpecError("a: bad"), Cancelled("stopped"), DatasetUnavailable("missing")])
def test_typed_errors_exit_with_their_class_code(exc, capsys):
    code, err = _run(exc, capsys)
    assert code == type(exc).exit_code and err == f"error: {exc}\n"


def test_messages_are_one_line(capsys):
    code, err = _run(LdifsError("first\n  second\tthird"), capsys)
    assert (code, err) == (1, "error: first second third\n")


def test_file_errors_use_the_system_wording(tmp_path, capsys):
    code, err = _run(FileNotFoundError(2, "No such file or directory", str(tmp_path / "x.zip")), capsys)
    assert code == 1 and err == f"error: No such file or directory: {tmp_path / 'x.zip'}\n"


def test_ctrl_c_and_closed_pipes(capsys):
    assert _run(KeyboardInterrupt(), capsys) == (EXIT_INTERRUPTED, "error: interrupted\n")
    assert exit_code(BrokenPipeError()) == 0


def test_a_bug_is_one_line_without_traceback(capsys, monkeypatch):
    monkeypatch.delenv("LDIFS_DEBUG", raising=False)
    code, err = _run(ZeroDivisionError("division by zero"), capsys)
    assert code == 1 and err.startswith("error: internal error: ZeroDivisionError") and "Traceback" not in err


def test_caller_user_errors_use_their_exit_code(capsys):
    class Usage(Exception):
        exit_code = 2

    assert _run(Usage("hash-password: empty password"), capsys, user_errors=(Usage,)) == (
        2, "error: hash-password: empty password\n")


def test_exit_meanings_come_from_the_error_classes():
    meanings = exit_meanings()
    assert meanings[Cancelled.exit_code] == Cancelled.exit_meaning
    assert meanings[SpecError.exit_code] == SpecError.exit_meaning and meanings[1] == LdifsError.exit_meaning
