"""One story per run (app/story.py): headline, cards and table tell the same, labelled numbers;
intervals make noise visible; unmeasurable values are named, never numbers; CE as the reference."""
from __future__ import annotations

from app import charts, story

from .samples import hostile_results, partial_results, results


def with_intervals() -> dict:
    """The sample run with the intervals and notes report-engine writes (docs/CONTRACTS.md)."""
    r = results()
    r["target_head_acc"].update(before_ci=[0.26, 0.36], after_ci=[0.95, 0.99], delta_ci=[0.60, 0.72])
    for key, e in r["datasets"].items():
        d = e["after"]["zs_acc"] - e["before"]["zs_acc"]
        e["delta_zs_ci"] = [d - 0.02, d + 0.02]
        e["n_test"] = 400
        e["before"]["zs_acc_ci"] = [e["before"]["zs_acc"] - 0.03, e["before"]["zs_acc"] + 0.03]
    r["summary"]["mean_delta_zs_controls_ci"] = [-0.05, -0.034]
    return r


def test_headline_matches_the_issue_example():
    assert story.headline(results()) == (
        "Fine-tuning on *Quadrant* raised the accuracy of its trained classifier from 31 % to 97 %; the model lost "
        "on average 4.2 points on the 5 other datasets, worst *Colour* −11.0.")


def test_headline_cards_and_table_tell_the_same_target_numbers():
    r = with_intervals()
    h = story.headline(r)
    cards = {label: (value, note) for label, value, note, _t, _k in story.stat_cards(r)}
    table = charts.report_table(r)
    assert "from 31 % to 97 %" in h
    assert cards["Target accuracy (trained classifier)"][0] == "31 % → 97 %"
    assert table[0][1:4] == ["Trained classifier", "31.0 %", "97.0 %"]
    # the scatter's target gain is the same difference
    assert charts.run_point(r)[0] == (0.97 - 0.31) * 100
    assert "95 % interval −5.0 to −3.4 points" in h
    assert cards["Average change on controls"] == ("−4.2 points", "95 % interval −5.0 to −3.4 points")


def test_within_noise_when_the_interval_covers_zero():
    r = with_intervals()
    r["summary"]["mean_delta_zs_controls_ci"] = [-0.09, 0.004]
    assert "within noise" in story.headline(r)
    assert story.verdict(r) == "No clear forgetting (within noise)"
    r["target_head_acc"]["delta_ci"] = [-0.01, 0.2]
    assert "to 97 % (within noise)" in story.headline(r)
    assert story.verdict(results()) == "Some forgetting"  # old results without intervals: plain verdict


def test_small_test_sets_are_named():
    r = with_intervals()
    r["datasets"]["colour"]["n_test"] = 12
    r["summary"]["small_test_splits"] = ["colour"]
    h = story.headline(r)
    assert "Small test set: *Colour* (12 images)" in h
    assert story.small_test_splits(results()) == {}


def test_unmeasurable_zero_shot_is_left_out_and_named():
    r = results()
    e = r["datasets"]["count"]
    e["zs_note"] = "class prompts are indistinguishable to this model"
    e["before"]["zs_acc"] = e["after"]["zs_acc"] = None
    s = story.forgetting_summary(r)
    assert "count" not in s["deltas"] and s["unmeasurable"] == {"count": e["zs_note"]} and s["missing"] == []
    h = story.headline(r)
    assert "4 other datasets" in h and "not measurable on *Count* (class prompts are indistinguishable" in h
    assert "more not measured" not in h


def test_verdict_relative_to_plain_fine_tuning():
    ldifs = results(method="ldifs")
    ce = results(method="ce")
    for e in ce["datasets"].values():
        if e["role"] == "control":
            e["after"]["zs_acc"] -= 0.2  # CE: −4.2 − 20 = −24.2 on average
    assert story.matches_reference(ldifs, ce)
    other_model = results(method="ce")
    other_model["spec"]["backbone"] = "ViT-B-32/openai"
    assert not story.matches_reference(ldifs, other_model)
    share = story.kept_share(ldifs, ce)
    assert abs(share - (1 - 4.2 / 24.2)) < 1e-9
    cards = {label: note for label, _v, note, _t, _k in story.stat_cards(ldifs, ce)}
    assert cards["Verdict"].startswith("Kept 83 % of what plain fine-tuning lost")
    assert "Kept 83 %" in story.headline(ldifs, reference=ce)
    assert story.kept_share(ce, ce) is None  # CE is not measured against itself


def test_headline_partial_results_count_only_measured_controls():
    h = story.headline(partial_results())
    assert "4 other datasets" in h and "(1 more not measured)" in h
    s = story.forgetting_summary(partial_results())
    assert s["missing"] == ["shape"] and s["n"] == 4
    assert abs(s["mean"] - (-0.11 - 0.02 - 0.02 - 0.03) / 4) < 1e-9


def test_headline_falls_back_to_zero_shot_when_no_head_accuracy():
    r = results(target_head_acc=None)
    assert "raised its zero-shot accuracy from 26 % to 40 %" in story.headline(r)


def test_headline_escapes_hostile_titles():
    md = story.headline(hostile_results())
    assert "<img" not in md and "&lt;img" in md
    html = story.headline(hostile_results(), markup="html")
    assert "<img" not in html and "<em>&lt;img src=x onerror=alert(1)&gt;</em>" in html


def _with_mean(delta: float) -> dict:
    return {"target": "t", "datasets": {
        "t": {"role": "target", "before": {"zs_acc": 0.25}, "after": {"zs_acc": 0.25}},
        "c": {"role": "control", "before": {"zs_acc": 0.5}, "after": {"zs_acc": 0.5 + delta}}}}


def test_verdict_levels():
    labels = [label for _, label in story.VERDICTS]
    for mean, expected in [(0.02, 0), (-0.009, 0), (-0.03, 1), (-0.049, 1), (-0.06, 2), (-0.149, 2), (-0.33, 3)]:
        assert story.verdict(_with_mean(mean)) == labels[expected], mean
    assert story.verdict({"datasets": {}}) == "Unknown"


def test_group_line_mean_and_sd():
    agg = {"target_head_acc": {"gain": {"mean": 0.61, "sd": 0.012, "n": 3}},
           "summary": {"mean_delta_zs_controls": {"mean": -0.06, "sd": 0.008, "n": 3}}}  # aggregate_runs' shape
    assert story.group_line(agg, 3) == ("Repeated over 3 seeds: target +61.0 ± 1.2 points, controls −6.0 ± 0.8 "
                                        "points (mean ± sd).")
    assert story.group_line(agg, 1) == "" and story.group_line(None, 3) == ""


def test_offline_report_has_cards_verdict_and_plain_glossary():
    page = charts.report_html(with_intervals(), "demo")
    assert "Average change on controls" in page and "Verdict" in page
    assert "<dt>zs acc</dt>" not in page and "<dt>Zero-shot accuracy</dt>" in page
    assert "<dt>Within noise</dt>" in page
