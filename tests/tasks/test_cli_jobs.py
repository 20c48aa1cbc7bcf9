"""The job commands of ``ldifs``: output, exit codes, one-line errors."""
from __future__ import annotations

import json

import pytest
import yaml

from tasks.cli_jobs import main

from .conftest import spec


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def spec_file(tmp_path):
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(spec()))
    return p


def test_submit_jobs_status_logs(immediate, capsys, spec_file):
    code, out, _ = run(capsys, "submit", str(spec_file), "--user", "alice")
    job_id = out.strip()
    assert code == 0 and len(job_id) == 32
    code, out, _ = run(capsys, "jobs", "--user", "alice")
    assert code == 0 and job_id[:12] in out and "DONE" in out and out.startswith("ID")
    code, out, _ = run(capsys, "status", job_id[:8], "--json", "--user", "alice")
    d = json.loads(out)
    assert code == 0 and d["state"] == "DONE" and d["step"] == d["total_steps"] == 6
    assert {"attempts", "checkpoint_step", "message"} <= set(d)
    code, out, _ = run(capsys, "status", job_id, "--user", "alice")
    assert code == 0 and "DONE" in out and "6/6" in out
    code, out, _ = run(capsys, "logs", job_id, "-n", "2", "--user", "alice")
    assert code == 0 and len(out.strip().splitlines()) == 2 and "finished" in out
    code, out, _ = run(capsys, "jobs", "--json", "--user", "alice")
    assert json.loads(out)[0]["id"] == job_id


def test_cancel_and_resume(manual, capsys, spec_file):
    _, out, _ = run(capsys, "submit", str(spec_file), "--user", "alice")
    job_id = out.strip()
    code, out, _ = run(capsys, "cancel", job_id, "--user", "alice")
    assert code == 0 and "CANCELLED" in out
    code, out, _ = run(capsys, "resume", job_id, "--user", "alice")
    assert code == 0 and "QUEUED" in out


def test_cancel_group_stops_every_seed(manual, capsys, tmp_path):
    p = tmp_path / "seeds.yaml"
    p.write_text(yaml.safe_dump({**spec(), "seeds": [0, 1, 2]}))
    from tasks import api

    _, out, _ = run(capsys, "submit", str(p), "--user", "alice")
    group = api.get_job("alice", out.strip()).group
    ids = [j.id for j in api.list_jobs("alice") if j.group == group]
    assert len(ids) == 3
    code, out, _ = run(capsys, "cancel", ids[0][:8], "--group", "--user", "alice")
    assert code == 0 and out.startswith("stopped 3 job(s) of the group") and set(out.splitlines()[1:]) == set(ids)
    code, out, err = run(capsys, "cancel", ids[0], "--group", "--user", "alice")  # nothing left to stop
    assert code == 0 and out.startswith("stopped 0 job(s)")


@pytest.mark.parametrize("argv, code, needle", [
    (["status", "0123456789abcdef0123456789abcdef"], 1, "no job"),
    (["status", "abc"], 1, "at least 6"),
    (["submit", "/no/such/file.yaml"], 2, "not found"),
    (["cancel", "ffffffffffff"], 1, "no job"),
])
def test_errors_are_one_line(manual, capsys, argv, code, needle):
    got, _out, err = run(capsys, *argv, "--user", "alice")
    assert got == code and needle in err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err


def test_invalid_spec_file_lists_problems(manual, capsys, tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("optim: {lr: -1, steps: 0}\n")
    code, _, err = run(capsys, "submit", str(p), "--user", "alice")
    assert code == 2 and "optim.lr" in err and "optim.steps" in err
    p.write_text("optim: [unclosed\n")
    code, _, err = run(capsys, "submit", str(p), "--user", "alice")
    assert code == 2 and "not valid YAML" in err
    p.write_text("- a list\n")
    assert run(capsys, "submit", str(p), "--user", "alice")[0] == 2


def test_other_users_jobs_are_invisible(immediate, capsys, spec_file):
    _, out, _ = run(capsys, "submit", str(spec_file), "--user", "alice")
    code, _, err = run(capsys, "status", out.strip(), "--user", "bob")
    assert code == 1 and "no job" in err
    assert run(capsys, "jobs", "--user", "bob")[1].strip() == "no jobs"


def test_register_adds_every_command():
    import argparse

    from tasks.cli_jobs import register

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    assert {"submit", "jobs", "status", "cancel", "resume", "logs", "worker"} <= set(sub.choices)
    assert callable(parser.parse_args(["worker", "--workers", "2"]).func)
