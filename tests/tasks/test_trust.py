"""Issue 10 on the service side: uploads owner-checked at submit and at engine start."""
from __future__ import annotations

import json

import pytest
import yaml

from tasks import api, cli_jobs, ownership
from tasks.settings import get_settings
from tasks.store import FAILED

from .conftest import spec


def fake_upload(owner: str) -> str:
    """An upload folder as tasks.uploads writes it (only the manifest fields the check reads)."""
    import uuid

    uid = uuid.uuid4().hex
    folder = get_settings().datasets_dir / "uploads" / uid
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"schema": "ldifs.upload/1", "id": uid,
                                                      "owner": ownership.owner_hash(owner)}))
    return f"upload:{uid}"


def test_owner_hash_is_the_uploads_one():
    from tasks import uploads

    assert ownership.owner_hash("alice") == uploads.owner_hash("alice")


@pytest.mark.parametrize("where", ["data.target", "data.controls[1]", "data.sequence[0]"])
def test_another_users_or_a_missing_upload_is_refused_at_submit(manual, where):
    alices = fake_upload("alice")
    missing = "upload:" + "0" * 32
    for key in (alices, missing):
        data = {"target": "quadrant", "controls": ["count"]}
        if where == "data.target":
            data["target"] = key
        elif where.startswith("data.controls"):
            data["controls"] = ["count", key]
        else:
            data["sequence"] = [key]
        with pytest.raises(api.SpecError) as e:
            api.submit("bob", {**spec(), "data": data})
        assert str(e.value).startswith(f"{where}: {key} is not one of your uploaded datasets")
    assert api.list_jobs("bob") == [] and list(get_settings().runs_dir.iterdir()) == []
    # the owner may (the check passes; the fake engine does not read datasets)
    assert api.submit("alice", {**spec(), "data": {"target": alices}})


def test_cli_submit_of_another_users_upload_exits_2(manual, tmp_path, capsys):
    key = fake_upload("alice")
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**spec(), "data": {"target": "quadrant", "controls": [key]}}))
    code = cli_jobs.main(["submit", str(path), "--user", "bob"])
    assert code == 2
    assert "data.controls[0]" in capsys.readouterr().err
    assert api.list_jobs("bob") == []


def test_engine_start_checks_again(manual):
    key = fake_upload("alice")
    job = api.submit("alice", {**spec(), "data": {"target": key}})
    # the upload is gone (deleted, or the job store was edited) before a worker takes the job
    (get_settings().datasets_dir / "uploads" / key.split(":")[1] / "manifest.json").unlink()
    from tasks import queue

    queue.run_pending()
    view = api.get_job("alice", job)
    assert view.state == FAILED and "data.target" in view.message and "Refused to start" in view.message


def test_disk_full_at_submit_is_a_readable_error_and_queues_nothing(manual, monkeypatch):
    import errno

    from tasks import api as api_mod

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(api_mod, "write_spec", full)
    with pytest.raises(api.LdifsError) as e:
        api.submit("alice", spec())
    assert str(e.value).startswith("disk full") and "MB free" in str(e.value)
    assert str(get_settings().runs_dir) in str(e.value)
    assert api.list_jobs("alice") == []


def test_disk_full_in_the_engine_fails_the_job_promptly_and_it_resumes(immediate, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL", "7:3:DiskFull:disk full: could not write checkpoint step-00000004 in /x (0 MB free)")
    job = api.submit("alice", spec(steps=6, every=2))
    view = api.get_job("alice", job)
    assert view.state == FAILED and view.message.startswith("disk full") and view.resumable
    monkeypatch.delenv("FAKE_FAIL")  # space freed
    assert api.resume("alice", job).state == "DONE"
