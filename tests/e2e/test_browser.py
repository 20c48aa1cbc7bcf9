"""The whole product in a real browser: Debian's chromium driven by Playwright against the real app,
tasks layer, huey consumer and engine. Screenshots land in test-artifacts/e2e/ (and, with
LDIFS_UPDATE_SCREENSHOTS=1, in docs/screenshots/ for the README).
"""
from __future__ import annotations

import os
import re
import time
import zipfile
from pathlib import Path

import pytest

from tests.app.conftest import serve

from .helpers import REPO, open_app, pick_option, set_number, shot

# How long one run may take: the README's screenshots use the full preset (minutes on a busy CPU).
FULL = os.environ.get("LDIFS_SCREENSHOT_FULL") == "1"
RUN_MS = 1_800_000 if FULL else 300_000

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600 if FULL else 600)]

BUILTIN = REPO / "ldifs_engine" / "assets" / "concept-clip-tiny.safetensors"


def _class_folder_zip(tmp_path: Path) -> Path:
    """A valid upload: two class folders with six small PNGs each."""
    import io
    import zipfile

    from PIL import Image

    path = tmp_path / "red-vs-blue.zip"
    with zipfile.ZipFile(path, "w") as z:
        for cls, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
            for i in range(6):
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), tuple(min(255, c + 4 * i) for c in colour)).save(buf, "PNG")
                z.writestr(f"{cls}/{i}.png", buf.getvalue())
    return path


def share_the_report(page) -> None:
    """Report → Share on a real finished run (shown in the Report): the model card downloads as a zip whose
    README.md has front matter the Hub's ModelCard parses, with the run's numbers; Push with no token on
    the server answers with one line naming `ldifs card`."""
    import json

    from huggingface_hub import ModelCard
    from playwright.sync_api import expect

    page.locator("#card-prepare").click()
    expect(page.locator("#dl-card")).to_be_visible(timeout=60_000)
    with page.expect_download() as dl:
        page.locator("#dl-card").click()
    assert "/ldifs/download/" in dl.value.url and dl.value.suggested_filename.endswith("-model-card.zip")
    with zipfile.ZipFile(dl.value.path()) as z:
        assert {"README.md", "open_clip_model.safetensors", "open_clip_config.json", "results.json"} <= set(z.namelist())
        readme, results = z.read("README.md").decode("utf-8"), json.loads(z.read("results.json"))
    assert readme.startswith("---\n")
    card = ModelCard(readme)  # the Hub's own parser: the YAML front matter is valid
    head = {r.metric_name: r.metric_value for r in card.data.eval_results if r.dataset_type == results["target"]}
    assert head["Accuracy after fine-tuning"] == round(100 * results["target_head_acc"]["after"], 2)

    page.locator("#push-repo input, #push-repo textarea").first.fill("someone/clip-quadrant")
    page.locator("#push-start").click()
    status = page.locator("#push-status")
    expect(status).to_contain_text("ldifs card", timeout=30_000)
    assert "\n" not in status.inner_text().strip()  # one line
    expect(page.get_by_role("tab", name="Report")).to_have_attribute("aria-selected", "true")  # nothing queued


