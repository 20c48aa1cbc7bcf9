"""The LDIFS Studio web app: ``build_app()`` lays out the tabs, ``launch()`` serves it safely.

Run it with ``ldifs app`` (127.0.0.1:7860, embedded job worker). Binding beyond localhost requires
authentication: ``LDIFS_AUTH="user:pass,…"``, ``LDIFS_AUTH_FILE`` (lines from ``ldifs hash-password``), or
Hugging Face OAuth on Spaces; ``launch_kwargs`` refuses to start public without one of them.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
import ipaddress
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported anywhere

import gradio as gr  # noqa: E402
from starlette.middleware import Middleware  # noqa: E402

from ldifs_engine.errors import SpecError  # noqa: E402

from . import charts, passwords, text  # noqa: E402
from .context import AppContext, api_errors, user_errors  # noqa: E402
from .downloads import Guard  # noqa: E402
from .json_api import json_routes  # noqa: E402
from .tabs import compare, datasets, jobs, new_run, report  # noqa: E402
from .tabs.common import PRIVATE  # noqa: E402

log = logging.getLogger("ldifs.app")

DEFAULT_MAX_FILE_SIZE = "500mb"
STATIC = Path(__file__).parent / "static"


# ---- authentication ---------------------------------------------------------------------------------
def _digest(password: str) -> bytes:
    return hashlib.sha256(password.encode("utf-8")).digest()


def parse_auth_env(value: str) -> dict[str, bytes]:
    """``"alice:pw1,bob:pw2"`` → {user: sha256(password)}; malformed entries are a ``SpecError``."""
    out: dict[str, bytes] = {}
    for i, item in enumerate(x for x in value.split(",") if x.strip()):
        user, sep, password = item.partition(":")
        user = user.strip()
        if not sep or not user or not password:
            raise SpecError(f"LDIFS_AUTH: entry {i + 1} must look like user:password")
        out[user] = _digest(password)
    if not out:
        raise SpecError("LDIFS_AUTH: no user:password entries")
    return out


def parse_auth_file(content: str, source: str = "LDIFS_AUTH_FILE") -> dict[str, Callable[[str], bool]]:
    """Lines ``user:<hash>`` (``#`` comments allowed) → {user: verifier}.

    ``<hash>`` is what ``ldifs hash-password`` prints (salted scrypt); old ``<64 hex of sha256>`` lines
    are still accepted, with a warning naming them."""
    out: dict[str, Callable[[str], bool]] = {}
    legacy = []
    for n, line in enumerate(content.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, stored = line.partition(":")
        verifier = passwords.parse_hash(stored) if sep and user.strip() else None
        if verifier is None:
            raise SpecError(f"{source}: line {n} must look like user:<hash from `ldifs hash-password USER`>")
        out[user.strip()] = verifier
        if passwords.is_legacy(stored):
            legacy.append(user.strip())
    if not out:
        raise SpecError(f"{source}: no user entries")
    if legacy:
        log.warning("%s: %d user(s) have unsalted SHA-256 password lines (%s); re-hash them with "
                    "`ldifs hash-password USER` (salted scrypt)", source, len(legacy), ", ".join(legacy[:5]))
    return out


def make_auth(users: Mapping[str, bytes | Callable[[str], bool]]) -> Callable[[str, str], bool]:
    """A Gradio ``auth=`` callable: sha256 digests (``LDIFS_AUTH``, in memory only) or verifiers (auth file),
    compared in constant time; an unknown user costs as much as a known one."""
    table = dict(users)

    def check(username: str, password: str) -> bool:
        expected = table.get(username)
        password = password or ""
        if expected is None:
            passwords.dummy_check(password)
            hmac.compare_digest(_digest(password), _digest("\0not-a-user\0"))
            return False
        if callable(expected):
            return bool(expected(password))
        return hmac.compare_digest(_digest(password), expected)

    return check


def hash_password(password: str) -> str:
    """The hash part of an ``LDIFS_AUTH_FILE`` line: salted scrypt (``ldifs hash-password``)."""
    return passwords.hash_password(password)


# ---- launch settings ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchSettings:
    """Where and how to serve; ``from_env`` fills what the command line did not."""

    host: str = "127.0.0.1"
    port: int = 7860
    auth: str | None = None  # "user:pass,…" (LDIFS_AUTH)
    auth_file: str | None = None  # LDIFS_AUTH_FILE
    oauth: bool = False  # Hugging Face OAuth (a Space with hf_oauth: true)
    max_file_size: str | int = DEFAULT_MAX_FILE_SIZE
    root_path: str | None = None
    exports_dir: str | None = None  # never served by gradio: downloads go through app.downloads (per user)
    blocked_dirs: tuple[str, ...] = ()  # never served: run dirs, datasets, caches, databases
    home: str | None = None  # LDIFS_HOME: nothing under it is served by gradio's file route

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> LaunchSettings:
        env = os.environ if env is None else env
        given = {k: v for k, v in given.items() if v is not None}
        given.setdefault("auth", env.get("LDIFS_AUTH") or None)
        given.setdefault("auth_file", env.get("LDIFS_AUTH_FILE") or None)
        given.setdefault("oauth", bool(env.get("SPACE_ID") and env.get("OAUTH_CLIENT_ID")))
        given.setdefault("max_file_size", env.get("LDIFS_MAX_FILE_SIZE") or DEFAULT_MAX_FILE_SIZE)
        given.setdefault("root_path", env.get("LDIFS_ROOT_PATH") or None)
        return cls(**given)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach."""
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def auth_mode(s: LaunchSettings) -> str:
    if s.auth or s.auth_file:
        return "password"
    return "oauth" if s.oauth else "none"


def launch_kwargs(s: LaunchSettings) -> dict[str, Any]:
    """The keyword arguments for ``Blocks.launch``; raises ``SpecError`` for an unsafe setup.

    Public (non-loopback) binds need authentication. SSR, analytics, run history, monitoring and
    share links stay off; uploads are capped by ``max_file_size``.
    """
    if not isinstance(s.port, int) or not 1 <= s.port <= 65535:
        raise SpecError(f"port: {s.port!r} is not a port number (1–65535)")
    mode = auth_mode(s)
    if s.auth and s.auth_file:
        raise SpecError("auth: give LDIFS_AUTH or LDIFS_AUTH_FILE, not both")
    public = not is_loopback(s.host)
    if mode == "oauth":
        try:
            import authlib  # noqa: F401 — what gradio's OAuth routes need
            import itsdangerous  # noqa: F401
        except ImportError:
            raise SpecError("oauth: Hugging Face sign-in needs `pip install 'gradio[oauth]'`") from None
    if public and mode == "none":
        raise SpecError(
            f"host: refusing to serve on {s.host} without authentication — anyone who can reach it could "
            "spend your compute. Set LDIFS_AUTH=user:password (or LDIFS_AUTH_FILE, or --auth), or bind to 127.0.0.1.")
    auth = None
    if mode == "password":
        if s.auth_file:
            try:
                content = Path(s.auth_file).read_text(encoding="utf-8")
            except OSError as e:
                raise SpecError(f"LDIFS_AUTH_FILE: cannot read {s.auth_file} ({e.strerror})") from None
            auth = make_auth(parse_auth_file(content))
        else:
            auth = make_auth(parse_auth_env(s.auth or ""))
    # Downloads are served per user by app.downloads.Guard; gradio itself serves nothing of ours.
    protected = [p for p in (s.home, s.exports_dir, *s.blocked_dirs) if p]
    kw: dict[str, Any] = dict(
        server_name=s.host, server_port=s.port, auth=auth, share=False, ssr_mode=False,
        max_file_size=s.max_file_size, enable_monitoring=False, run_history=False, show_error=False,
        strict_cors=True, mcp_server=False, pwa=False, footer_links=["api"], favicon_path=None,
        allowed_paths=[], blocked_paths=protected,
        app_kwargs={"middleware": [Middleware(Guard, auth_mode=mode, protected=protected)]},
        auth_message="Sign in to LDIFS Studio." if auth else None, css_paths=[STATIC / "app.css"],
        theme=theme(),
    )
    if s.root_path:
        kw["root_path"] = s.root_path
    return kw


def theme() -> gr.themes.Base:
    """The Soft theme with WCAG AA contrast (axe-core, tests/e2e/test_accessibility.py).

    Soft draws labels indigo-500 on indigo-100 (3.6:1), primary buttons and selected radios white on
    indigo-500 (4.46:1) and secondary text slate-400 (2.5:1); the overrides below use darker shades
    (≥ 4.5:1). System fonts only: a Google font would be fetched from the internet on every page load."""
    base = gr.themes.Soft(primary_hue="indigo", secondary_hue="slate", neutral_hue="slate",
                          font=["Inter", "system-ui", "-apple-system", "Segoe UI", "sans-serif"],
                          font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"])
    return base.set(
        body_text_color_subdued="*neutral_600", block_info_text_color="*neutral_600",
        block_label_text_color="*primary_700", block_title_text_color="*primary_700",
        color_accent="*primary_600", link_text_color="*primary_700",
        button_primary_background_fill="*primary_600", button_primary_background_fill_hover="*primary_700",
        checkbox_label_background_fill_selected="*primary_600", slider_color="*primary_600",
        input_placeholder_color="*neutral_500",
    )


# ---- the public, scriptable API -------------------------------------------------------------------------
def _public_api(ctx: AppContext) -> None:
    """``/submit``, ``/jobs``, ``/status``, ``/cancel``, ``/report``, ``/report_csv`` for gradio_client."""
    api = ctx.api

    @api_errors
    def submit(spec_yaml: str, priority: int = 0, request: gr.Request = None) -> str:  # type: ignore[assignment]
        """Queue a run from its spec (YAML or JSON text, as `ldifs submit` reads). Returns the job id."""
        from .forms import yaml_to_spec

        # 3.7, True, "5" are refused by tasks.api, not truncated here
        return api.submit(ctx.user(request), yaml_to_spec(spec_yaml), priority=0 if priority is None else priority)

    @api_errors
    def list_jobs(state: str = "", request: gr.Request = None) -> list:  # type: ignore[assignment]
        """Your jobs, newest first (optionally only one state: QUEUED, RUNNING, DONE, …)."""
        states = [s.strip().upper() for s in (state or "").split(",") if s.strip()] or None
        return api.job_summaries(ctx.user(request), states=states)

    @api_errors
    def status(job_id: str, request: gr.Request = None) -> dict:  # type: ignore[assignment]
        """One job as `ldifs status --json` prints it."""
        return api.status_dict(ctx.user(request), job_id)

    @api_errors
    def cancel(job_id: str, mode: str = "stop", request: gr.Request = None) -> dict:  # type: ignore[assignment]
        """Stop a job: mode "stop" saves a checkpoint first (resumable), "kill" ends it at once."""
        if mode not in ("stop", "kill"):
            raise SpecError(f"mode: {mode!r} is not allowed; choose stop or kill")
        return _status(api.cancel(ctx.user(request), job_id, mode=mode))

    @api_errors
    def report(job_id: str, request: gr.Request = None) -> dict:  # type: ignore[assignment]
        """The finished run's results.json (an empty dict while it is not finished)."""
        return api.get_results(ctx.user(request), job_id) or {}

    @api_errors
    def report_csv(job_id: str, request: gr.Request = None) -> str:  # type: ignore[assignment]
        """The finished run's per-dataset metrics as CSV text."""
        return Path(api.export_artifact(ctx.user(request), job_id, "csv")).read_text(encoding="utf-8")

    for fn, name in ((submit, "submit"), (list_jobs, "jobs"), (status, "status"), (cancel, "cancel"),
                     (report, "report"), (report_csv, "report_csv")):
        gr.api(fn, api_name=name, concurrency_limit=None if name != "submit" else 4)


def _status(job: Any) -> dict:
    d = job.to_dict()
    d.pop("spec", None)
    return d


# ---- the app -------------------------------------------------------------------------------------------------
def _wire_navigation(ctx: AppContext, nav: Any, form: Any, job_list: Any, rep: Any, cmp_: Any,
                     tab_items: Mapping[str, gr.Tab]) -> None:
    """Events that cross tabs. Entering a tab refreshes its lists (new runs, new uploads) without
    replacing what the user selected; Jobs → Open report sets the Report's run and opens the tab in
    one response; the address bar names the report's run only while the Report tab is shown."""
    report.wire_open(ctx, nav, rep, job_list.report_button, job_list.picker)
    report.wire_tab(ctx, tab_items["report"], rep)
    compare.wire_tab(ctx, tab_items["compare"], cmp_)
    new_run.wire_tab(ctx, tab_items["new"], form)
    for key, item in tab_items.items():
        if key != "report":
            item.select(None, None, None, js=report.URL_CLEAR, api_name=f"{key}_tab_url", **PRIVATE)



def _default_api() -> Any:
    from tasks import api

    return api


def local_user() -> str:
    """Who owns jobs when auth is off: ``LDIFS_LOCAL_USER``, else the OS user (as ``ldifs submit`` does),
    so jobs submitted from the command line show up in the browser."""
    name = os.environ.get("LDIFS_LOCAL_USER")
    if name:
        return name
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 — no passwd entry (some containers)
        return "local"


def build_app(api: Any = None, *, auth: str = "none", poll_s: float = 2.0,
              default_user: str | None = None) -> gr.Blocks:
    """The Blocks app. ``api`` defaults to ``tasks.api``; ``auth`` is "none", "password" or "oauth"."""
    if auth not in ("none", "password", "oauth"):
        raise SpecError(f"auth: {auth!r} is not one of none, password, oauth")
    ctx = AppContext(api=api or _default_api(), auth_mode=auth, poll_s=poll_s,
                     default_user=default_user or local_user())
    charts.warm_up()  # pay plotly's lazy loading at start, not on the first click
    with gr.Blocks(title=text.APP_TITLE, analytics_enabled=False, delete_cache=(3600, 86400),
                   fill_width=False) as demo:
        with gr.Row(elem_id="app-header", equal_height=True):
            gr.Markdown(f"# {text.APP_TITLE}\n{text.TAGLINE}", elem_id="app-title")
            who = gr.Markdown("", elem_id="app-user")
            if auth == "oauth":
                gr.LoginButton(size="sm", scale=0)
        setup_notes = ctx.api.startup_warnings()  # e.g. a GPU that the installed torch cannot use
        if setup_notes:
            gr.Markdown("\n".join(f"⚠ {line}" for line in setup_notes), elem_id="setup-warnings")
        nav = SimpleNamespace(demo=demo, focus_job=gr.State(""), clone_spec=gr.State({}))
        with gr.Tabs(selected="new", elem_id="tabs") as tabs:
            nav.tabs = tabs
            with gr.Tab("New run", id="new", elem_id="tab-new") as new_tab:
                form = new_run.build(ctx, nav)
            with gr.Tab("Jobs", id="jobs", elem_id="tab-jobs") as jobs_tab:
                job_list = jobs.build(ctx, nav)
            with gr.Tab("Report", id="report", elem_id="tab-report") as report_tab:
                rep = report.build(ctx, nav)
            with gr.Tab("Compare", id="compare", elem_id="tab-compare") as compare_tab:
                cmp_ = compare.build(ctx, nav)
            with gr.Tab("Datasets", id="datasets", elem_id="tab-datasets") as datasets_tab:
                datasets.build(ctx, nav)
        gr.Markdown("LDIFS Studio · concept forgetting after Mukhoti et al., *Fine-tuning can cripple your foundation "
                    "model; preserving features may be the solution* (TMLR 2024). Scriptable: see the API link below.",
                    elem_classes="footer-note")
        _wire_navigation(ctx, nav, form, job_list, rep, cmp_,
                         {"new": new_tab, "jobs": jobs_tab, "report": report_tab, "compare": compare_tab,
                          "datasets": datasets_tab})

        def whoami(request: gr.Request) -> str:
            if auth == "none":
                return ""
            try:
                user = ctx.user(request)
            except gr.Error:
                return "Not signed in"
            logout = " · [Sign out](/logout)" if auth == "password" else ""
            return f"Signed in as **{text.md_escape(user)}**{logout}"

        demo.load(whoami, None, who, api_name="whoami", **PRIVATE)
        _public_api(ctx)
    # Plain JSON /api/jobs and /api/status for pollers: handed to Blocks.launch(app_kwargs=...) by launch().
    demo.ldifs_json_routes = json_routes(ctx)
    demo.queue(default_concurrency_limit=2, max_size=256)
    return demo


def launch(host: str = "127.0.0.1", port: int = 7860, auth: str | None = None, embedded_worker: bool = True,
           poll_s: float = 2.0, *, block: bool = True, **extra: Any) -> tuple[gr.Blocks, Any]:
    """Serve the app (and, unless ``embedded_worker=False``, a job consumer in this process).

    Returns ``(demo, consumer)`` when ``block=False``; otherwise serves until Ctrl-C, then asks running
    jobs to checkpoint and stops the consumer.
    """
    from tasks.settings import get_settings

    settings = get_settings()
    s = LaunchSettings.from_env(host=host, port=port, auth=auth, exports_dir=str(settings.exports_dir),
                                home=str(settings.home),
                                blocked_dirs=(str(settings.runs_dir), str(settings.datasets_dir),
                                              str(settings.cache_dir), str(settings.models_dir)), **extra)
    kwargs = launch_kwargs(s)  # raises before anything starts if the setup is unsafe
    from tasks.api import startup_warnings

    for line in startup_warnings():
        log.warning("%s", line)
    from tasks.store import open_store

    open_store(settings)  # a damaged job store is named now (one line), not shown as an empty history
    demo = build_app(auth=auth_mode(s), poll_s=poll_s)
    consumer = None
    if embedded_worker:
        from tasks.worker import start_embedded_consumer

        consumer = start_embedded_consumer(settings=settings)
    try:
        kwargs["app_kwargs"] = {**kwargs.get("app_kwargs", {}), "routes": demo.ldifs_json_routes}
        demo.launch(prevent_thread_lock=not block, quiet=False, **kwargs)
    except BaseException:
        if consumer is not None and block:
            consumer.stop(graceful=True, timeout=settings.stop_timeout_s)
        raise
    if block:
        if consumer is not None:
            log.info("stopping the job worker (running jobs save a checkpoint and resume on the next start)")
            consumer.stop(graceful=True, timeout=settings.stop_timeout_s)
        return demo, None
    return demo, consumer
