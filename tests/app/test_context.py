"""Who the acting user is, and how errors reach the browser (app/context.py)."""
from __future__ import annotations

import time
from types import SimpleNamespace

import gradio as gr
import pytest

from app.context import AppContext, user_errors
from ldifs_engine.errors import SpecError

from .samples import HOSTILE


def _req(username=None, session=None):
    return SimpleNamespace(username=username, request=SimpleNamespace(session=session or {}))


def test_local_mode_uses_the_default_user():
    assert AppContext(api=None, default_user="me").user(_req()) == "me"


def test_password_mode_needs_a_signed_in_user():
    ctx = AppContext(api=None, auth_mode="password")
    assert ctx.user(_req("alice")) == "alice"
    with pytest.raises(gr.Error):
        ctx.user(_req(None))
    with pytest.raises(gr.Error):
        ctx.user(None)


def test_oauth_mode_reads_the_hugging_face_profile_and_rejects_a_missing_one():
    ctx = AppContext(api=None, auth_mode="oauth")
    info = {"userinfo": {"preferred_username": "hf-alice"}, "expires_at": time.time() + 3600,
            "access_token": "x", "scope": "openid profile"}
    assert ctx.user(_req(session={"oauth_info": info})) == "hf-alice"
    with pytest.raises(gr.Error):
        ctx.user(_req(session={}))
    expired = dict(info, expires_at=time.time() - 10)
    with pytest.raises(gr.Error):
        ctx.user(_req(session={"oauth_info": expired}))


def test_user_errors_become_escaped_gradio_errors():
    @user_errors
    def bad():
        raise SpecError([f"data.target: unknown dataset {HOSTILE!r}"])

    with pytest.raises(gr.Error) as e:
        bad()
    assert "<img" not in e.value.message and "&lt;img" in e.value.message

    @user_errors
    def crash():
        raise KeyError("internal detail")

    with pytest.raises(gr.Error) as e:
        crash()
    assert "internal detail" not in e.value.message and "KeyError" in e.value.message


def test_scratch_files_have_server_chosen_names():
    ctx = AppContext(api=None)
    p = ctx.scratch_file("../../etc/passwd")
    assert p.parent.parent == ctx.tmp_dir and ".." not in p.name and "/" not in p.name


def test_old_scratch_folders_are_pruned_and_the_temp_dir_goes_with_the_context(tmp_path):
    import gc
    import os
    import time

    from app import context

    ctx = AppContext(api=None, tmp_dir=tmp_path / "scratch")
    old = ctx.scratch_file("old.csv")
    old.write_text("x")
    stale = time.time() - context.SCRATCH_TTL_S - 10
    os.utime(old.parent, (stale, stale))
    fresh = ctx.scratch_file("new.csv")
    fresh.write_text("y")
    assert not old.parent.exists() and fresh.exists()

    root = ctx.tmp_dir
    del ctx
    gc.collect()
    assert not root.exists()
