"""tasks.api: validation before anything is written, owner scoping of every call, quotas, exports."""
from __future__ import annotations

import csv
import io
import json
import threading
import zipfile

import pytest
import yaml

from tasks import api
from tasks.settings import get_settings

from .conftest import spec
from .test_jobs import run_dir

pytestmark = pytest.mark.usefixtures("store_backend")  # every test on SQLite and on PostgreSQL


def test_invalid_spec_lists_every_problem_and_writes_nothing(manual):
    bad = {"optim": {"lr": -1, "steps": 0}, "method": {"name": "nope"}, "colour": 1}
    with pytest.raises(api.SpecError) as e:
        api.submit("alice", bad)
    text = str(e.value)
    assert len(e.value.problems) >= 3
    for field in ("optim.lr", "optim.steps", "method.name", "colour"):
        assert field in text
    assert api.list_jobs("alice") == []
    assert list(get_settings().runs_dir.iterdir()) == []


def test_submit_accepts_yaml_text_and_runspec(immediate):
    from ldifs_engine.spec import RunSpec

    a = api.submit("alice", yaml.safe_dump(spec()))
    b = api.submit("alice", RunSpec.from_dict(spec()))
    assert {api.get_job("alice", j).state for j in (a, b)} == {"DONE"}
    assert api.get_job("alice", a).spec_hash == api.get_job("alice", b).spec_hash


def test_submit_many_validates_all_before_writing(manual):
    with pytest.raises(api.SpecError) as e:
        api.submit_many("alice", [spec(), {"optim": {"lr": 0, "steps": 3}}, {"seed": -1, "optim": {"steps": 3}}])
    assert any(p.startswith("specs[1].optim.lr") for p in e.value.problems)
    assert any(p.startswith("specs[2].seed") for p in e.value.problems)
    assert api.list_jobs("alice") == []
    ids = api.submit_many("alice", [spec(), spec(steps=3)], priority=2)
    assert [v.priority for v in api.list_jobs("alice")] == [2, 2] and len(set(ids)) == 2


@pytest.mark.parametrize("priority", [11, -11, 1.5, "3", True])
def test_priority_is_bounded(manual, priority):
    with pytest.raises(api.SpecError, match="priority"):
        api.submit("alice", spec(), priority=priority)


def test_queue_quota_and_nothing_left_behind(manual, monkeypatch):
    monkeypatch.setenv("LDIFS_MAX_QUEUED_PER_USER", "2")
    get_settings.cache_clear()
    api.submit("alice", spec())
    api.submit("alice", spec())
    with pytest.raises(api.QuotaExceeded):
        api.submit("alice", spec())
    assert len(list(get_settings().runs_dir.iterdir())) == 2  # the refused job's folder was removed
    api.submit("bob", spec())


def test_parallel_submits_cannot_exceed_the_quota(manual, monkeypatch):
    monkeypatch.setenv("LDIFS_MAX_QUEUED_PER_USER", "3")
    get_settings.cache_clear()
    outcomes = []

    def go():
        try:
            outcomes.append(api.submit("alice", spec()))
        except api.QuotaExceeded:
            outcomes.append(None)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(o is not None for o in outcomes) == 3
    assert len(api.list_jobs("alice")) == 3


def test_every_call_is_owner_scoped(immediate):
    job_id = api.submit("alice", spec())
    calls = [
        lambda u: api.get_job(u, job_id), lambda u: api.cancel(u, job_id), lambda u: api.resume(u, job_id),
        lambda u: api.job_metrics(u, job_id), lambda u: api.job_events(u, job_id), lambda u: api.job_logs(u, job_id),
        lambda u: api.get_results(u, job_id), lambda u: api.status_dict(u, job_id),
        lambda u: api.export_artifact(u, job_id, "results"),
    ]
    with pytest.raises(api.JobNotFound) as missing:
        api.get_job("alice", "0" * 32)
    for call in calls:
        with pytest.raises(api.JobNotFound) as theirs:
            call("bob")
        # Exactly what a missing job says: nothing confirms that the id exists.
        assert str(theirs.value) == str(missing.value).replace("0" * 32, job_id)
    assert api.list_jobs("bob") == []
    assert api.get_job("alice", job_id).state == "DONE"  # bob's cancel and resume did nothing


