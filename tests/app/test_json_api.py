"""``GET /api/jobs`` and ``GET /api/status/{id}``: signed in like the UI, owner-scoped, fresh while a job runs."""
from __future__ import annotations

import time

import httpx
import pytest

from app.main import local_user

from .conftest import serve

pytestmark = pytest.mark.timeout(300)


def spec(steps: int = 3, **optim) -> dict:
    return {"name": "json api", "optim": {"steps": steps, "checkpoint_every": 2, "batch_size": 8, **optim}}


def login(url: str, user: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=url, timeout=30)
    r = client.post("/login", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return client


def test_signed_in_owner_scoped_and_errors_named(fake_engine):
    from tasks import api

    with serve(auth="alice:pw1,bob:pw2", worker=False) as url:
        assert httpx.get(f"{url}api/jobs").status_code == 401  # no session cookie: nothing is listed
        mine = api.submit("alice", spec())
        theirs = api.submit("bob", spec())
        alice = login(url, "alice", "pw1")

        r = alice.get("/api/jobs")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        assert [j["id"] for j in r.json()] == [mine]
        assert "spec" not in r.json()[0] and r.json()[0]["owner"] == "alice"
        assert alice.get("/api/jobs", params={"state": "running"}).json() == []
        assert [j["id"] for j in alice.get("/api/jobs", params={"state": "QUEUED,RUNNING"}).json()] == [mine]

        st = alice.get(f"/api/status/{mine}")
        assert st.status_code == 200 and st.json()["state"] == "QUEUED" and st.json()["id"] == mine
        assert st.json() == api.status_dict("alice", mine)

        # another user's job is exactly as missing as a job that does not exist
        other, missing = alice.get(f"/api/status/{theirs}"), alice.get(f"/api/status/{'0' * 32}")
        assert other.status_code == missing.status_code == 404
        assert "no job" in other.json()["error"]

        bad = alice.get("/api/jobs", params={"limit": "lots"})
        assert bad.status_code == 400 and bad.json()["error"].startswith("limit:")
        bad = alice.get("/api/jobs", params={"state": "SLEEPING"})
        assert bad.status_code == 400 and "state" in bad.json()["error"]


def test_status_follows_a_running_job(fake_engine, monkeypatch):
    """Each poll reflects the engine's newest events (no stale copy), up to the final state."""
    from tasks import api

    monkeypatch.setenv("FAKE_STEP_S", "0.1")
    with serve(worker=True) as url:
        job = api.submit(local_user(), spec(steps=20))  # no auth: the app acts as the local user
        client = httpx.Client(base_url=url, timeout=30)
        seen: list[int] = []
        state = ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            d = client.get(f"/api/status/{job}").json()
            state = d["state"]
            if state == "RUNNING" and d["step"]:
                seen.append(d["step"])
            if state in ("DONE", "FAILED"):
                break
            time.sleep(0.1)
        assert state == "DONE", d
        assert d["step"] == 20 and d["total_steps"] == 20
        assert len(set(seen)) >= 2 and seen == sorted(seen), seen  # progress moved while it ran
        listed = client.get("/api/jobs").json()
        assert listed[0]["id"] == job and listed[0]["state"] == "DONE"
