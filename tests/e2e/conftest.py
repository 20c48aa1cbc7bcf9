"""Browser fixtures shared by every e2e file: one chromium for the whole session (each test still gets
fresh pages, i.e. fresh browser contexts), and one app server on the fake API with finished runs for
the tests that only read them (report paths, accessibility, the form). Tests that run real jobs start
their own server. The app tests' fixtures are re-exported (real app + tasks layer + consumer)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.app.conftest import fake_engine, fast_env  # noqa: F401 — re-exported fixtures

from .helpers import ARGS, CHROMIUM, finished_api, serve_api


@pytest.fixture(scope="session")
def chromium():
    """One Debian chromium for the session (launching it costs seconds on a busy machine)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


class _Pages:
    """``new_page(**options)`` like playwright's Browser; every page (its own context) closes after the test."""

    def __init__(self, chromium):
        self._chromium, self._pages = chromium, []

    def new_page(self, **options):
        page = self._chromium.new_page(**options)
        self._pages.append(page)
        return page

    def close(self) -> None:
        for page in self._pages:
            page.context.close()


@pytest.fixture
def browser(chromium):
    pages = _Pages(chromium)
    yield pages
    pages.close()


@pytest.fixture
def page(browser):
    return browser.new_page(viewport={"width": 1300, "height": 900})


@pytest.fixture(scope="session")
def finished_server():
    """The real app on a fake API holding finished runs (``helpers.finished_api``), for the whole
    session: ``url``, ``api`` and ``ids`` (run title → id). Tests may add runs and uploads, never
    remove or change one."""
    api, ids = finished_api()
    with serve_api(api) as url:
        yield SimpleNamespace(url=url, api=api, ids=ids)
