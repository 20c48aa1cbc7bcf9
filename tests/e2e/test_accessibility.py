"""Accessible and usable on a phone (issue 11): axe-core on every tab, visible focus that a redraw
does not drop, and the report / New run at 390 px.

axe-core comes from the npm package (``.ci/run`` installs it into ``.node/``; ``LDIFS_AXE_JS`` may
point at another ``axe.min.js``). The test skips only when neither is there.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from .helpers import GAP_RUN, REPO, assert_gap_notes_clear, open_app, pick_option, shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

AXE_CANDIDATES = [os.environ.get("LDIFS_AXE_JS", ""), str(REPO / ".node" / "node_modules" / "axe-core" / "axe.min.js"),
                  str(REPO / "node_modules" / "axe-core" / "axe.min.js")]
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
# Serious violations inside Gradio's own components that the app cannot fix from its markup, CSS or
# theme (listed in docs/APP.md, Accessibility): (rule, a piece of the offending element's HTML).
GRADIO_OWN = {("label-content-name-mismatch", 'aria-label="Click to upload or drop files"')}
TABS = (("New run", "#preflight"), ("Jobs", "#job-summary"), ("Report", "#report-headline"),
        ("Compare", "#compare-scatter .main-svg"), ("Datasets", "#ds-table"))


def axe_source() -> str:
    for c in AXE_CANDIDATES:
        if c and Path(c).is_file():
            return Path(c).read_text(encoding="utf-8")
    pytest.skip("axe-core is not installed (npm install --prefix .node axe-core; .ci/run does this)")


def serious(page, axe: str) -> list[str]:
    """Serious and critical WCAG 2.1 AA violations (and skipped heading levels) on the page now."""
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(axe)
    res = page.evaluate("async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS)
    out = []
    for v in res["violations"]:
        if v["impact"] not in ("serious", "critical"):
            continue
        for n in v["nodes"]:
            if any(rule == v["id"] and part in n["html"] for rule, part in GRADIO_OWN):
                continue
            out.append(f"{v['id']}: {n['target']} {n['html'][:120]}")
    order = page.evaluate("async () => (await axe.run(document, {runOnly: ['heading-order']})).violations")
    out += [f"heading-order: {n['target']}" for v in order for n in v["nodes"]]
    return out


def test_no_serious_axe_violation_on_any_tab_and_focus_stays(page, finished_server):
    from playwright.sync_api import expect

    axe = axe_source()
    open_app(page, finished_server.url)
    found = {}
    for tab, ready in TABS:
        page.get_by_role("tab", name=tab).click()
        expect(page.locator(ready).first).to_be_visible(timeout=60_000)
        time.sleep(1.0)
        found[tab] = serious(page, axe)
    page.get_by_role("tab", name="New run").click()
    page.get_by_text("Advanced settings").click()
    expect(page.locator("#f-seed")).to_be_visible(timeout=20_000)
    found["New run, advanced"] = serious(page, axe)
    assert found == {k: [] for k in found}, found

    # Leaving the target field after choosing a dataset keeps keyboard focus (the controls list is
    # redrawn by the server meanwhile), and the focus ring is visible.
    pick_option(page, "f-data-target", "Shape")
    expect(page.locator("#f-data-controls")).not_to_contain_text("Shape", timeout=30_000)
    page.locator("#f-data-target input").first.focus()
    page.keyboard.press("Tab")
    time.sleep(2.0)  # the live check and the role update have redrawn parts of the form by now
    tag = page.evaluate("() => document.activeElement && document.activeElement.tagName")
    assert tag not in (None, "BODY"), tag
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), outline


def test_phone_report_and_new_run(browser, finished_server):
    """390 px: headline and cards come first and fit, charts are not wider than the screen, the table's
    first column stays put, and Start is reachable without opening (or scrolling past) advanced fields."""
    from playwright.sync_api import expect

    url, ids = finished_server.url, finished_server.ids
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    open_app(page, url)
    start = page.locator("#start").bounding_box()
    assert start is not None and start["y"] < 3 * 844, start  # the basic form only, advanced folded away
    assert not page.locator("#f-method-params-alpha input").first.is_visible()  # method internals folded
    shot(page, "phone-new-run")

    page.goto(f"{url}?run={ids['Quick demo']}")
    expect(page.locator("#report-headline")).to_contain_text("Fine-tuning on", timeout=60_000)
    expect(page.locator("#report-delta .main-svg").first).to_be_visible(timeout=60_000)
    boxes = {sel: page.locator(sel).first.bounding_box() for sel in
             ("#report-headline", "#report-cards", "#report-dumbbell", "#report-delta", "#report-table")}
    assert boxes["#report-headline"]["y"] < boxes["#report-cards"]["y"] < boxes["#report-dumbbell"]["y"]
    assert boxes["#report-cards"]["y"] < 844 * 1.5  # the story is read before any chart
    for sel, box in boxes.items():
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390 + 1, (sel, box)  # nothing wider than the screen
    assert not page.locator("#report-dumbbell .modebar-container").first.is_visible()  # no toolbar over titles
    # the table scrolls sideways with the dataset column pinned
    first = page.locator("#report-table td").first
    x0 = first.bounding_box()["x"]
    page.locator("#report-table .table-wrap, #report-table [role=grid]").first.evaluate(
        "el => { el.scrollLeft = 400; }")
    time.sleep(0.5)
    assert abs(first.bounding_box()["x"] - x0) < 2
    shot(page, "phone-report")

    # a target with no measurable zero-shot accuracy: the charts' notes fit a phone too
    page.goto(f"{url}?run={ids[GAP_RUN]}")
    expect(page.locator("#report-run")).to_contain_text(GAP_RUN, timeout=60_000)
    assert_gap_notes_clear(page)
