"""One real run of the built-in model, read as the report reads it: one story for the target, intervals
from the per-image file, zero-shot gaps where the model cannot tell the classes apart, truthful phases."""
from __future__ import annotations

import json

import pytest

from ldifs_engine.events import read_events
from ldifs_engine.intervals import attach_intervals, read_per_image
from ldifs_engine.results import results_problems
from ldifs_engine.launch import run
from ldifs_engine.spec import RunSpec

from .helpers import tiny_spec


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """concept-clip-tiny fine-tuned on quadrant (its prompts are indistinguishable to the model) for 4 steps."""
    d = tmp_path_factory.mktemp("report-run")
    spec = RunSpec.from_dict(tiny_spec(**{"backbone": "concept-clip-tiny", "method.head_init": "lp", "optim.steps": 4,
                                          "eval.linear_probe": True, "eval.wise_ft_alphas": [0.0, 1.0]}))
    from ldifs_engine.cache import NullCache

    return run(spec, d / "run", cache=NullCache()), d / "run"


def test_unmeasurable_zero_shot_is_a_gap_with_its_reason(tiny_run):
    r, _ = tiny_run
    assert results_problems(r) == []
    q, c = r["datasets"]["quadrant"], r["datasets"]["colour"]
    assert q["zs_note"].startswith("class prompts are indistinguishable to this model")
    for side in ("before", "after"):
        assert q[side]["zs_acc"] is None and q[side]["zs_ece"] is None and q[side]["zs_acc_ci"] is None
        assert q[side]["lp_acc"] is not None  # the features are still measured, by the probe
    assert q["delta_zs"] is None and q["delta_zs_ci"] is None
    assert c["zs_note"] is None and c["before"]["zs_acc"] is not None
    assert r["summary"]["unmeasurable_zs"] == ["quadrant"]
    assert all(v is None for v in r["curves"]["zs_acc"]["quadrant"])  # curves leave the gap too
    assert all(v is None for v in r["wise_ft"]["target_zs_acc"])


def test_one_story_for_the_target(tiny_run):
    r, _ = tiny_run
    th, s = r["target_head_acc"], r["summary"]
    assert s["target_gain"] == pytest.approx(th["after"] - th["before"])
    assert th["before_ci"][0] <= th["before"] <= th["before_ci"][1]
    assert th["after_ci"][0] <= th["after"] <= th["after_ci"][1]
    assert s["target_gain_ci"] == th["delta_ci"]
    assert r["curves"]["target_head_acc"][0] == th["before"]  # the curve starts where the headline starts
    assert r["wise_ft"]["target_head_acc"][0] == pytest.approx(th["before"])
    assert r["wise_ft"]["target_head_acc"][-1] == pytest.approx(th["after"])
    from ldifs_engine.tables import summary_table

    table = summary_table({"ldifs": r})
    before_row, after_row = table.splitlines()[1:3]
    assert before_row.split()[1] == f"{100 * th['before']:.1f}" and after_row.split()[1] == f"{100 * th['after']:.1f}"
    mean = s["mean_delta_zs_controls"]
    assert f"{100 * mean:+.1f} [" in after_row


def test_intervals_are_recomputable_from_the_per_image_file(tiny_run):
    r, workdir = tiny_run
    on_disk = json.loads((workdir / "results.json").read_text())
    assert on_disk["datasets"]["colour"]["delta_zs_ci"] == r["datasets"]["colour"]["delta_zs_ci"]
    stripped = json.loads(json.dumps(on_disk))
    for d in stripped["datasets"].values():
        for k in [k for k in d if k.endswith("_ci")]:
            del d[k]
    attach_intervals(stripped, read_per_image(workdir), r["spec"]["seed"])
    assert stripped == on_disk
    c = r["datasets"]["colour"]
    lo, hi = c["after"]["zs_acc_ci"]
    assert lo <= c["after"]["zs_acc"] <= hi and c["n_test"] == 64
    assert c["delta_zs_ci"][0] <= c["delta_zs"] <= c["delta_zs_ci"][1]
    assert r["summary"]["small_test_splits"] == ["quadrant", "colour"]  # 64 images each


def test_progress_events_say_which_phase_and_how_far(tiny_run):
    _, workdir = tiny_run
    evs = [e for e in read_events(workdir / "events.jsonl") if e["type"] in ("phase", "progress")]
    phases = [e["phase"] for e in evs if e["type"] == "phase"]
    assert phases == ["load", "before_eval", "sanity", "train", "after_eval", "wise_ft", "write", "done"]
    prog = [(e["phase"], e["done"], e["total"]) for e in evs if e["type"] == "progress"]
    assert prog == [("before_eval", 1, 2), ("before_eval", 2, 2), ("after_eval", 1, 2), ("after_eval", 2, 2),
                    ("wise_ft", 1, 2), ("wise_ft", 2, 2)]


def test_a_sequence_pairs_its_first_before_with_its_last_after(tmp_path):
    spec = RunSpec.from_dict(tiny_spec(**{"data.sequence": ["count"], "eval.linear_probe": False, "optim.steps": 2,
                                          "optim.checkpoint_every": 2, "eval.curve_points": 0}))
    r = run(spec, tmp_path / "seq")
    first, last = (read_per_image(tmp_path / "seq" / "stages" / n) for n in ("01", "02"))
    top = read_per_image(tmp_path / "seq")
    assert top["datasets"]["colour"]["before"] == first["datasets"]["colour"]["before"]
    assert top["datasets"]["colour"]["after"] == last["datasets"]["colour"]["after"]
    c = r["datasets"]["colour"]
    assert c["delta_zs_ci"][0] <= c["delta_zs"] <= c["delta_zs_ci"][1]
    assert r["summary"]["mean_delta_zs_controls_ci"] == c["delta_zs_ci"] or r["summary"]["mean_delta_zs_controls_ci"]
    assert r["target_head_acc"]["delta_ci"] is not None and r["continual"]["transfer_note"] is None
