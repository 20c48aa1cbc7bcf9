"""Pure helpers of the tabs: tables, choices, progress, button states, escaping."""
from __future__ import annotations

import pytest

from app.tabs import compare, datasets, jobs, new_run, report

from .fake_api import FakeApi, job_view
from .samples import HOSTILE, hostile_results, results


def _job(**over):
    base = dict(id="abc123", owner="u", state="RUNNING", spec={}, spec_hash="0", title=HOSTILE, method="ldifs",
                target="quadrant", step=30, total_steps=60, eta_s=75.0, created_at=1.7e9)
    return job_view(**{**base, **over})


def test_job_table_shows_titles_as_plain_cells():
    rows = jobs.jobs_table([_job()])
    assert rows[0][0] == HOSTILE  # the Dataframe shows str cells as text (datatype "str")
    assert rows[0][2].endswith("50 %") and rows[0][3] == "1 min 15 s"


def test_progress_html_has_only_numbers():
    html = jobs.progress_html(_job())
    assert "<img" not in html and "aria-valuenow=\"50\"" in html and "step 30/60" in html


def test_job_summary_escapes():
    md = jobs.job_summary(_job(message=HOSTILE))
    assert "<img" not in md


def test_button_states_follow_the_record():
    assert jobs.button_states("RUNNING") == {"stop": True, "kill": True, "cancel": False, "stop_group": False,
                                              "resume": False, "report": False, "clone": True}
    assert jobs.button_states("QUEUED", grouped=True)["stop_group"] and jobs.button_states("RUNNING", True)["stop_group"]
    assert not jobs.button_states("DONE", grouped=True)["stop_group"]
    assert "Stop the whole group" in jobs.button_help("QUEUED", True) and "group" not in jobs.button_help("QUEUED")
    assert jobs.button_states("QUEUED")["cancel"] and not jobs.button_states("QUEUED")["stop"]
    assert jobs.button_states("INTERRUPTED")["resume"] and jobs.button_states("DONE")["report"]
    assert "Resume" in jobs.button_help("CANCELLED") and "Kill" not in jobs.button_help("CANCELLED")


def test_reattach_picks_running_then_queued():
    js = [_job(id="d", state="DONE"), _job(id="q", state="QUEUED"), _job(id="r", state="RUNNING")]
    assert jobs.pick_default(js) == "r"
    assert jobs.pick_default(js[:2]) == "q"
    assert jobs.pick_default([]) is None


def test_merge_points_dedupes_resumed_steps():
    a = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9}]
    b = [{"step": 2, "loss": 0.8}, {"step": 3, "loss": 0.7}]
    assert [p["loss"] for p in jobs.merge_points(a, b)] == [1.0, 0.8, 0.7]


def test_backbones_builtin_first_and_downloads_marked():
    api = FakeApi()
    ch = new_run.backbone_choices(list(reversed(api.catalog_backbones())))
    assert ch[0][1] == "concept-clip-tiny" and ch[-1][0].endswith("needs download")


def test_dataset_choices_mark_uploads_and_missing():
    ch = new_run.dataset_choices([{"key": "upload:" + "a" * 32, "title": "Mine", "num_classes": 2, "source": "upload"},
                                  {"key": "cars", "title": "Cars", "available": False}])
    assert "your upload" in ch[0][0] and "not on this server" in ch[1][0]


def test_preflight_markdown():
    md = new_run.preflight_markdown(["optim.lr: -1 is out of range", "data.target: unknown dataset '<b>'"])
    assert md.startswith("**Fix 2 problems") and "<b>" not in md
    # the problem names the label the form shows, with the spec path only as a hint
    assert "- ✗ **Step size \\(learning rate\\)**: \\-1 is out of range (optim\\.lr)" in md
    assert "Ready" in new_run.preflight_markdown([], n_runs=2) and "2 runs" in new_run.preflight_markdown([], n_runs=2)


def test_stat_cards_escape_and_tooltips():
    html = report.stat_cards_html(hostile_results())
    assert "<img" not in html and "&lt;img" in html
    assert html.count('title="') == 4
    assert "31 % → 97 %" in report.stat_cards_html(results())


def test_compare_summary_and_diff():
    from app.charts import RunEntry

    a, b = results(method="ce"), results()
    a["spec"] = {"method": {"name": "ce"}, "optim": {"steps": 5}}
    b["spec"] = {"method": {"name": "ldifs"}, "optim": {"steps": 5}}
    rows = compare.summary_rows([RunEntry("1", "CE", a), RunEntry("2", "LDIFS", b)])
    assert rows[0][1] == "ce" and rows[1][1] == "ldifs"
    headers, drows = compare.diff_table([a["spec"], b["spec"]], ["CE", "LDIFS"])
    assert headers == ["Setting", "CE", "LDIFS"] and len(drows) == 1 and drows[0][1:] == ["ce", "ldifs"]