def test_status_dict_has_the_cli_fields(immediate):
    job_id = api.submit("alice", spec())
    d = api.status_dict("alice", job_id)
    for key in ("state", "step", "total_steps", "attempts", "checkpoint_step", "message"):
        assert key in d
    assert "spec" not in d and json.dumps(d)
    assert (d["state"], d["step"], d["total_steps"], d["attempts"]) == ("DONE", 6, 6, 1)


def test_metrics_events_and_results(immediate):
    job_id = api.submit("alice", spec(steps=6))
    assert [e["step"] for e in api.job_metrics("alice", job_id)] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in api.job_metrics("alice", job_id, after_step=4)] == [5, 6]
    assert [e["type"] for e in api.job_events("alice", job_id, kinds=["done"])] == ["done"]
    assert len(api.job_events("alice", job_id, tail=2)) == 2
    assert api.get_results("alice", job_id)["schema"] == "ldifs.results/1"


def test_results_are_none_before_the_run_ends(manual):
    job_id = api.submit("alice", spec())
    assert api.get_results("alice", job_id) is None
    assert api.job_metrics("alice", job_id) == []
    with pytest.raises(api.InvalidState):
        api.export_artifact("alice", job_id, "csv")


def test_exports_are_copies_in_a_per_user_folder(immediate):
    job_id = api.submit("alice", spec())
    res = json.loads((run_dir(job_id) / "results.json").read_text())
    res["datasets"] = {"quadrant": {"role": "target", "before": {"zs_acc": 0.25, "lp_acc": 0.5},
                                    "after": {"zs_acc": 0.75, "lp_acc": 0.9}}}
    (run_dir(job_id) / "results.json").write_text(json.dumps(res))
    exports = get_settings().exports_dir
    paths = {kind: api.export_artifact("alice", job_id, kind) for kind in ("results", "csv", "yaml")}
    for p in paths.values():
        assert p.is_file() and exports in p.parents and run_dir(job_id) not in p.parents
        assert "alice" not in str(p)  # the folder is a hash of the user name
    rows = list(csv.DictReader(io.StringIO(paths["csv"].read_text())))
    zs = next(r for r in rows if r["metric"] == "zs_acc")
    assert float(zs["delta"]) == pytest.approx(0.5)
    assert yaml.safe_load(paths["yaml"].read_text()) == api.get_job("alice", job_id).spec
    with pytest.raises(api.InvalidState, match="final checkpoint"):
        api.export_artifact("alice", job_id, "checkpoint")
    (run_dir(job_id) / "final").mkdir()
    (run_dir(job_id) / "final" / "model.safetensors").write_bytes(b"weights")
    with zipfile.ZipFile(api.export_artifact("alice", job_id, "checkpoint")) as z:
        assert "model.safetensors" in z.namelist() and "spec.json" in z.namelist()
    with pytest.raises(api.SpecError, match="kind"):
        api.export_artifact("alice", job_id, "../../etc/passwd")


def test_resume_rules(immediate):
    job_id = api.submit("alice", spec())
    with pytest.raises(api.InvalidState, match="done"):
        api.resume("alice", job_id)
    with pytest.raises(api.InvalidState, match="already done"):
        api.cancel("alice", job_id)


def test_catalogs_are_json_metadata():
    backbones, methods = api.catalog_backbones(), api.catalog_methods()
    assert backbones and methods and json.dumps([backbones, methods])
    assert {"ce", "ldifs"} <= {m["name"] for m in methods}
    assert "concept-clip-tiny" in {b["key"] for b in backbones}


def test_catalog_datasets(home):
    datasets = api.catalog_datasets("alice")
    assert "quadrant" in {d["key"] for d in datasets} and json.dumps(datasets)


def test_validate_spec():
    assert api.validate_spec(spec()) == []
    assert any(p.startswith("optim.lr") for p in api.validate_spec({"optim": {"lr": -1, "steps": 2}}))


def test_bad_user_names_are_rejected(manual):
    for user in ("", "   ", "a\nb", 3):
        with pytest.raises(api.SpecError, match="user"):
            api.submit(user, spec())
