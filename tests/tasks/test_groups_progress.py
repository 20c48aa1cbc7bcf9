"""Seed-repeat groups (one job per seed, aggregated) and truthful phase progress in the job view."""
from __future__ import annotations

import uuid

import pytest

from tasks import api
from tasks.events import Progress
from tasks.store import JobStore

from .conftest import spec
from .test_store import claim, make_store, new_job, store  # noqa: F401 — fixtures on both backends


def test_a_spec_with_seeds_becomes_a_group_of_jobs(immediate):
    first = api.submit("alice", {**spec(steps=2), "seeds": [0, 1, 2]})
    group = api.get_job("alice", first).group
    assert group is not None
    members = [j for j in api.list_jobs("alice") if j.group == group]
    assert len(members) == 3 and {j.state for j in members} == {"DONE"}
    assert sorted(j.spec["seed"] for j in members) == [0, 1, 2]
    assert all("seeds" not in j.spec for j in members)  # each job is an ordinary single run
    assert sorted(j.title for j in members) == [f"fake run · seed {s}" for s in (0, 1, 2)]
    g = api.group_results("alice", group)
    assert [j["seed"] for j in g["jobs"]] == [0, 1, 2] and g["n_done"] == g["n_total"] == 3
    agg = g["aggregate"]
    assert agg["n_runs"] == 3 and agg["seeds"] == [0, 1, 2]
    assert agg["summary"]["target_gain"]["mean"] == pytest.approx(0.5)  # what the fake engine reports
    assert agg["summary"]["target_gain"]["sd"] == pytest.approx(0.0)


def test_groups_are_owner_scoped_and_single_runs_have_none(immediate):
    single = api.submit("alice", spec(steps=2))
    assert api.get_job("alice", single).group is None
    first = api.submit("alice", {**spec(steps=2), "seeds": [3, 4]})
    group = api.get_job("alice", first).group
    with pytest.raises(api.JobNotFound):
        api.group_results("bob", group)
    for bad in ("../x", uuid.uuid4().hex, None):
        with pytest.raises(api.JobNotFound):
            api.group_results("alice", bad)


def test_a_group_counts_against_the_queue_quota_as_a_whole(manual, monkeypatch):
    monkeypatch.setenv("LDIFS_MAX_QUEUED_PER_USER", "2")
    from tasks.settings import get_settings

    get_settings.cache_clear()
    with pytest.raises(api.QuotaExceeded):
        api.submit("alice", {**spec(), "seeds": [0, 1, 2]})
    assert api.list_jobs("alice") == [] and list(get_settings().runs_dir.iterdir()) == []


def _fold(events):
    p = Progress()
    p.apply(events)
    return p.phase, p.phase_progress


def test_phases_follow_the_engine_with_their_own_progress():
    evs = [{"type": "start", "total_steps": 10}]
    assert _fold(evs) == ("loading", None)
    evs.append({"type": "phase", "phase": "before_eval"})
    assert _fold(evs) == ("evaluating_before", 0.0)
    evs.append({"type": "progress", "phase": "before_eval", "done": 2, "total": 5})
    assert _fold(evs) == ("evaluating_before", 0.4)
    evs += [{"type": "phase", "phase": "train"}, {"type": "step", "step": 3, "total_steps": 10, "t": 1.0}]
    assert _fold(evs) == ("fine_tuning", 0.3)
    evs += [{"type": "step", "step": 10, "total_steps": 10, "t": 2.0}, {"type": "phase", "phase": "after_eval"}]
    # the reported bug: "fine-tuning · 100 % · about 0 s left" while the after-evaluation ran
    assert _fold(evs) == ("evaluating_after", 0.0)
    evs.append({"type": "progress", "phase": "after_eval", "done": 1, "total": 4})
    assert _fold(evs) == ("evaluating_after", 0.25)
    evs += [{"type": "phase", "phase": "wise_ft"}, {"type": "progress", "phase": "wise_ft", "done": 11, "total": 11}]
    assert _fold(evs) == ("wise_ft", 1.0)
    evs.append({"type": "phase", "phase": "write"})
    assert _fold(evs) == ("writing_results", None)
    p = Progress()
    p.apply(evs)
    assert p.fields()["phase_progress"] is None and p.fields()["phase"] == "writing_results"