def test_ingestion_report_escapes_names():
    md = datasets.ingestion_markdown({
        "key": "upload:" + "b" * 32, "name": HOSTILE, "accepted": 12, "num_classes": 2,
        "classes": [{"index": 0, "name": HOSTILE, "count": 6, "train": 5, "test": 1},
                    {"index": 1, "name": "dog", "count": 6, "train": 5, "test": 1}],
        "quarantined": [{"member": "x.txt", "code": "not_image", "reason": "not an image"}],
        "warnings": ["1 file(s) were skipped; see 'quarantined' for each reason"],
        "quota": {"used_bytes": 2_000_000, "quota_bytes": 2_000_000_000}})
    assert "<img" not in md and "1 file skipped" in md and "not an image" in md
    assert "12 images in 2 classes" in md and "2.0 MB of 2,000 MB" in md
    detail = datasets.detail_markdown({"key": "cars", "title": "Cars", "available": False,
                                       "message": "put the files in X"})
    assert "Not on this server" in detail and "put the files in X" in detail


def test_bounds_note():
    from app import forms

    fields = {f.path: f for f in forms.spec_fields()}
    assert new_run.bounds_note(fields["optim.lr"]) == " Allowed: > 0 and ≤ 1."
    assert new_run.bounds_note(fields["optim.steps"]) == " Allowed: 1 – 10,000,000. Leave empty for none."
    assert new_run.bounds_note(fields["method.head_init"]) == ""


def test_progress_shows_the_phase_after_training_not_a_stale_100_percent():
    """Issue 11: 'Now: fine-tuning · 100 % · about 0 s left' for minutes while the model was measured."""
    after = _job(step=60, total_steps=60, eta_s=0.0, phase="evaluating_after", phase_progress=0.4,
                 message="Starting the engine.")
    html = jobs.progress_html(after)
    assert "Measuring the fine-tuned model · 40 %" in html and "left" not in html
    assert 'aria-valuenow="40"' in html and 'aria-label="Run progress"' in html
    md = jobs.job_summary(after)
    assert "Now: measuring the fine-tuned model" in md and "Starting the engine" not in md  # stale notice gone
    row = jobs.jobs_table([after])[0]
    assert row[2] == "measuring the fine-tuned model 40 %" and row[3] == "—"
    training = _job(phase="fine_tuning", phase_progress=0.5)
    assert "step 30/60" in jobs.progress_html(training) and "left" in jobs.progress_html(training)
    no_number = jobs.progress_html(_job(phase="loading", phase_progress=None))
    assert "Loading the model and datasets" in no_number and "aria-valuenow" not in no_number


def test_uploads_are_shown_by_their_names():
    from app.tabs.common import Names

    api = FakeApi()
    key = api.import_dataset("u", "x.zip", name="Cats and dogs")["key"]
    names = Names.load(api, "u")
    job = _job(title=f"ldifs on {key}", method="ldifs", target=key)
    assert names.title(job) == "LDIFS on Cats and dogs"
    assert jobs.jobs_table([job], names)[0][5] == "Cats and dogs"
    assert "upload:" not in names.run_label(job).split(" · ")[0]


def test_a_merge_is_named_by_its_tasks_titles():
    from app.tabs.common import Names

    names = Names.load(FakeApi(), "u")
    job = _job(title="merge (task arithmetic) of quadrant + count", method="merge", target="quadrant + count",
               id="abcdef0123456789")
    assert names.title(job) == "merge (task arithmetic) of Position (quadrant) + Object count"
    assert names.run_label(job) == "merge (task arithmetic) of Position (quadrant) + Object count · abcdef01"
    assert jobs.jobs_table([job], names)[0][5] == "Position (quadrant) + Object count"
    named = _job(title="My merge", method="merge", target="quadrant + count", id="abcdef0123456789")
    assert names.title(named) == "My merge"  # a name the user gave is kept


def test_compare_shows_mean_and_sd_of_a_seed_group():
    from app.charts import RunEntry

    a, b = results(), results()
    b["datasets"]["colour"]["after"]["zs_acc"] -= 0.05  # seed 1 forgets 1 point more on average
    runs = [RunEntry("a1", "LDIFS", a), RunEntry("b1", "LDIFS", b), RunEntry("c1", "CE", results(method="ce"))]
    rows = compare.group_rows(runs, {"a1": "g", "b1": "g"})
    assert len(rows) == 1 and rows[0][0] == "LDIFS — 2 seeds, mean ± sd"
    assert rows[0][3] == "+66.0 ± 0.0" and rows[0][4] == "−4.7 ± 0.7"


