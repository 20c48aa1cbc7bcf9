"""Forgetting-budget searches through the queue (tasks/budget.py): trials are ordinary jobs of one group,
the next ones are submitted when a trial ends, a restarted worker picks an interrupted search up, and the
group's budget.json is written once the search is done. The fake engine's trials forget 40 / (1 + alpha/10)
points (5 at alpha 70)."""
from __future__ import annotations

import json

import pytest

from tasks import api, budget, queue
from tasks.settings import get_settings
from tasks.store import open_store

BUDGET_SPEC = {"name": "budget", "data": {"target": "quadrant", "controls": ["shape"]},
               "method": {"name": "ldifs", "params": {"alpha": 10.0}},
               "optim": {"steps": 2, "checkpoint_every": 2, "batch_size": 8},
               "budget": {"max_forgetting_points": 5}}


def _group(job_id: str) -> str:
    return api.get_job("alice", job_id).group


def test_a_budget_spec_runs_as_a_group_of_trials_until_the_boundary_is_found(immediate):
    group = _group(api.submit("alice", BUDGET_SPEC))
    trials = [j for j in api.list_jobs("alice") if j.group == group]
    alphas = sorted(j.spec["method"]["params"]["alpha"] for j in trials)
    assert alphas[:1] == [0.0] and {1.0, 10.0, 100.0, 1000.0} <= set(alphas)  # coarse grid, then refinements
    assert len(trials) == 7 and {j.state for j in trials} == {"DONE"}
    assert all("budget" in j.spec for j in trials) and any("· alpha 100" in j.title for j in trials)
    out = api.budget_results("alice", group)
    assert out["complete"] and out["search"] == "alpha" and len(out["trials"]) == 7
    doc = json.loads((budget.group_dir(get_settings(), group) / "budget.json").read_text())
    assert doc == out["document"] and doc["schema"] == "ldifs.budget/1" and doc["met"]
    rec = doc["recommended"]
    assert rec["run"] in {j.id for j in trials} and 56.2 <= rec["params"]["alpha"] <= 100  # the boundary is 70
    assert rec["forgetting_points"] <= 5 and doc["sentence"].startswith("Within a 5-point budget, LDIFS with alpha")
    with pytest.raises(api.JobNotFound):
        api.budget_results("bob", group)


def test_a_worker_restart_continues_a_search_whose_driver_died(manual, monkeypatch):
    group = _group(api.submit("alice", BUDGET_SPEC))
    monkeypatch.setattr(budget, "after_job", lambda *a, **k: None)  # the worker dies before it advances
    queue.run_pending()
    assert len([j for j in api.list_jobs("alice") if j.group == group]) == 5  # the coarse grid only
    monkeypatch.undo()
    settings = get_settings()
    assert budget.advance_all(settings, open_store(settings)) == [group]  # what a starting worker does
    assert budget.advance(settings, open_store(settings), group) == "waiting"  # asked again: no duplicate
    assert len([j for j in api.list_jobs("alice") if j.group == group]) == 6
    queue.run_pending()
    assert api.budget_results("alice", group)["complete"]


def test_a_cancelled_trial_is_left_out_and_the_search_goes_on(manual):
    group = _group(api.submit("alice", BUDGET_SPEC))
    plain = next(j for j in api.list_jobs("alice") if j.group == group and j.spec["method"]["params"]["alpha"] == 0)
    api.cancel("alice", plain.id)
    queue.run_pending()
    out = api.budget_results("alice", group)
    assert out["complete"] and all(c["run"] != plain.id for c in out["document"]["candidates"])


def test_stopping_the_group_stops_the_search_and_resuming_a_trial_goes_on(manual):
    """Cancelling trials one by one cannot stop a search (each cancel lets it submit the next); stopping the
    group marks the search stopped first, cancels every waiting trial, and the answer is the best finished."""
    group = _group(api.submit("alice", BUDGET_SPEC))
    first = next(j for j in api.list_jobs("alice") if j.group == group and j.spec["method"]["params"]["alpha"] == 10)
    queue.run_pending(limit=2)  # two trials finish, three wait
    before = {j.id: j.state for j in api.list_jobs("alice") if j.group == group}
    assert sorted(before.values()) == ["DONE", "DONE", "QUEUED", "QUEUED", "QUEUED"]

    stopped = api.cancel_group("alice", first.id)
    after = {j.id: j.state for j in api.list_jobs("alice") if j.group == group}
    assert sorted(stopped) == sorted(i for i, s in before.items() if s == "QUEUED")
    assert len(after) == 5 and sorted(after.values()) == ["CANCELLED"] * 3 + ["DONE"] * 2  # nothing new submitted
    queue.run_pending()  # their revoked queue messages are dropped: nothing runs, nothing is submitted
    assert {j.id: j.state for j in api.list_jobs("alice") if j.group == group} == after
    out = api.budget_results("alice", group)
    doc = out["document"]
    assert out["stopped"] and not out["complete"] and doc["stopped"] and doc["n_finetunes"] == 2
    assert doc["recommended"]["run"] in {i for i, s in before.items() if s == "DONE"}
    with pytest.raises(api.JobNotFound):
        api.cancel_group("bob", first.id)
    with pytest.raises(api.InvalidState, match="not part of a group"):
        api.cancel_group("alice", api.submit("alice", {"name": "single", "optim": {"steps": 2, "batch_size": 8}}))

    cancelled = next(i for i, s in after.items() if s == "CANCELLED")
    api.resume("alice", cancelled)  # the user changes their mind: the search goes on from there
    queue.run_pending()
    out = api.budget_results("alice", group)
    assert out["complete"] and not out["stopped"] and not out["document"]["stopped"]
    states = [t["state"] for t in out["trials"]]  # the two still cancelled are left out, as any cancelled trial
    assert states.count("CANCELLED") == 2 and set(states) == {"DONE", "CANCELLED"} and len(states) > 5
