"""Spec fields are checked against their real types, not the text of their annotations."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from ldifs_engine.fields import param
from ldifs_engine.spec import RunSpec, check_value, field_types


@dataclass(frozen=True)
class Odd:
    # spellings a newcomer may use: the old text parser knew only "X | None" and "tuple[...]"
    steps: Optional[int] = param(None, "optional whole number", min=1)  # noqa: UP045 — the point of the test
    grid: tuple[float, ...] = param((), "a list of numbers", min=0.0, max=1.0)


def _check(name: str, value):
    problems: list[str] = []
    meta = {f.name: f.metadata for f in fields(Odd)}[name]
    ok, out = check_value(field_types(Odd)[name], meta, value, name, problems)
    return ok, out, problems


def test_optional_written_with_typing_is_an_optional_whole_number():
    assert _check("steps", None) == (True, None, [])
    assert _check("steps", 3.0) == (True, 3, [])
    ok, _, problems = _check("steps", 0)
    assert not ok and problems == ["steps: 0 is out of range; allowed: a whole number >= 1"]


def test_tuple_items_are_checked_one_by_one():
    assert _check("grid", [0, "0.5", 1]) == (True, (0.0, 0.5, 1.0), [])
    ok, _, problems = _check("grid", [0.5, 2])
    assert not ok and problems == ["grid[1]: 2.0 is out of range; allowed: a number >= 0 and <= 1"]


def test_the_run_spec_still_validates_every_field_kind():
    spec = RunSpec.from_dict({"optim": {"steps": 5, "micro_batch": None, "grad_clip": "0.5"},
                              "eval": {"wise_ft_alphas": [0, 0.5, 1]}, "data": {"controls": ["colour"]}})
    assert spec.optim.grad_clip == 0.5 and spec.eval.wise_ft_alphas == (0.0, 0.5, 1.0)
