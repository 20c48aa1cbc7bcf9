"""Per-user downloads and the HTTP guard in front of gradio.

Exports (CSV, results.json, YAML, checkpoint zip, the HTML report) are never placed on a path gradio
serves. A handler that has checked the acting user asks ``download_url`` for a link: a random token
(256 bits) that names one file, belongs to that user and expires after ``TTL_S``. ``Guard`` (an ASGI
middleware around the gradio app) serves ``/ldifs/download/<token>/<name>`` only to the signed-in user
the token was issued to — checked on every request — and answers 404 to anyone else.

The guard also closes two doors gradio leaves open:
- an event that is not part of the documented API is not callable by name (``/gradio_api/call/<name>``,
  ``/call/v2``, ``/run``, ``/api``), whatever its ``api_visibility`` hides from the client;
- ``/gradio_api/file=`` never serves anything under the data folder, however the path is spelled
  (encoded, ``..``, ``//``, symlinks: the real path is compared).
"""
from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote as urlquote

import gradio as gr
from gradio.data_classes import FileData

ROUTE = "/ldifs/download/"
TTL_S = 15 * 60.0  # a link works this long after the report (or checkpoint) was opened
MAX_LINKS = 20_000  # in memory; expired ones are dropped first
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
_BY_NAME = re.compile(r"/gradio_api/(?:call/v2|call|run|api)/([^/]+)(?:/[^/]*)?/?$")
_FILE = "/gradio_api/file="


@dataclass(frozen=True)
class Link:
    user: str
    path: Path
    filename: str
    expires: float


class Links:
    """Issued download tokens (process memory: a restart invalidates them, the report issues new ones)."""

    def __init__(self) -> None:
        self._links: dict[str, Link] = {}
        self._lock = threading.Lock()

    def issue(self, user: str, path: str | os.PathLike, filename: str | None = None, ttl_s: float = TTL_S) -> str:
        now = time.time()
        name = _SAFE_NAME.sub("_", filename or Path(path).name).strip("._") or "download"
        token = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._links) >= MAX_LINKS:
                self._links = {t: link for t, link in self._links.items() if link.expires > now}
                while len(self._links) >= MAX_LINKS:  # still full: the oldest go
                    self._links.pop(next(iter(self._links)))
            self._links[token] = Link(str(user), Path(path), name, now + ttl_s)
        return token

    def get(self, token: str) -> Link | None:
        with self._lock:
            link = self._links.get(token)
            if link is not None and link.expires <= time.time():
                self._links.pop(token, None)
                return None
            return link


LINKS = Links()


def download_url(request: gr.Request | None, user: str, path: str | os.PathLike, filename: str | None = None) -> str:
    """A link to ``path`` that only ``user`` can open, for ``TTL_S`` seconds.

    Absolute (``http://host/root/ldifs/download/…``) when the request says where the app is served, so
    ``PrivateDownloadButton`` hands it to the browser as is."""
    token = LINKS.issue(user, path, filename)
    link = LINKS.get(token)
    rel = f"{ROUTE}{token}/{urlquote(link.filename if link else 'download')}"
    raw = getattr(request, "request", None) if request is not None else None
    if raw is None or not hasattr(raw, "url"):
        return rel
    from gradio import route_utils

    app = raw.scope.get("app") if hasattr(raw, "scope") else None
    root = route_utils.get_root_url(request=raw, route_path=raw.url.path, root_path=getattr(app, "root_path", None))
    return root.rstrip("/") + rel


def _private_link(value: Any) -> FileData | None:
    """A ``download_url`` link as the FileData the browser fetches itself (None for anything else)."""
    if isinstance(value, str) and value.startswith(("http://", "https://")) and ROUTE in value:
        return FileData(path=value, url=value, orig_name=value.rsplit("/", 1)[-1])
    return None