def test_the_job_view_shows_the_phase_and_its_progress(store):  # noqa: F811
    v = new_job(store)
    assert store.get("alice", v.id).phase == "queued"
    claim(store, v)
    assert (store.get("alice", v.id).phase, store.get("alice", v.id).phase_progress) == ("loading", None)
    p = Progress()
    p.apply([{"type": "phase", "phase": "after_eval"}, {"type": "progress", "phase": "after_eval", "done": 2, "total": 5}])
    assert store.progress("alice", v.id, 1, **p.fields())
    got = store.get("alice", v.id)
    assert (got.phase, got.phase_progress) == ("evaluating_after", 0.4)
    assert got.to_dict()["phase_progress"] == 0.4 and got.to_dict()["group"] is None
    store.finish("alice", v.id, 1, "DONE", message="Done.")
    done = store.get("alice", v.id)
    assert (done.phase, done.phase_progress) == ("done", None)


def test_rows_from_before_the_rename_read_in_the_new_words(store):  # noqa: F811
    v = new_job(store)
    claim(store, v)
    store.progress("alice", v.id, 1, phase="train")  # what an older worker wrote
    assert store.get("alice", v.id).phase == "fine_tuning"


def test_an_old_database_gains_the_group_column(tmp_path):
    import sqlite3

    from tasks.store import MIGRATIONS

    path = tmp_path / "old.sqlite3"
    con = sqlite3.connect(path)
    for stmt in filter(str.strip, MIGRATIONS[0][2].split(";")):
        con.execute(stmt)
    con.execute("CREATE TABLE schema_version (version BIGINT NOT NULL, applied_at DOUBLE PRECISION)")
    con.execute("INSERT INTO schema_version VALUES (1, 0)")
    job_id = uuid.uuid4().hex
    con.execute("INSERT INTO jobs (id, owner, state, spec_json, spec_hash, created_at, run_dir) VALUES "
                "(?, 'alice', 'DONE', '{}', 'h', 1.0, '/x')", (job_id,))
    con.commit()
    con.close()
    s = JobStore(path)
    v = s.get("alice", job_id)
    assert v.group is None and v.phase == "done"
    g = new_job(s, group=uuid.uuid4().hex)
    assert [x.id for x in s.list_group("alice", g.group)] == [g.id]


def test_the_csv_export_carries_intervals_and_notes(immediate):
    import csv
    import io
    import json

    from .test_jobs import run_dir

    job_id = api.submit("alice", spec(steps=2))
    res = api.get_results("alice", job_id)
    note = "class prompts are indistinguishable to this model"
    res["datasets"] = {
        "quadrant": {"role": "target", "n_test": 120, "zs_note": note,
                     "before": {"zs_acc": None, "zs_acc_ci": None, "lp_acc": 0.4, "lp_acc_ci": [0.31, 0.49]},
                     "after": {"zs_acc": None, "zs_acc_ci": None, "lp_acc": 0.9, "lp_acc_ci": [0.83, 0.94]},
                     "delta_lp_ci": [0.4, 0.6]}}
    (run_dir(job_id) / "results.json").write_text(json.dumps(res))
    rows = list(csv.DictReader(io.StringIO(api.export_artifact("alice", job_id, "csv").read_text())))
    lp = next(r for r in rows if r["metric"] == "lp_acc")
    assert (lp["before_ci_lo"], lp["after_ci_hi"], lp["delta_ci_lo"], lp["n_test"]) == ("0.31", "0.94", "0.4", "120")
    zs = next(r for r in rows if r["metric"] == "zs_acc")
    assert zs["before"] == "" and zs["note"] == note and lp["note"] == ""
