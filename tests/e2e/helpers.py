"""What the browser tests share: where chromium is, the fake API with finished runs, serving the real
app on it, opening the app, picking options and taking screenshots. The fixtures are in conftest.py."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from tests.app import samples
from tests.app.conftest import free_port
from tests.app.fake_api import FakeApi

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
DOC_SHOTS = REPO / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]

RUNS = (("CE baseline", "ce"), ("Quick demo", "ldifs"), ("Weight anchor", "l2sp"))
# A run whose target's zero-shot accuracy is not measurable (the demo's quadrant), listed oldest.
GAP_RUN = "Position, no zero-shot"
ZS_NOTE = "class prompts are indistinguishable to this model (all 4 classes give the same text embedding)"


def _gap_results() -> dict:
    r = samples.results()
    q = r["datasets"]["quadrant"]
    q["zs_note"] = ZS_NOTE
    q["before"]["zs_acc"] = q["after"]["zs_acc"] = None
    r["spec"]["name"] = GAP_RUN
    return r


def finished_api() -> tuple[FakeApi, dict[str, str]]:
    """A fake API holding finished runs (``RUNS``, oldest first, and ``GAP_RUN`` before them), titles → ids."""
    api = FakeApi(run_s=0.2)
    ids = {}
    for i, (name, method) in enumerate(((GAP_RUN, "ldifs"), *RUNS)):
        jid = api.submit("local", {"name": name, "data": {"target": "quadrant", "controls": ["colour", "shape"]},
                                   "method": {"name": method}, "optim": {"steps": 10, "lr": 1e-5}})
        j = api.jobs[jid]
        api.jobs[jid] = replace(j, created_at=time.time() - 100 + i)  # finished, distinct order
        ids[name] = jid
    api.results_for[ids[GAP_RUN]] = _gap_results()
    return api, ids


@contextlib.contextmanager
def serve_api(api: FakeApi, poll_s: float = 0.5) -> Iterator[str]:
    """The real app (theme, CSS, safety settings) on ``api``, on a free port; yields its URL."""
    from app.main import LaunchSettings, build_app, launch_kwargs

    demo = build_app(api, poll_s=poll_s, default_user="local")
    kwargs = launch_kwargs(LaunchSettings(port=free_port()))
    kwargs.update(prevent_thread_lock=True, quiet=True)
    _app, url, _ = demo.launch(**kwargs)
    try:
        yield url
    finally:
        demo.close()


def open_app(page, url: str, timeout_ms: int = 60_000) -> None:
    """Open the app and wait until New run's live check says the default preset is ready."""
    from playwright.sync_api import expect

    page.goto(url)
    expect(page.locator("#preflight")).to_contain_text("Ready", timeout=timeout_ms)


def pick_option(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").first.click()
    page.get_by_role("option", name=option, exact=False).first.click()


def set_number(page, elem_id: str, value: str) -> None:
    box = page.locator(f"#{elem_id} input").first
    box.fill(value)
    box.blur()


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("LDIFS_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, DOC_SHOTS / path.name)


def overlaps(a: dict, b: dict) -> bool:
    """Whether two bounding boxes (x, y, width, height) share any area."""
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def chart_text_boxes(page, chart_id: str) -> dict[str, list[dict]]:
    """The boxes of a plotly chart's annotations, row labels and whole figure, in page pixels."""
    return page.evaluate("""(id) => {
      const box = e => { const b = e.getBoundingClientRect();
                         return {x: b.left, y: b.top, width: b.width, height: b.height, text: e.textContent}; };
      const root = document.getElementById(id);
      const all = sel => [...root.querySelectorAll(sel)].map(box);
      return {notes: all('.annotation-text'), rows: all('.ytick text'), figure: all('.main-svg').slice(0, 1)}; }""",
                         chart_id)


def assert_gap_notes_clear(page, chart_ids=("report-dumbbell", "report-delta")) -> None:
    """In each chart, the "not measurable" note of a gap row stays inside the figure and off every row
    label, and the reason is written out in the chart (the note ran across the target's row label)."""
    from playwright.sync_api import expect

    for chart in chart_ids:
        expect(page.locator(f"#{chart} .annotation-text").first).to_have_text("not measurable", timeout=30_000)
        boxes = chart_text_boxes(page, chart)
        fig = boxes["figure"][0]
        for note in boxes["notes"]:
            assert not [r["text"] for r in boxes["rows"] if overlaps(note, r)], (chart, note, boxes["rows"])
            assert fig["x"] <= note["x"] and note["x"] + note["width"] <= fig["x"] + fig["width"] + 1, (chart, note)
        assert "indistinguishable to this model" in page.locator(f"#{chart}").text_content()