def _serve_private_links() -> None:
    """Every ``DownloadButton`` hands a ``download_url`` link to the browser as is (once per process).

    On the class, not on one button: an update that a handler returns (``gr.DownloadButton(value=link,
    visible=True)``) makes gradio re-create the button from its constructor arguments, and a patch on the
    first instance was lost — gradio then fetched the link itself, was refused ("Hostname 127.0.0.1 failed
    validation") and Prepare model card / Prepare checkpoint never offered a download. Only links to this
    app's own route are affected; any other value goes through gradio's own postprocess."""
    plain = gr.DownloadButton.postprocess
    if getattr(plain, "_ldifs_private_links", False):
        return

    def postprocess(self: gr.DownloadButton, value: str | Path | None) -> FileData | None:
        return _private_link(value) or plain(self, value)

    postprocess._ldifs_private_links = True  # type: ignore[attr-defined]
    gr.DownloadButton.postprocess = postprocess  # type: ignore[method-assign]


def PrivateDownloadButton(*args: Any, **kwargs: Any) -> gr.DownloadButton:  # noqa: N802 — used like a component
    """A ``DownloadButton`` whose value may be a ``download_url`` link: the browser fetches it from the
    guard's route (user-checked); gradio neither copies it into its cache nor fetches it itself.

    A factory, not a subclass: gradio writes a ``.pyi`` stub next to any module that subclasses a component."""
    _serve_private_links()
    return gr.DownloadButton(*args, **kwargs)


# ---- the guard -------------------------------------------------------------------------------------------
def _username(scope: dict, auth_mode: str) -> str | None:
    """The signed-in user of a raw request, by gradio's own cookie (password) or session (OAuth)."""
    app = scope.get("app")
    if auth_mode == "password":
        from starlette.requests import Request

        req = Request(scope)
        cookie_id = getattr(app, "cookie_id", "")
        token = req.cookies.get(f"access-token-{cookie_id}") or req.cookies.get(f"access-token-unsecure-{cookie_id}")
        return (getattr(app, "tokens", {}) or {}).get(token) if token else None
    if auth_mode == "oauth":
        from starlette.requests import Request

        from .context import _oauth_username

        return _oauth_username(gr.Request(request=Request(scope)))
    return None


def _inside(path: str, roots: Sequence[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


class Guard:
    """ASGI middleware; ``auth_mode`` as ``build_app``, ``protected``: folders never served by gradio."""

    def __init__(self, app: Any, *, auth_mode: str = "none", protected: Sequence[str] = (),
                 default_user: str | None = None) -> None:
        self.app = app
        self.auth_mode = auth_mode
        self.protected = [os.path.realpath(p) for p in protected if p]
        self.default_user = default_user

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        i = path.find(ROUTE)
        if i >= 0 and scope.get("method") in ("GET", "HEAD"):
            return await self._download(path[i + len(ROUTE):], scope, receive, send)
        m = _BY_NAME.search(path)
        if m and not self._public(scope, m.group(1)):
            return await _plain(404, "Not Found", scope, receive, send)
        j = path.find(_FILE)
        if j >= 0 and self.protected and _inside(path[j + len(_FILE):] or "/", self.protected):
            return await _plain(403, "File not allowed.", scope, receive, send)
        return await self.app(scope, receive, send)

    @staticmethod
    def _public(scope: dict, name: str) -> bool:
        app = scope.get("app")
        try:
            blocks = app.get_blocks()
        except Exception:  # noqa: BLE001 — not launched yet: nothing is callable
            return False
        return any(fn.api_name == name and fn.api_visibility == "public" for fn in blocks.fns.values())

    async def _download(self, rest: str, scope: dict, receive: Any, send: Any) -> None:
        token = rest.split("/", 1)[0]
        link = LINKS.get(token) if token else None
        if link is not None and self.auth_mode != "none":
            if _username(scope, self.auth_mode) != link.user:
                link = None  # another user, or nobody: exactly like an unknown token
        if link is None or not link.path.is_file():
            return await _plain(404, "Not Found (download links expire; open the report again)", scope, receive, send)
        from starlette.responses import FileResponse

        resp = FileResponse(link.path, filename=link.filename, content_disposition_type="attachment",
                            headers={"Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"})
        await resp(scope, receive, send)


async def _plain(status: int, text: str, scope: dict, receive: Any, send: Any) -> None:
    from starlette.responses import PlainTextResponse

    await PlainTextResponse(text, status_code=status, headers={"Cache-Control": "no-store"})(scope, receive, send)
