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
    monkeypatch.setenv("FAKE_FAIL",
                       "7:3:DiskFull:disk full: could not write checkpoint step-00000004 in /x (0 MB free)")
    job = api.submit("alice", spec(steps=6, every=2))
    view = api.get_job("alice", job)
    assert view.state == FAILED and view.message.startswith("disk full") and view.resumable
    monkeypatch.delenv("FAKE_FAIL")  # space freed
    assert api.resume("alice", job).state == "DONE"


# ---- a copied / moved data folder, a damaged job store (items 5 and 7) -------------------------------
def _forget_stores():
    from tasks import store as store_mod

    for s in list(store_mod._STORES.values()):
        s.close()
    store_mod._STORES.clear()
    get_settings.cache_clear()


def test_a_moved_data_folder_keeps_reports_downloads_and_resume(immediate, home, tmp_path, monkeypatch):
    import shutil

    done = api.submit("alice", spec())
    monkeypatch.setenv("FAKE_FAIL", "1:3::boom")
    failed = api.submit("alice", spec(steps=6, every=2))
    monkeypatch.delenv("FAKE_FAIL")
    assert api.get_job("alice", failed).state == FAILED and api.get_job("alice", failed).resumable
    _forget_stores()
    moved = tmp_path / "elsewhere" / "home-copy"
    shutil.copytree(home, moved, symlinks=True)  # cp -a home backup && mv
    shutil.rmtree(home)
    monkeypatch.setenv("LDIFS_HOME", str(moved))
    _forget_stores()
    assert api.get_results("alice", done) is not None  # not "has no results yet"
    assert api.export_artifact("alice", done, "csv").is_file()
    assert api.get_job("alice", done).result_path.startswith(str(moved))
    assert api.resume("alice", failed).state == "DONE"
    assert not home.exists()


def test_absolute_paths_of_an_old_store_are_migrated_on_start(manual, home, monkeypatch):
    from tasks.store import open_store

    job = api.submit("alice", spec())
    st = open_store(get_settings())
    con = st._con()
    con.execute("UPDATE jobs SET run_dir = ?, result_path = ? WHERE id = ?",
                (f"/old/place/home/runs/{job}", f"/old/place/home/runs/{job}/results.json", job))
    con.execute("UPDATE jobs SET run_dir = ? WHERE id != ?", ("/srv/custom/folder", job))
    con.execute("DELETE FROM schema_version WHERE version >= 3")  # as a store written before relative paths
    _forget_stores()
    rec = open_store(get_settings()).record("alice", job)
    assert rec["run_dir"] == str(get_settings().runs_dir / job)
    assert rec["result_path"] == str(get_settings().runs_dir / job / "results.json")
    raw = open_store(get_settings())._con().execute("SELECT run_dir FROM jobs WHERE id = ?", (job,)).fetchone()[0]
    assert raw == f"runs/{job}"


@pytest.mark.parametrize("damage", ["malformed", "empty", "junk"])
def test_a_damaged_job_store_is_named_at_start(home, damage, capsys):
    import os

    from tasks import cli_jobs
    from tasks.store import StoreDamaged, open_store

    db = get_settings().db_path
    open_store(get_settings())  # a real store with its schema
    _forget_stores()
    if damage == "malformed":
        blob = db.read_bytes()
        db.write_bytes(blob[:100] + os.urandom(len(blob) - 100))
    elif damage == "empty":
        db.write_bytes(b"")
        os.utime(db, (1, 1))  # not one being created right now
    else:
        db.write_bytes(b"not a database\n" * 200)
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    with pytest.raises(StoreDamaged, match="is damaged") as e:
        open_store(get_settings())
    assert "mv " in str(e.value) and "\n" not in str(e.value)
    _forget_stores()
    from tasks.worker import start_embedded_consumer

    with pytest.raises(StoreDamaged):  # the app's embedded worker refuses to start; it does not die in a thread
        start_embedded_consumer(settings=get_settings())
    _forget_stores()
    assert cli_jobs.main(["jobs", "--user", "alice"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged" in err[0]
    assert db.stat().st_size == (0 if damage == "empty" else db.stat().st_size)  # left as it was for the operator


def test_a_fresh_empty_store_file_is_not_damage(home):
    from tasks.store import open_store

    db = get_settings().db_path
    db.write_bytes(b"")  # as another process starting at the same moment leaves it
    assert open_store(get_settings()).list("alice") == []


def test_disk_full_in_the_worker_itself_fails_the_job_promptly(immediate, monkeypatch):
    import errno

    from tasks import jobs

    real_popen = jobs.subprocess.Popen

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(jobs.subprocess, "Popen", full)  # as if engine.log could not be written
    job = api.submit("alice", spec())
    view = api.get_job("alice", job)
    assert view.state == FAILED and view.message.startswith("disk full") and "MB free" in view.message
    monkeypatch.setattr(jobs.subprocess, "Popen", real_popen)


def test_ldifs_submit_answers_hostile_specs_fast_with_exit_2(manual, tmp_path, capsys):
    import time

    from tests.engine.test_specio import HOSTILE

    for name in ("alias bomb 9x9", "deep flow nesting", "deep JSON"):
        path = tmp_path / "hostile.yaml"
        path.write_text(HOSTILE[name], encoding="utf-8")
        t0 = time.perf_counter()
        assert cli_jobs.main(["submit", str(path), "--user", "bob"]) == 2
        assert time.perf_counter() - t0 < 1.0, name
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: spec") and len(err) < 200 and "\n" not in err
    assert api.list_jobs("bob") == []
