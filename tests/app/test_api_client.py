"""The scriptable API, driven with gradio_client against the real app, tasks layer and huey consumer."""
from __future__ import annotations

import copy
import time
from pathlib import Path

import httpx
import pytest
import yaml
from gradio_client import Client

from app import forms

from .conftest import serve

pytestmark = pytest.mark.timeout(300)
ASSETS = Path(__file__).resolve().parents[2] / "ldifs_engine" / "assets"


def quick_demo_spec(steps: int = 3) -> dict:
    """The "Quick demo" preset, shrunk so a 2-core CI box finishes it in well under a minute."""
    spec = copy.deepcopy(forms.load_presets()["Quick demo"][0])
    if not (ASSETS / "concept-clip-tiny.safetensors").is_file():
        spec["backbone"] = "tiny-vit-random"  # built-in weights not generated in this checkout
    data = spec.setdefault("data", {})
    data.update(target=data.get("target", "quadrant"), max_train_samples=64, max_eval_samples=40)
    controls = [c for c in (data.get("controls") or ["shape", "colour"]) if c != data["target"]]
    data["controls"] = controls[:2] or ["shape"]
    spec.setdefault("optim", {}).update(steps=steps, epochs=None, batch_size=8, micro_batch=None, warmup_steps=1,
                                        checkpoint_every=2)
    spec.setdefault("eval", {}).update(linear_probe=False, curve_points=1, wise_ft_alphas=[])
    return spec


def wait_state(client: Client, job_id: str, states: tuple[str, ...], timeout: float, pred=None) -> dict:
    deadline = time.monotonic() + timeout
    st: dict = {}
    while time.monotonic() < deadline:
        st = client.predict(job_id, api_name="/status")
        if st["state"] in states and (pred is None or pred(st)):
            return st
        if st["state"] == "FAILED":
            raise AssertionError(f"job failed: {st.get('message')}")
        time.sleep(0.5)
    raise AssertionError(f"job never reached {states}; last status {st}")


@pytest.mark.slow
def test_quick_demo_end_to_end_through_the_api(fast_env):
    with serve() as url:
        c = Client(url, verbose=False)
        job_id = c.predict(yaml.safe_dump(quick_demo_spec()), 0, api_name="/submit")
        assert isinstance(job_id, str) and len(job_id) >= 8
        st = wait_state(c, job_id, ("DONE",), timeout=240)
        assert st["step"] == 3 and "spec" not in st
        report = c.predict(job_id, api_name="/report")
        assert report["schema"] == "ldifs.results/1" and report["target"] in report["datasets"]
        csv_text = c.predict(job_id, api_name="/report_csv")
        assert csv_text.splitlines()[0].startswith("dataset,role,metric")
        assert any(j["id"] == job_id for j in c.predict("DONE", api_name="/jobs"))


def test_stop_and_cancel_through_the_api(fake_engine):
    with serve() as url:
        c = Client(url, verbose=False)
        long = yaml.safe_dump({"name": "long", "optim": {"steps": 400, "checkpoint_every": 50, "batch_size": 8}})
        running = c.predict(long, 0, api_name="/submit")
        queued = c.predict(long, 0, api_name="/submit")  # one worker: this one waits
        wait_state(c, running, ("RUNNING",), timeout=30, pred=lambda s: s["step"] >= 2)
        assert c.predict(queued, api_name="/status")["state"] == "QUEUED"
        assert c.predict(queued, "stop", api_name="/cancel")["state"] == "CANCELLED"
        c.predict(running, "stop", api_name="/cancel")
        st = wait_state(c, running, ("CANCELLED",), timeout=30)
        assert st["resumable"] and st["checkpoint_step"] is not None
        assert c.predict(running, api_name="/report") == {}


def test_spec_problems_come_back_readable(fake_engine):
    with serve(worker=False) as url:
        c = Client(url, verbose=False)
        with pytest.raises(Exception) as e:
            c.predict("optim: {lr: -1, steps: 5}\ndata: {target: nowhere}", 0, api_name="/submit")
        msg = str(e.value)
        assert "optim.lr" in msg and "data.target" in msg
        with pytest.raises(Exception, match="not valid YAML"):
            c.predict("a: [", 0, api_name="/submit")


def test_auth_required_and_jobs_are_owner_scoped(fake_engine):
    with serve(auth="alice:pw1,bob:pw2", worker=False) as url:
        with pytest.raises(Exception):
            Client(url, verbose=False)  # no credentials: the app refuses to talk
        with pytest.raises(Exception):
            Client(url, auth=("alice", "wrong"), verbose=False)
        r = httpx.post(f"{url}gradio_api/call/submit", json={"data": ["optim: {steps: 3}", 0]})
        assert r.status_code in (401, 403)
        alice = Client(url, auth=("alice", "pw1"), verbose=False)
        job_id = alice.predict(yaml.safe_dump({"optim": {"steps": 3}}), 0, api_name="/submit")
        assert [j["id"] for j in alice.predict("", api_name="/jobs")] == [job_id]
        bob = Client(url, auth=("bob", "pw2"), verbose=False)
        assert bob.predict("", api_name="/jobs") == []
        with pytest.raises(Exception, match="no job|not found"):
            bob.predict(job_id, api_name="/status")
        with pytest.raises(Exception, match="no job|not found"):
            bob.predict(job_id, "kill", api_name="/cancel")


def test_oversize_upload_is_rejected(fake_engine):
    with serve(worker=False, max_file_size="1kb") as url:
        r = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.zip", b"\0" * 4096, "application/zip")})
        assert r.status_code == 413


def test_spaces_oauth_mode_refuses_anonymous_calls(fake_engine, monkeypatch):
    """On a Space with hf_oauth, a visitor who has not signed in with Hugging Face can start nothing."""
    pytest.importorskip("authlib")
    import gradio.oauth as oauth

    monkeypatch.setattr(oauth, "get_space", lambda: "me/studio")  # the real OAuth routes, not the local mock
    env = {"SPACE_ID": "me/studio", "SPACE_HOST": "localhost", "OAUTH_CLIENT_ID": "x",
           "OAUTH_CLIENT_SECRET": "y", "OAUTH_SCOPES": "openid profile", "OPENID_PROVIDER_URL": "https://huggingface.co"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
        if hasattr(oauth, k):
            monkeypatch.setattr(oauth, k, v)
    with serve(worker=False) as url:
        c = Client(url, verbose=False)
        for args, name in ((("optim: {steps: 3}", 0), "/submit"), (("",), "/jobs"), (("x",), "/status")):
            with pytest.raises(Exception, match="sign in"):
                c.predict(*args, api_name=name)
