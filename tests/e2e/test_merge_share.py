"""New run → Merge runs in a real browser, on the shared fake-API server (its finished runs, no worker):
pick two runs, queue the merge, follow it in Jobs and read its Report — the per-task table and the
"What each λ kept" chart in place of the training curves, on a laptop and on a phone. (Report → Share is
exercised on real finished runs at the end of test_browser.py's end-to-end test: ``share_the_report``.)
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from .helpers import pick_option, shot

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_merge_two_finished_runs_and_read_what_each_lambda_kept(browser, finished_server):
    from playwright.sync_api import expect

    api, ids, url = finished_server.api, finished_server.ids, finished_server.url
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)  # New run's live check is not needed here: only the Merge runs section
    page.locator("#merge-runs").get_by_text("Merge runs").first.click()
    picked = [ids["CE baseline"], ids["Weight anchor"]]
    for jid in picked:  # by id: the labels end with it, and other titles start like these
        pick_option(page, "merge-pick", jid[:8])
    page.keyboard.press("Escape")
    keep = page.locator("#merge-keep")
    expect(keep).to_be_hidden()  # TIES' share kept is asked for only when TIES is picked
    page.locator("#merge-method").get_by_text("TIES").click()
    expect(keep).to_be_visible(timeout=15_000)
    page.locator("#merge-method").get_by_text("Task arithmetic").click()
    expect(keep).to_be_hidden(timeout=15_000)
    page.locator("#merge-start").click()

    # Jobs opens with the merge selected; it finishes and its report opens from there.
    summary = page.locator("#job-summary")
    expect(summary).to_contain_text("merge (task arithmetic) of Position (quadrant)", timeout=30_000)  # titles
    assert [j for j in api.list_jobs("local") if j.method == "merge" and j.spec["merge"]["jobs"] == picked]
    expect(page.locator("#jobs-table")).to_contain_text("merge (task arithmetic)")
    expect(summary).to_contain_text("Done", timeout=60_000)
    page.locator("#job-report").click()
    facts = page.locator("#report-run")
    expect(facts).to_contain_text("merge (task arithmetic)", timeout=30_000)
    expect(facts.locator("table")).to_contain_text("its own run")  # each task: before / its own run / merged
    expect(facts.locator("table")).to_contain_text("merged (λ = 0.5)")
    chart = page.locator("#report-merge")
    expect(chart.locator(".main-svg").first).to_be_visible(timeout=30_000)
    expect(chart).to_contain_text("What each λ kept")
    expect(chart).to_contain_text("kept: λ = 0.5")
    expect(page.locator("#report-merge-col")).to_contain_text("need not be the highest point")  # its own caption
    expect(page.locator("#report-curves")).to_be_hidden()  # no empty "during training" chart for a merge
    shot(page, "merge-report")
    assert not errors, errors

    # A phone's width (the same page: loading another costs seconds on a busy machine): the chart and the
    # task table fit the screen, the table scrolling sideways rather than breaking its numbers.
    page.set_viewport_size({"width": 390, "height": 844})
    for sel in ("#report-merge .main-svg", "#report-run table"):
        expect(page.locator(sel).first).to_be_visible()
        page.wait_for_function("""(sel) => { const b = document.querySelector(sel).getBoundingClientRect();
                                             return b.left >= 0 && b.right <= 391; }""", arg=sel, timeout=15_000)
    # the run picker takes the screen's width (beside its Refresh button it cut the run's name short)
    page.wait_for_function("() => document.getElementById('report-picker').getBoundingClientRect().width > 300",
                           timeout=15_000)
    shot(page, "phone-merge-report")
    lines = page.evaluate("""() => [...document.querySelectorAll('#report-run td, #report-run th')].map(c => {
        const r = document.createRange(); r.selectNodeContents(c);
        return [c.textContent, new Set([...r.getClientRects()].map(b => Math.round(b.top))).size]; })""")
    numbers = [(cell, n) for cell, n in lines if "%" in cell]
    assert numbers and all(n == 1 for _, n in numbers), lines  # "31.0 %" is never broken over two lines


def test_the_offline_html_report_of_a_merge_fits_a_phone(browser, tmp_path):
    """The downloadable HTML report (no server) of a merge, at 390 px: every chart drawn, the λ chart among
    them, and nothing wider than the screen (the table of every number made the page 741 px wide)."""
    from playwright.sync_api import expect

    from app import charts
    from tests.app import samples

    page_file = tmp_path / "report.html"
    page_file.write_text(charts.report_html(samples.merge_results(), "a merge"), encoding="utf-8")
    page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
    page.goto(page_file.as_uri())
    expect(page.get_by_text("What each λ kept")).to_be_visible(timeout=30_000)
    expect(page.locator("table").first).to_contain_text("Its own run")
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    shot(page, "phone-merge-html-report")
