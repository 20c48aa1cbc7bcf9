"""What every tab needs: the service API, who the acting user is, and how errors reach the user."""
from __future__ import annotations

import functools
import logging
import re
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr

from ldifs_engine.errors import LdifsError

from . import text

log = logging.getLogger("ldifs.app")

AUTH_MODES = ("none", "password", "oauth")
LOCAL_USER = "local"
SCRATCH_TTL_S = 3600.0  # downloads are copied into Gradio's own cache when served; ours can go after this
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass
class AppContext:
    """Shared by the tab builders. ``api`` is ``tasks.api`` (or a test double with the same functions)."""

    api: Any
    auth_mode: str = "none"
    default_user: str = LOCAL_USER
    poll_s: float = 2.0
    tmp_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ldifs-app-")))

    def __post_init__(self) -> None:
        # A long-running server must not fill /tmp: the folder goes with the process (or the context).
        weakref.finalize(self, shutil.rmtree, str(self.tmp_dir), True)

    def user(self, request: gr.Request | None) -> str:
        """The acting user: the signed-in name when auth is on, else the local default user.

        With auth on, a request without a user is refused (an API call that slipped past the login
        must not act as anyone).
        """
        if self.auth_mode == "none":
            return self.default_user
        name = None
        if request is not None:
            if self.auth_mode == "password":
                name = request.username
            else:
                name = _oauth_username(request)
        if not name:
            raise gr.Error(text.SIGN_IN, title="Not signed in", print_exception=False)
        return str(name)

    def scratch_file(self, filename: str) -> Path:
        """A fresh private folder under the temp dir holding ``filename`` (a server-chosen name).

        Folders older than ``SCRATCH_TTL_S`` are removed first, so downloads do not pile up."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - SCRATCH_TTL_S
        for old in self.tmp_dir.iterdir():
            try:
                if old.is_dir() and old.stat().st_mtime < cutoff:
                    shutil.rmtree(old, ignore_errors=True)
            except OSError:  # another request removed it first
                pass
        d = Path(tempfile.mkdtemp(dir=self.tmp_dir))
        return d / (_SAFE_NAME.sub("_", filename).strip("._") or "file")

    def scratch_copy(self, src: str | Path, filename: str) -> Path:
        """A copy of a server-side file (never a browser-supplied path) in a fresh scratch folder."""
        dest = self.scratch_file(filename)
        shutil.copyfile(src, dest)
        return dest


def _oauth_username(request: gr.Request) -> str | None:
    """The Hugging Face username of a valid OAuth session, or None."""
    raw = getattr(request, "request", None)
    session = getattr(raw, "session", None) if raw is not None else None
    if session is None:
        return None
    try:
        from gradio import oauth

        info = oauth._get_valid_oauth_info_from_session(session)  # checks expiry
    except Exception:  # noqa: BLE001 — no OAuth support configured = not signed in
        info = None
    if not info:
        return None
    userinfo = info.get("userinfo") or {}
    return userinfo.get("preferred_username") or None


def user_errors(fn: Callable, *, escape: bool = True) -> Callable:
    """Turn the errors a user can cause into a readable ``gr.Error``; log anything else.

    ``escape``: HTML-escape the message (browser toasts); the scripted API gets it verbatim."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except LdifsError as e:
            raise gr.Error(text.html_text(str(e)) if escape else str(e),
                           title=type(e).__name__.replace("Error", " error").strip(),
                           print_exception=False) from None
        except Exception as e:  # noqa: BLE001 — last line of defence: no tracebacks in the browser
            log.exception("unexpected error in %s", fn.__name__)
            raise gr.Error(f"Something went wrong ({type(e).__name__}). The server log has the details.") from None

    return wrapper


def api_errors(fn: Callable) -> Callable:
    """``user_errors`` for the scripted API: messages arrive as plain text (no ``&gt;``)."""
    return user_errors(fn, escape=False)


def quiet(fn: Callable, fallback: Callable[..., Any]) -> Callable:
    """For polling handlers: never raise; on error return ``fallback(*args)`` (usually skips)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001
            log.debug("poll handler %s failed", fn.__name__, exc_info=True)
            return fallback(*args, **kwargs)

    return wrapper


def on_page_load(fn: Callable, n_outputs: int) -> Callable:
    """A page-load handler that shows nothing (instead of an error toast) to a visitor not signed in yet."""
    skip = (lambda *a, **k: gr.skip()) if n_outputs == 1 else (lambda *a, **k: [gr.skip()] * n_outputs)
    return quiet(fn, skip)