def test_queue_watch_and_read_the_report(fast_env, browser, tmp_path, monkeypatch):
    import huggingface_hub
    from playwright.sync_api import expect

    monkeypatch.delenv("HF_TOKEN", raising=False)  # no token on this server: Push must say what to do instead
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)

    with serve(poll_s=0.5) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        expect(page.get_by_text("Fine-tune a CLIP model, then see what it forgot.")).to_be_visible(timeout=30_000)
        expect(page.locator("#preflight")).to_contain_text("Ready", timeout=30_000)  # Quick demo preset loaded
        shot(page, "new-run")

        # CE vs LDIFS queues two runs; shrink them so a 2-core box finishes in about a minute.
        pick_option(page, "preset", "Compare CE vs LDIFS")
        expect(page.locator("#preset-note")).to_contain_text("Queues 2 runs", timeout=20_000)
        if not BUILTIN.exists():
            pick_option(page, "f-backbone", "Tiny ViT (random init, tests)")
        if not FULL:  # the README's screenshots use the full preset
            set_number(page, "f-optim-steps", "3")
            page.get_by_text("Advanced settings").click()
            set_number(page, "f-optim-batch_size", "8")
            set_number(page, "f-data-max_train_samples", "64")
            set_number(page, "f-data-max_eval_samples", "40")
            set_number(page, "f-optim-warmup_steps", "1")
            set_number(page, "f-eval-curve_points", "1")
            page.locator("#f-eval-linear_probe input").uncheck()
        page.locator("#check").click()
        expect(page.locator("#preflight")).to_contain_text("This queues 2 runs", timeout=20_000)
        page.get_by_text("Reproduce from the command line").click()
        page.locator("#preview").click()
        expect(page.locator("#cli")).to_contain_text("cat > spec.yaml", timeout=20_000)
        expect(page.locator("#yaml-dl")).to_be_visible()

        page.locator("#start").click()
        # The app switches to Jobs with the new run selected: progress shows up and ends in Done.
        expect(page.locator("#job-progress .ldifs-progress")).to_be_visible(timeout=30_000)
        expect(page.locator("#jobs-table")).to_contain_text("LDIFS", timeout=30_000)
        expect(page.locator("#job-summary")).to_contain_text("Running", timeout=120_000)
        shot(page, "jobs-running")
        expect(page.locator("#job-summary")).to_contain_text("Done", timeout=RUN_MS)
        expect(page.locator("#job-plot .js-plotly-plot")).to_be_visible(timeout=30_000)
        # Wait for the companion run too (one worker runs them one after the other).
        expect(page.locator("#jobs-table")).not_to_contain_text("Running", timeout=RUN_MS)
        expect(page.locator("#jobs-table")).not_to_contain_text("Queued", timeout=60_000)
        shot(page, "jobs")

        page.locator("#job-report").click()
        headline = page.locator("#report-headline")
        expect(headline).to_contain_text("Fine-tuning on", timeout=30_000)
        expect(headline).to_contain_text("other dataset")
        for chart in ("report-dumbbell", "report-delta", "report-curves"):
            expect(page.locator(f"#{chart} .js-plotly-plot .main-svg").first).to_be_visible(timeout=30_000)
        expect(page.locator("#report-cards")).to_contain_text("Target accuracy")
        expect(page.locator("#report-table")).to_contain_text("target")
        expect(page.locator("#dl-csv")).to_be_visible()
        with page.expect_download() as dl:  # a per-user link (app.downloads), not a gradio file path
            page.locator("#dl-csv").click()
        assert "/ldifs/download/" in dl.value.url
        assert Path(dl.value.path()).read_text(encoding="utf-8").startswith("dataset,role,metric")
        page.locator("#ckpt-prepare").click()  # the weights, zipped: offered once ready (it never was)
        expect(page.locator("#dl-ckpt")).to_be_visible(timeout=60_000)
        with page.expect_download() as dl:
            page.locator("#dl-ckpt").click()
        with zipfile.ZipFile(dl.value.path()) as z:
            assert any(n.endswith(".safetensors") for n in z.namelist()), z.namelist()
        shot(page, "report")
        share_the_report(page)

        page.get_by_role("tab", name="Compare").click()
        expect(page.locator("#compare-scatter .js-plotly-plot .main-svg").first).to_be_visible(timeout=30_000)
        expect(page.locator("#compare-heatmap .js-plotly-plot .main-svg").first).to_be_visible(timeout=30_000)
        expect(page.locator("#compare-diff")).to_contain_text("method.name", timeout=30_000)
        shot(page, "compare")

        page.get_by_role("tab", name="Datasets").click()
        expect(page.locator("#ds-table")).to_contain_text("quadrant", timeout=30_000)
        page.locator("#ds-upload input[type=file]").set_input_files(str(_class_folder_zip(tmp_path)))
        page.locator("#ds-name input, #ds-name textarea").first.fill("Red vs blue")
        page.locator("#ds-import").click()
        expect(page.locator("#ds-report")).to_contain_text("Imported Red vs blue", timeout=60_000)
        expect(page.locator("#ds-table")).to_contain_text("Red vs blue", timeout=30_000)
        expect(page.locator("#ds-preview img")).to_be_visible(timeout=60_000)  # the new upload is shown
        shot(page, "datasets")

        # A refreshed page re-attaches: the finished runs are still listed.
        page.reload()
        page.get_by_role("tab", name="Jobs").click()
        expect(page.locator("#jobs-table")).to_contain_text("Done", timeout=30_000)
        assert not errors, errors


def test_a_dataset_takes_one_role_in_the_form(browser, finished_server):
    """Picking a control as the target, or adding it to the sequence, takes it out of the controls
    (app logic over the dataset list: the shared server on the fake API is enough)."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, finished_server.url)
    controls = page.locator("#f-data-controls")
    expect(controls).to_contain_text("Shape")
    pick_option(page, "f-data-target", "Shape")
    expect(controls).not_to_contain_text("Shape", timeout=10_000)
    expect(controls).to_contain_text("Colour")
    page.get_by_text("Advanced settings").click()
    pick_option(page, "f-data-sequence", "Colour")
    expect(controls).not_to_contain_text("Colour", timeout=10_000)
    expect(page.locator("#f-data-sequence")).to_contain_text("Colour")


def test_a_budget_search_in_the_browser(browser, finished_server):
    """New run: the budget switch turns the run into a search (pre-flight says so); Report: a finished
    search's answer, chart and candidates; Use this setting fills New run with the recommendation."""
    from dataclasses import replace

    from playwright.sync_api import expect

    from tests.engine.test_budget import fake_results, spec_with

    api = finished_server.api
    search = spec_with(max_forgetting_points=5)  # the engine's known curve: 5 points at alpha 70
    group, ids = "b" * 32, []
    from ldifs_engine import budget as B

    for i, alpha in enumerate((0.0, 10.0, 100.0, 1000.0)):
        trial = B.trial_spec(search, alpha)
        jid = api.submit("local", trial.to_dict())
        api.jobs[jid] = replace(api.jobs[jid], group=group, created_at=time.time() - 50 + i)
        api.results_for[jid] = fake_results(trial)
        ids.append(jid)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    open_app(page, finished_server.url)
    page.locator("#f-budget-enabled input").check()
    set_number(page, "f-budget-max_forgetting_points", "2")
    expect(page.locator("#preflight")).to_contain_text("forgetting-budget search", timeout=15_000)
    expect(page.locator("#preflight")).to_contain_text("at most 2 points")
    page.locator("#f-budget-enabled input").uncheck()
    expect(page.locator("#preflight")).not_to_contain_text("forgetting-budget search", timeout=15_000)

    page.goto(f"{finished_server.url}?run={ids[2]}")
    expect(page.locator("#budget-answer")).to_contain_text("Within a 5-point budget, LDIFS with alpha 100",
                                                         timeout=120_000)
    expect(page.locator("#budget-table")).to_contain_text("recommended")
    expect(page.locator("#budget-chart")).to_contain_text("budget")
    shot(page, "budget-report")
    page.locator("#budget-use").click()
    expect(page.locator("#f-name input")).to_have_value(re.compile(r"LDIFS with alpha 100.*\(best within 5 points\)"),
                                                      timeout=15_000)
    expect(page.locator("#f-budget-enabled input")).not_to_be_checked()
