"""New run → Merge runs and Report → Share, against the fake API: jobs by id, the report's headline on the
card, no push without a token (one line naming `ldifs card`), uploads kept out of the run pickers."""
from __future__ import annotations

import time
from dataclasses import replace

from app import story
from app.context import AppContext
from app.tabs import merge_runs, report, share

from .fake_api import FakeApi


def _two_finished(api):
    ids = []
    for i, target in enumerate(("quadrant", "count")):
        jid = api.submit("local", {"name": f"CE {target}", "data": {"target": target, "controls": ["colour"]},
                                   "method": {"name": "ce"}, "optim": {"steps": 10}})
        api.jobs[jid] = replace(api.jobs[jid], created_at=time.time() - 100 + i)
        ids.append(jid)
    return ids


def test_merge_runs_queues_a_merge_of_the_picked_runs_by_id(tmp_path):
    api = FakeApi(run_s=0.1)
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    ids = _two_finished(api)
    choices = merge_runs.refresh_choices(ctx, [], None).constructor_args["choices"]
    assert sorted(v for _, v in choices) == sorted(ids)
    md, tabs, job_id = merge_runs.on_merge(ctx, ids, "ties", "0,0.5,1", 0.3, "", None)
    view = api.get_job("local", job_id)
    assert view.method == "merge" and view.spec["merge"]["jobs"] == ids and view.spec["merge"]["method"] == "ties"
    assert tabs.constructor_args["selected"] == "jobs" and job_id[:8] in md
    api.jobs[job_id] = replace(api.jobs[job_id], state="DONE")
    assert job_id not in {v for _, v in merge_runs.refresh_choices(ctx, [], None).constructor_args["choices"]}


def test_push_needs_a_token_and_carries_the_reports_headline(tmp_path):
    api = FakeApi(run_s=0.1)
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    run = _two_finished(api)[0]
    md, *_ = share.push(ctx, run, "alice/clip-quadrant", False, None)
    assert "ldifs card" in md and not getattr(api, "pushes", [])
    api.hub_token = True
    md, tabs, push_id = share.push(ctx, run, "alice/clip-quadrant", False, None)
    headline = story.headline(api.get_results("local", run))
    assert api.pushes == [{"job": run, "repo": "alice/clip-quadrant", "headline": headline}]
    assert tabs.constructor_args["selected"] == "jobs"
    api.jobs[push_id] = replace(api.jobs[push_id], state="DONE")  # an upload is not a run to report on
    assert push_id not in {str(j.id) for j in report._finished(ctx, "local")}
    share.prepare_card(ctx, run, None)
    assert api.cards == [{"job": run, "headline": headline}]


def test_a_merges_headline_says_what_each_runs_classifier_kept():
    from . import samples

    r = samples.results()
    r["merge"] = {"method": "task_arithmetic", "chosen_lambda": 0.4, "tasks": [
        {"dataset": "quadrant", "title": "Quadrant", "run_after": 0.999, "merged": 0.95},
        {"dataset": "count", "title": "Object count", "run_after": 0.98, "merged": 0.9}]}
    text = story.headline(r)
    assert text.startswith("Merging the runs on *Quadrant* and *Object count* (task arithmetic, λ = 0.4): their "
                           "classifiers score 95 % and 90 % on the merged model (100 % and 98 % in their own runs);")


def test_a_merges_report_shows_each_task_next_to_its_own_run(tmp_path):
    from . import samples

    api = FakeApi(run_s=0.1)
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    jid = _two_finished(api)[0]
    r = samples.results()
    r["merge"] = {"method": "ties", "chosen_lambda": 0.6, "selected_on": "validation", "tasks": [
        {"dataset": "quadrant", "title": "Quadrant", "classifier": "trained head", "before": 0.4, "run_after": 0.999,
         "merged": 0.95, "run_mean_delta_zs_controls": -0.336}]}
    api.results_for[jid] = r
    facts = report.report_views(ctx, "local", api.get_job("local", jid), r)[0]
    assert "| Quadrant | trained head | 40.0\u00a0% | 99.9\u00a0% | 95.0\u00a0% |" in facts and "merged (λ = 0.6)" in facts
    assert "−33.6 (quadrant run)" in facts


def test_a_merges_report_shows_the_lambda_chart_in_place_of_the_training_curves(tmp_path):
    from . import samples

    api = FakeApi(run_s=0.1)
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    jid = _two_finished(api)[0]
    job = api.get_job("local", jid)
    # report_views: title, headline, cards, 3 charts, then curves column + chart, merge column + chart
    plain = report.report_views(ctx, "local", job, samples.results())
    assert plain[6].visible is True and plain[7].layout.title.text == "Accuracy during training"
    assert plain[8].visible is False and plain[9] is None
    merged = report.report_views(ctx, "local", job, samples.merge_results())
    assert merged[6].visible is False and merged[7] is None  # no "no evaluations during training" chart
    assert merged[8].visible is True and merged[9].layout.title.text == "What each λ kept"


def test_a_download_link_returned_as_an_update_reaches_the_browser_untouched(tmp_path):
    """Prepare model card / checkpoint return ``gr.DownloadButton(value=link, visible=True)``. gradio makes
    a new button from the constructor arguments for such an update and moves its value "to the cache":
    the link must come out as a URL for the browser, never fetched by the server (it was, and gradio
    refused 127.0.0.1, so no download was ever offered)."""
    import asyncio

    from gradio import processing_utils
    from gradio.blocks import postprocess_update_dict

    from app.downloads import PrivateDownloadButton, download_url

    button = PrivateDownloadButton("Download model card", visible=False)
    (tmp_path / "card.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    link = "http://127.0.0.1:7860" + download_url(None, "local", tmp_path / "card.zip")
    fresh = type(button)(**{**button.constructor_args, "visible": True, "render": False})  # as gradio does
    out = postprocess_update_dict(block=fresh, update_dict={"value": link, "visible": True})
    sent = asyncio.run(processing_utils.async_move_files_to_cache(out["value"], fresh, postprocess=True))
    assert sent["url"] == link


def test_the_ties_share_is_asked_for_only_when_ties_is_picked():
    assert merge_runs.keep_field("ties").constructor_args["visible"] is True
    assert merge_runs.keep_field("task_arithmetic").constructor_args["visible"] is False


def test_too_few_runs_to_merge_is_said_in_the_forms_words(tmp_path):
    import gradio as gr
    import pytest

    api = FakeApi(run_s=0.1)
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    one = _two_finished(api)[:1]
    with pytest.raises(gr.Error, match=r"Finished runs to merge: pick 2 to 8 runs \(you picked 1\)"):
        merge_runs.on_merge(ctx, one, "task_arithmetic", "", 0.2, "", None)
    assert not [j for j in api.jobs.values() if j.method == "merge"]
