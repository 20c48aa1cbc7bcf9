"""The headline sentence, number formatting and escaping (app/text.py)."""
from __future__ import annotations

from app import text

from .samples import HOSTILE, hostile_results, partial_results, results


def test_headline_matches_the_issue_example():
    assert text.headline(results()) == (
        "Fine-tuning on *Quadrant* raised its accuracy from 31 % to 97 %; the model lost on average 4.2 points "
        "on the 5 other datasets, worst *Colour* −11.0.")


def test_headline_partial_results_count_only_measured_controls():
    h = text.headline(partial_results())
    assert "4 other datasets" in h and "(1 more not measured)" in h
    # shape has no "after": it is left out of the mean, not counted as a zero
    s = text.forgetting_summary(partial_results())
    assert s["missing"] == ["shape"] and s["n"] == 4
    assert abs(s["mean"] - (-0.11 - 0.02 - 0.02 - 0.03) / 4) < 1e-9


def test_headline_gain_and_no_controls():
    r = results()
    for e in r["datasets"].values():
        if e["role"] == "control":
            e["after"]["zs_acc"] = e["before"]["zs_acc"] + 0.02
    assert "gained on average 2.0 points" in text.headline(r)
    assert "worst" not in text.headline(r)
    only_target = results()
    only_target["datasets"] = {"quadrant": only_target["datasets"]["quadrant"]}
    assert "no other datasets were measured" in text.headline(only_target)


def test_headline_falls_back_to_zero_shot_when_no_head_accuracy():
    r = results(target_head_acc=None)
    assert "from 26 % to 40 %" in text.headline(r)


def test_headline_escapes_hostile_titles():
    md = text.headline(hostile_results())
    assert "<img" not in md and "&lt;img" in md
    html = text.headline(hostile_results(), markup="html")
    assert "<img" not in html and "<em>&lt;img src=x onerror=alert(1)&gt;</em>" in html


def test_md_escape_neutralises_markup():
    s = text.md_escape("[click](javascript:alert(1)) ![x](http://e/x.png) *b* # h\nnext")
    assert "](" not in s.replace("\\](", "") and "\n" not in s
    assert text.md_escape(HOSTILE).startswith("&lt;img")


def test_number_formats():
    assert text.pct(0.973) == "97 %" and text.pct(None) == "—" and text.pct(float("nan")) == "—"
    assert text.points(-0.11) == "−11.0" and text.points(0.042) == "+4.2" and text.points(0.0) == "±0.0"
    assert text.points(None) == "—"
    assert text.duration(3725) == "1 h 02 min" and text.duration(75) == "1 min 15 s" and text.duration(None) == "—"
    assert text.progress_bar(5, 10, width=4) == "██░░ 50 %" and text.progress_bar(None, 10) == "—"


def _with_mean(delta: float) -> dict:
    """Results with one control whose zero-shot accuracy changed by ``delta``."""
    return {"target": "t", "datasets": {
        "t": {"role": "target", "before": {"zs_acc": 0.25}, "after": {"zs_acc": 0.25}},
        "c": {"role": "control", "before": {"zs_acc": 0.5}, "after": {"zs_acc": 0.5 + delta}}}}


def test_verdict_levels():
    assert text.verdict(results()) == "Some forgetting"
    r = results()
    r["datasets"]["colour"]["after"]["zs_acc"] = 0.3
    assert text.verdict(r) == "Clear forgetting"
    labels = [label for _, label in text.VERDICTS]
    for mean, expected in [(0.02, 0), (-0.009, 0), (-0.03, 1), (-0.049, 1), (-0.06, 2), (-0.149, 2), (-0.33, 3)]:
        assert text.verdict(_with_mean(mean)) == labels[expected], mean
    assert text.verdict({"datasets": {}}) == "Unknown"


def test_every_glossary_term_is_explained():
    for key in ("zs_acc", "lp_acc", "delta", "target_acc", "mean_forgetting", "worst", "ece", "wise_ft", "pareto"):
        assert len(text.GLOSSARY[key]) > 40