def test_skipped_files_are_listed_without_escape_backslashes_in_code():
    md = datasets.ingestion_markdown({"name": "Mine", "classes": [], "accepted": 10,
                                      "skipped": [{"member": "cat_1/bad_file.png", "reason": "not an image"}]})
    assert "`" not in md  # no code span, where Markdown escapes would show as backslashes
    assert "cat\\_1/bad\\_file\\.png: not an image" in md


def test_a_rejected_upload_explains_itself_in_place():
    from app.context import AppContext
    from ldifs_engine.errors import SpecError

    api = FakeApi()

    def refuse(user, path, name=None):
        raise SpecError("upload: the zip has only one class folder (red); at least 2 are needed")

    api.import_dataset = refuse
    out = datasets.import_zip(AppContext(api=api), "x.zip", "Mine", None)
    assert out[0].startswith("✗ **Not imported.**") and "only one class folder" in out[0]
    assert len(out) == 4  # the report area says why; the table, picker and file stay as they were


def _finished_pair():
    """A fake API with a finished CE run and a finished LDIFS run on the same target, model and images."""
    import time
    from dataclasses import replace

    api = FakeApi(run_s=0.1)
    ids = {}
    for i, method in enumerate(("ce", "ldifs")):
        jid = api.submit("local", {"name": method.upper(), "data": {"target": "quadrant", "controls": ["colour"]},
                                   "method": {"name": method}, "optim": {"steps": 10}})
        api.jobs[jid] = replace(api.jobs[jid], created_at=time.time() - 100 + i)
        ids[method] = jid
    return api, ids


def test_compare_shows_the_difference_from_the_ce_run_with_its_interval(tmp_path):
    from app.charts import RunEntry
    from app.context import AppContext

    api, ids = _finished_pair()
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    runs = [RunEntry(ids[m], m.upper(), api.get_results("local", ids[m])) for m in ("ldifs", "ce")]
    assert compare.reference_index(runs) == 1  # the CE run, though picked second
    [row] = compare.difference_rows(ctx, "local", runs, "zs_acc")
    assert row[:2] == ["LDIFS", "CE"]
    assert row[2].startswith("±0.0 (")  # both classifiers reach 97 %: no difference, an interval around 0
    # the fake CE run loses 8 points more on every control: LDIFS forgot 8.0 points less, interval above 0
    assert row[3].startswith("+8.0 (+") and row[4].startswith("Forgot 8.0 points less than CE on the 5 controls")
    runs[0].results["spec"]["data"]["max_eval_samples"] = 50  # evaluated on other images: never paired
    api.results_for[ids["ldifs"]] = runs[0].results
    [row] = compare.difference_rows(ctx, "local", runs, "zs_acc")
    assert row[3] == "—" and row[4].startswith("Not compared: the two runs were not scored on the same test images")


def test_the_verdict_says_how_much_less_than_ce_it_forgot_and_whether_that_is_noise(tmp_path):
    from app.context import AppContext

    api, ids = _finished_pair()
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    job, res = api.get_job("local", ids["ldifs"]), api.get_results("local", ids["ldifs"])
    views = report.report_views(ctx, "local", job, res)
    sentence = "On the same test images it forgot 8.0 points less than plain fine-tuning on average (95 % interval +"
    assert sentence in views[1] and sentence in views[2]  # the headline and the verdict card
    d = api.compare_runs("local", ids["ldifs"], ids["ce"])
    d["controls"]["zs"].update(diff=0.004, ci=[-0.01, 0.02])
    from app import story

    assert "difference from plain fine-tuning is within noise" in story.reference_sentence(
        res, api.get_results("local", ids["ce"]), d)


def test_stop_the_whole_group_stops_every_waiting_run_of_it(tmp_path, monkeypatch):
    from dataclasses import replace

    import gradio as gr

    from app.context import AppContext

    api = FakeApi(run_s=60)
    ids = [api.submit("local", {"name": f"seed {i}", "data": {"target": "quadrant"}, "optim": {"steps": 10}}) for i in range(3)]
    for i in ids:
        api.jobs[i] = replace(api.jobs[i], group="g1")
    other = api.submit("local", {"name": "alone", "data": {"target": "quadrant"}, "optim": {"steps": 10}})
    monkeypatch.setattr(gr, "Info", lambda msg: None)
    ctx = AppContext(api=api, tmp_dir=tmp_path)
    out = jobs.act(ctx, "stop_group", ids[1], 0.6, False, None)
    assert {api.get_job("local", i).state for i in ids} == {"CANCELLED"}
    assert api.get_job("local", other).state in ("QUEUED", "RUNNING")  # not of the group
    assert "Stop the whole group" not in out[6]  # the panel's help follows the new state
    with pytest.raises(gr.Error, match="not part of a group"):
        jobs.act(ctx, "stop_group", other, 0.6, False, None)
