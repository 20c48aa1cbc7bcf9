"""The run a user asks for is the run shown, on every path into the Report (issue 11, item 1).

Several finished runs on the in-memory fake API (no worker, no engine), served by the real app in
Debian's chromium. Each path is taken several times, switching between runs, because the failure
was a race (the Report tab's own refresh overwriting the selection).
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import replace

import pytest

from tests.app.conftest import free_port
from tests.app.fake_api import FakeApi

from .test_browser import ARGS, CHROMIUM

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

RUNS = (("CE baseline", "ce"), ("Quick demo", "ldifs"), ("Weight anchor", "l2sp"))


def finished_api() -> tuple[FakeApi, dict[str, str]]:
    """A fake API holding three finished runs (oldest first), titles → ids."""
    api = FakeApi(run_s=0.2)
    ids = {}
    for i, (name, method) in enumerate(RUNS):
        jid = api.submit("local", {"name": name, "data": {"target": "quadrant", "controls": ["colour", "shape"]},
                                   "method": {"name": method}, "optim": {"steps": 10, "lr": 1e-5}})
        j = api.jobs[jid]
        api.jobs[jid] = replace(j, created_at=time.time() - 100 + i)  # finished, distinct order
        ids[name] = jid
    return api, ids


@contextlib.contextmanager
def serve_api(api: FakeApi, poll_s: float = 0.5) -> Iterator[str]:
    from app.main import LaunchSettings, build_app, launch_kwargs

    demo = build_app(api, poll_s=poll_s, default_user="local")
    kwargs = launch_kwargs(LaunchSettings(port=free_port()))  # the real theme, CSS and safety settings
    kwargs.update(prevent_thread_lock=True, quiet=True)
    _app, url, _ = demo.launch(**kwargs)
    try:
        yield url
    finally:
        demo.close()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = b.new_page(viewport={"width": 1300, "height": 900})
        yield pg
        b.close()


def pick_option(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=False).first.click()


def test_open_report_from_jobs_shows_the_selected_run(page):
    from playwright.sync_api import expect

    api, ids = finished_api()
    with serve_api(api) as url:
        page.goto(url)
        expect(page.locator("#preflight")).to_contain_text("Ready", timeout=30_000)
        for name in ("CE baseline", "Weight anchor", "Quick demo", "CE baseline"):
            page.get_by_role("tab", name="Jobs").click()
            pick_option(page, "job-picker", name)
            expect(page.locator("#job-summary")).to_contain_text(name, timeout=30_000)
            page.locator("#job-report").click()
            expect(page.locator("#report-run")).to_contain_text(name, timeout=30_000)
            page.wait_for_timeout(1500)  # any late refresh would have overwritten it by now
            expect(page.locator("#report-run")).to_contain_text(name)


def test_report_dropdown_and_deep_link_and_reload(page):
    from playwright.sync_api import expect

    api, ids = finished_api()
    with serve_api(api) as url:
        # A link to one run opens the Report tab on that run (not the newest).
        page.goto(f"{url}?run={ids['CE baseline']}")
        expect(page.locator("#report-run")).to_contain_text("CE baseline", timeout=30_000)
        page.wait_for_timeout(1500)
        expect(page.locator("#report-run")).to_contain_text("CE baseline")
        # The dropdown: each pick is the run shown.
        for name in ("Weight anchor", "Quick demo"):
            pick_option(page, "report-picker", name)
            expect(page.locator("#report-run")).to_contain_text(name, timeout=30_000)
        # Leaving and re-entering the tab keeps the choice.
        page.get_by_role("tab", name="Compare").click()
        page.get_by_role("tab", name="Report").click()
        page.wait_for_timeout(1500)
        expect(page.locator("#report-run")).to_contain_text("Quick demo")
        # A reload of the link still shows the linked run.
        page.goto(f"{url}?run={ids['Weight anchor']}")
        page.reload()
        expect(page.locator("#report-run")).to_contain_text("Weight anchor", timeout=30_000)


def test_new_runs_and_uploads_appear_without_reload(page, tmp_path):
    from playwright.sync_api import expect

    api, ids = finished_api()
    with serve_api(api) as url:
        page.goto(url)
        expect(page.locator("#preflight")).to_contain_text("Ready", timeout=30_000)
        # A run submitted from outside the page (the API, the CLI) shows up in Jobs, Report and Compare.
        jid = api.submit("local", {"name": "From the API", "data": {"target": "quadrant", "controls": ["colour"]},
                                   "method": {"name": "ce"}, "optim": {"steps": 10, "lr": 1e-5}})
        page.get_by_role("tab", name="Jobs").click()
        expect(page.locator("#jobs-table")).to_contain_text("From the API", timeout=30_000)
        time.sleep(1.0)  # finished
        page.get_by_role("tab", name="Report").click()
        page.locator("#report-picker input").first.click()
        expect(page.get_by_role("option", name="From the API", exact=False)).to_be_visible(timeout=30_000)
        page.keyboard.press("Escape")
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-picker input").first.click()
        expect(page.get_by_role("option", name="From the API", exact=False)).to_be_visible(timeout=30_000)
        page.keyboard.press("Escape")
        assert api.get_job("local", jid).state == "DONE"
        # An upload made in Datasets is offered in New run at once.
        page.get_by_role("tab", name="Datasets").click()
        z = tmp_path / "x.zip"
        z.write_bytes(b"PK\x05\x06" + b"\0" * 18)
        page.locator("#ds-upload input[type=file]").set_input_files(str(z))
        page.locator("#ds-name input").first.fill("Cats and dogs")
        page.locator("#ds-import").click()
        expect(page.locator("#ds-report")).to_contain_text("Imported", timeout=30_000)
        page.get_by_role("tab", name="New run").click()
        page.locator("#f-data-target input").first.click()
        expect(page.get_by_role("option", name="Cats and dogs", exact=False)).to_be_visible(timeout=30_000)
