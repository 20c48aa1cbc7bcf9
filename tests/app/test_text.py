"""The headline sentence, number formatting and escaping (app/text.py)."""
from __future__ import annotations

from app import text

from .samples import HOSTILE


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


def test_every_glossary_term_is_explained():
    for key in ("zs_acc", "lp_acc", "delta", "target_acc", "mean_forgetting", "worst", "ece", "wise_ft", "pareto",
                "interval", "noise", "small_test", "unmeasurable", "verdict", "reference"):
        assert len(text.GLOSSARY[key]) > 40
    names = [name for name, _ in text.glossary_items()]
    assert all("_" not in n for n in names)  # the words the report shows, not internal keys
    for name, meaning in text.glossary_items():  # the explainer does not start by repeating the term
        assert not meaning.lower().startswith(name.split(" (")[0].lower())
