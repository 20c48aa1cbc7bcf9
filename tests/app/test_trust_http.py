"""Issue 10 over real HTTP with two signed-in users: downloads are per user, private events are not
callable by name, API errors arrive as plain text, priority is an integer only."""
from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml

from .conftest import serve

SPEC = yaml.safe_dump({"name": "alice's run", "optim": {"steps": 3, "checkpoint_every": 2, "batch_size": 8}})


def login(url: str, user: str, password: str) -> httpx.Client:
    c = httpx.Client(base_url=url, timeout=30, follow_redirects=False)
    r = c.post("login", data={"username": user, "password": password})
    assert r.status_code == 200, r.text
    return c


def call_event(c: httpx.Client, api_name: str, data: list, session: str) -> list:
    """Run a private event the way the browser does: queue/join by fn_index + the session's SSE stream."""
    deps = c.get("config").json()["dependencies"]
    fn = next(d for d in deps if d["api_name"] == api_name)
    r = c.post("gradio_api/queue/join", json={"data": data, "fn_index": fn["id"], "session_hash": session,
                                              "event_data": None, "trigger_id": None})
    assert r.status_code == 200, r.text
    with c.stream("GET", "gradio_api/queue/data", params={"session_hash": session}) as s:
        for line in s.iter_lines():
            if line.startswith("data:"):
                msg = json.loads(line[5:])
                if msg.get("msg") == "process_completed":
                    assert msg.get("success"), msg
                    return msg["output"]["data"]
    raise AssertionError("no result")


def download_links(output: list) -> list[str]:
    links = []
    for v in output:
        v = v.get("value", v) if isinstance(v, dict) and "__type__" in v else v
        if isinstance(v, dict) and "/ldifs/download/" in str(v.get("url", "")):
            links.append(v["url"])
    return links


def spellings(path: Path) -> list[str]:
    p = str(path)
    return [p, quote(p, safe=""), p.replace("/", "//"), p.replace("/exports/", "/exports/./"),
            p.replace("/exports/", "/runs/../exports/"), "/./" + p.lstrip("/"), p.upper() if False else p + "/"]


@pytest.mark.slow
def test_two_users_downloads_and_private_events(fake_engine, tmp_path):
    from gradio.utils import get_upload_folder
    from gradio_client import Client

    from tasks import api
    from tasks.settings import get_settings

    with serve(auth="alice:pw1,bob:pw2", poll_s=0.5) as url:
        home = get_settings().home
        alice_api = Client(url, auth=("alice", "pw1"), verbose=False)
        job = alice_api.predict(SPEC, 0, api_name="/submit")
        deadline = time.monotonic() + 60
        while api.get_job("alice", job).state != "DONE":
            assert time.monotonic() < deadline and api.get_job("alice", job).state != "FAILED"
            time.sleep(0.3)
        alice, bob = login(url, "alice", "pw1"), login(url, "bob", "pw2")
        anon = httpx.Client(base_url=url, timeout=30)

        # alice opens her report in the UI: the download buttons get per-user links
        session = uuid.uuid4().hex[:11]
        # the page's picker learns the finished runs (inputs: picker, run asked for)
        call_event(alice, "report_refresh", [None, ""], session)
        links = download_links(call_event(alice, "report_select", [job], session))
        assert len(links) >= 4, links  # CSV, JSON, HTML report, YAML
        for link in links:
            r = alice.get(link)
            assert r.status_code == 200 and r.content, link
            assert "attachment" in r.headers["content-disposition"]
            assert bob.get(link).status_code == 404  # another signed-in user
            assert anon.get(link).status_code in (401, 403, 404)
            assert bob.get(link.replace("/ldifs/download/", "//ldifs/download/")).status_code in (401, 403, 404)

        # the old file route serves nothing under LDIFS_HOME to anyone, however it is spelled
        for kind in ("results", "csv", "yaml"):
            api.export_artifact("alice", job, kind)
        files = [p for p in home.rglob("*") if p.is_file()]
        assert any("exports" in p.parts for p in files) and any(p.name == "jobs.sqlite3" for p in files)
        link_dir = Path(get_upload_folder()) / uuid.uuid4().hex  # a symlink where gradio serves uploads from
        link_dir.mkdir(parents=True)
        try:
            for i, p in enumerate(files):
                (link_dir / f"l{i}").symlink_to(p)
                for who in (bob, alice):
                    for spelled in [*spellings(p), str(link_dir / f"l{i}")]:
                        r = who.get(f"gradio_api/file={spelled}")
                        assert r.status_code != 200, (spelled, r.status_code)
        finally:
            for q in link_dir.iterdir():
                q.unlink()
            link_dir.rmdir()

        # private events: not callable by name, on any of gradio's by-name routes
        for name in ("whoami", "report_refresh", "jobs_refresh", "report_select", "ds_import"):
            for route in ("call", "call/v2", "run", "api"):
                r = bob.post(f"gradio_api/{route}/{name}", json={"data": [job]})
                assert r.status_code == 404, (route, name, r.status_code)
            assert bob.post(f"gradio_api/call/{quote(name)}/", json={"data": []}).status_code == 404
        assert bob.post("gradio_api/call/jobs", json={"data": [""]}).status_code == 200  # the documented API works

        # API errors are plain text; priority is an integer in -10..10 only
        bob_api = Client(url, auth=("bob", "pw2"), verbose=False)
        with pytest.raises(Exception) as e:
            bob_api.predict("optim: {steps: 0}", 0, api_name="/submit")
        assert ">=" in str(e.value) and "&gt;" not in str(e.value)
        from tests.engine.test_specio import alias_bomb

        deep_json = '{"a":' * 5000 + "1" + "}" * 5000
        for hostile in (alias_bomb(9, 9), alias_bomb(10, 9), "[" * 5000 + "]" * 5000, deep_json):
            t0 = time.perf_counter()
            with pytest.raises(Exception) as e:
                bob_api.predict(hostile, 0, api_name="/submit")
            took = time.perf_counter() - t0
            assert took < 3 and len(str(e.value)) < 300 and "spec" in str(e.value), (took, str(e.value)[:300])
        for prio in (3.7, True, "5", 11):
            with pytest.raises(Exception, match="priority"):
                bob_api.predict(SPEC, prio, api_name="/submit")
        assert api.list_jobs("bob") == []
        assert os.access(home, os.R_OK)
