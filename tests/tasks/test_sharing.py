"""Merge and push jobs: runs named by job id (owner-checked, finished), the engine's job document with
folders relative to the job (no path from the user, no token anywhere), a push refused without a token
with one line naming `ldifs card`, and a push job's engine side against the local stand-in Hub."""
from __future__ import annotations

import json
from pathlib import Path

import huggingface_hub
import pytest

from ldifs_engine.__main__ import main as engine_main
from ldifs_engine.errors import SpecError
from ldifs_engine.share_cli import job_document
from tasks import api, queue
from tasks.jobs import push_message
from tasks.settings import get_settings
from tests.app import samples
from tests.hub_standin import TOKEN, hub_standin

from .conftest import spec


def _finished(user: str) -> str:
    job_id = api.submit(user, spec(steps=2, every=2))  # huey runs the fake engine inline
    assert api.get_job(user, job_id).state == api.DONE
    return job_id


def test_a_merge_is_a_job_over_the_users_own_finished_runs(immediate):
    a, b, other = _finished("alice"), _finished("alice"), _finished("bob")
    queue.set_huey(queue.make_memory_huey(immediate=False))  # the merge stays queued
    with pytest.raises(api.JobNotFound):
        api.submit_merge("alice", [a, other])
    with pytest.raises(SpecError, match="pick 2 to 8"):
        api.submit_merge("alice", [a, a])
    merge_id = api.submit_merge("alice", [a, b], method="ties", lambdas="0,0.5,1")
    runs_dir = get_settings().runs_dir
    view = api.get_job("alice", merge_id)
    assert view.method == "merge" and view.state == api.QUEUED and view.spec["merge"]["jobs"] == [a, b]
    assert str(runs_dir) not in json.dumps(view.spec)  # the store keeps job ids, never a folder
    doc = json.loads((runs_dir / merge_id / "spec.json").read_text())
    assert doc["merge"]["runs"] == [f"../{a}", f"../{b}"] and doc["merge"]["lambdas"] == [0.0, 0.5, 1.0]
    kind, mspec = job_document(runs_dir / merge_id / "spec.json")
    assert kind == "merge" and [Path(r).resolve() for r in mspec.runs] == [(runs_dir / i).resolve() for i in (a, b)]
    with pytest.raises(api.InvalidState, match="has not finished"):
        api.submit_merge("alice", [a, merge_id])


def test_a_push_needs_a_token_and_uploads_the_card_as_a_job(immediate, monkeypatch):
    run = _finished("alice")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(api.InvalidState, match="ldifs card"):
        api.push_to_hub("alice", run, "alice/clip-quadrant")
    run_dir = get_settings().runs_dir / run
    (run_dir / "results.json").write_text(json.dumps(samples.results()))
    (run_dir / "final").mkdir()
    (run_dir / "final" / "model.safetensors").write_bytes(b"weights")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    queue.set_huey(queue.make_memory_huey(immediate=False))
    push_id = api.push_to_hub("alice", run, "alice/clip-quadrant", headline="What it gained and forgot.")
    push_dir = get_settings().runs_dir / push_id
    assert TOKEN not in (push_dir / "spec.json").read_text() and TOKEN not in json.dumps(api.get_job("alice", push_id).spec)
    with hub_standin() as (endpoint, hub):
        monkeypatch.setenv("HF_ENDPOINT", endpoint)
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
        assert engine_main(["run", "--spec", str(push_dir / "spec.json"), "--workdir", str(push_dir)]) == 0
    files = hub.repos["alice/clip-quadrant"]
    assert files["open_clip_model.safetensors"] == b"weights" and "What it gained and forgot." in files["README.md"].decode()
    assert push_message(push_dir).startswith("Pushed to alice/clip-quadrant (private): ")
