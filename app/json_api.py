"""Plain JSON routes for scripts and monitors: ``GET /api/jobs`` and ``GET /api/status/{job_id}``.

They answer what ``ldifs jobs --json`` and ``ldifs status ID --json`` print, straight from the job store,
without Gradio's event queue (whose two-step call costs a poller hundreds of milliseconds while a job
trains). Owner-scoped and signed in exactly like the UI: the acting user is what ``AppContext.user``
says for the request (the session cookie of the sign-in page, or Hugging Face OAuth); another user's job
is a 404 like a missing one.

    curl -s -b cookies.txt http://127.0.0.1:7860/api/jobs?state=RUNNING,QUEUED
    curl -s -b cookies.txt http://127.0.0.1:7860/api/status/<job id>

(``cookies.txt`` from ``curl -c cookies.txt -d username=… -d password=… http://127.0.0.1:7860/login``;
without auth, on 127.0.0.1, no cookie is needed.)
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import gradio as gr
import orjson  # what Gradio answers JSON with: several times faster than json for job lists
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from ldifs_engine.errors import LdifsError, SpecError

from .context import AppContext

log = logging.getLogger("ldifs.app")

JOBS_PATH = "/api/jobs"
STATUS_PATH = "/api/status/{job_id}"
MAX_LIMIT = 1000
# HTTP status per error class name (subclasses of LdifsError); anything else a user causes is a 400.
STATUS_OF = {"JobNotFound": 404, "QuotaExceeded": 429}
NO_STORE = {"Cache-Control": "no-store"}  # progress changes every second: no proxy may keep a copy


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=NO_STORE)


def _cookie_user(request: Request) -> str | None:
    """The user whose sign-in cookie the request carries, looked up the way Gradio's own ``/gradio_api/user``
    route does (``App.tokens`` keyed by the ``access-token[-unsecure]-<cookie_id>`` cookie), so these routes
    accept exactly the sign-ins the UI accepts. None when signed out — or when a Gradio upgrade renamed
    those internals: then these routes refuse everyone (``test_json_api`` says so) rather than guess."""
    app = request.app
    cookie_id, tokens = getattr(app, "cookie_id", None), getattr(app, "tokens", None)
    if not cookie_id or not isinstance(tokens, dict):
        return None
    token = request.cookies.get(f"access-token-{cookie_id}") or request.cookies.get(
        f"access-token-unsecure-{cookie_id}")
    return tokens.get(token) if token else None


def _handler(ctx: AppContext, work: Callable[[str, Request], Any]) -> Callable[[Request], Awaitable[Any]]:
    async def endpoint(request: Request) -> Any:
        try:
            user = ctx.user(gr.Request(request=request, username=_cookie_user(request)))
        except gr.Error:
            return _error(401, "not signed in: sign in at /login first (see the API docs)")
        try:
            # the store is synchronous: keep the event loop (and every other request) free meanwhile
            body = await run_in_threadpool(work, user, request)
            return Response(orjson.dumps(body), media_type="application/json", headers=NO_STORE)
        except LdifsError as e:
            return _error(STATUS_OF.get(type(e).__name__, 400), str(e))
        except Exception:  # noqa: BLE001 — never a traceback to a client
            log.exception("unexpected error in %s", request.url.path)
            return _error(500, "internal error; the server log has the details")

    return endpoint


def json_routes(ctx: AppContext) -> list[APIRoute]:
    """The routes, for ``Blocks.launch(app_kwargs={"routes": ...})`` (they take precedence over Gradio's)."""

    def jobs(user: str, request: Request) -> list[dict]:
        q = request.query_params
        states = [s.strip().upper() for s in q.get("state", "").split(",") if s.strip()] or None
        try:
            limit = int(q.get("limit", "200"))
        except ValueError:
            raise SpecError(f"limit: {q.get('limit')!r} is not a whole number; allowed: 1 to {MAX_LIMIT}") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise SpecError(f"limit: {limit} is out of range; allowed: 1 to {MAX_LIMIT}")
        return ctx.api.job_summaries(user, states=states, limit=limit)

    def status(user: str, request: Request) -> dict:
        return ctx.api.status_dict(user, request.path_params["job_id"])

    return [
        APIRoute(JOBS_PATH, _handler(ctx, jobs), methods=["GET"], include_in_schema=False),
        APIRoute(STATUS_PATH, _handler(ctx, status), methods=["GET"], include_in_schema=False),
    ]
