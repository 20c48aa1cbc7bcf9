"""Launch settings and authentication (app/main.py): never public without auth."""
from __future__ import annotations

import hashlib

import pytest

from app import main
from app.main import LaunchSettings, launch_kwargs
from ldifs_engine.errors import SpecError


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.org"])
def test_public_bind_without_auth_is_refused(host):
    with pytest.raises(SpecError, match="refusing to serve"):
        launch_kwargs(LaunchSettings(host=host))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.5"])
def test_loopback_without_auth_is_fine(host):
    kw = launch_kwargs(LaunchSettings(host=host))
    assert kw["auth"] is None and kw["server_name"] == host


def test_safe_defaults():
    kw = launch_kwargs(LaunchSettings(host="0.0.0.0", auth="alice:secret", exports_dir="/x/exports",
                                      blocked_dirs=("/x/runs",)))
    assert kw["ssr_mode"] is False and kw["share"] is False
    assert kw["enable_monitoring"] is False and kw["run_history"] is False
    assert kw["max_file_size"] == main.DEFAULT_MAX_FILE_SIZE
    # exports are served per user by app.downloads, never by gradio's file route
    assert kw["allowed_paths"] == [] and set(kw["blocked_paths"]) == {"/x/exports", "/x/runs"}
    assert callable(kw["auth"]) and kw["auth"]("alice", "secret") and not kw["auth"]("alice", "nope")
    assert not kw["auth"]("mallory", "secret")


def test_oauth_counts_as_auth_on_spaces():
    pytest.importorskip("authlib")  # gradio[oauth]
    s = LaunchSettings.from_env({"SPACE_ID": "me/studio", "OAUTH_CLIENT_ID": "x"}, host="0.0.0.0")
    assert main.auth_mode(s) == "oauth"
    assert launch_kwargs(s)["auth"] is None  # OAuth: handlers check the profile themselves
    no_oauth = LaunchSettings.from_env({"SPACE_ID": "me/studio"}, host="0.0.0.0")
    with pytest.raises(SpecError):
        launch_kwargs(no_oauth)


def test_auth_from_env_and_file(tmp_path):
    s = LaunchSettings.from_env({"LDIFS_AUTH": "a:1,b:2:with-colon"}, host="0.0.0.0")
    check = launch_kwargs(s)["auth"]
    assert check("a", "1") and check("b", "2:with-colon") and not check("a", "2")
    f = tmp_path / "users"
    f.write_text("# team\ncarol:" + hashlib.sha256(b"pw").hexdigest() + "\n")
    check = launch_kwargs(LaunchSettings.from_env({"LDIFS_AUTH_FILE": str(f)}, host="0.0.0.0"))["auth"]
    assert check("carol", "pw") and not check("carol", "PW")


@pytest.mark.parametrize("value", ["alice", "alice:", ":pw", ","])
def test_malformed_auth_env(value):
    with pytest.raises(SpecError, match="LDIFS_AUTH"):
        main.parse_auth_env(value)


@pytest.mark.parametrize("line", ["bob:notahash", "bob", "bob:" + "g" * 64])
def test_malformed_auth_file(line):
    with pytest.raises(SpecError, match="line 1"):
        main.parse_auth_file(line)


def test_missing_auth_file_is_a_readable_error(tmp_path):
    with pytest.raises(SpecError, match="cannot read"):
        launch_kwargs(LaunchSettings(host="0.0.0.0", auth_file=str(tmp_path / "none")))


def test_oauth_without_its_libraries_is_a_readable_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_authlib(name, *a, **k):
        if name == "authlib":
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_authlib)
    with pytest.raises(SpecError, match=r"gradio\[oauth\]"):
        launch_kwargs(LaunchSettings(host="0.0.0.0", oauth=True))


def test_bad_port():
    with pytest.raises(SpecError, match="port"):
        launch_kwargs(LaunchSettings(port=0))


def test_hash_password_is_salted_scrypt_and_matches_file_format():
    a, b = main.hash_password("pw"), main.hash_password("pw")
    assert a.startswith("scrypt$") and a != b  # salted
    check = main.make_auth(main.parse_auth_file(f"x:{a}\ny:{b}"))
    assert check("x", "pw") and check("y", "pw") and not check("x", "PW") and not check("z", "pw")


def test_old_sha256_lines_still_work_with_a_warning(caplog):
    with caplog.at_level("WARNING", logger="ldifs.app"):
        check = main.make_auth(main.parse_auth_file("old:" + hashlib.sha256(b"pw").hexdigest()))
    assert check("old", "pw") and not check("old", "pw2")
    assert "unsalted SHA-256" in caplog.text and "old" in caplog.text


def test_every_event_has_an_explicit_api_name_and_only_the_api_is_public():
    from .fake_api import FakeApi

    demo = main.build_app(FakeApi())
    deps = demo.get_config_file()["dependencies"]
    assert all(d.get("api_name") for d in deps)
    public = {d["api_name"] for d in deps if d.get("api_visibility") != "private"}
    assert public == {"submit", "jobs", "status", "cancel", "report", "report_csv"}


def test_setup_warnings_are_shown_at_the_top():
    from .fake_api import FakeApi

    api = FakeApi()
    api.warnings = ["An NVIDIA GPU is visible but torch 2.10.0+cpu is a CPU-only build: runs will train on the CPU."]
    comps = main.build_app(api).get_config_file()["components"]
    notes = [c for c in comps if c.get("props", {}).get("elem_id") == "setup-warnings"]
    assert len(notes) == 1 and "CPU-only build" in notes[0]["props"]["value"]
    quiet = main.build_app(FakeApi()).get_config_file()["components"]
    assert not [c for c in quiet if c.get("props", {}).get("elem_id") == "setup-warnings"]
