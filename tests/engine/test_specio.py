"""Hostile spec text is refused at parse time: fast, with a short message (issue 10, item 3)."""
from __future__ import annotations

import time

import pytest

from ldifs_engine.errors import SpecError
from ldifs_engine.spec import RunSpec
from ldifs_engine.specio import MAX_SPEC_BYTES, parse_spec_text, quote


def alias_bomb(levels: int = 9, fan: int = 9) -> str:
    """The "billion laughs" YAML of the issue: ``levels`` anchors, each listing ``fan`` aliases of the last."""
    text = "a0: &a0 [" + ",".join(['"lol"'] * fan) + "]\n"
    for i in range(1, levels):
        text += f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * fan) + "]\n"
    return text


HOSTILE = {
    "alias bomb 9x9": alias_bomb(9, 9),
    "alias bomb 10x9": alias_bomb(10, 9),
    "alias bomb under the alias cap": alias_bomb(7, 9),
    "deep flow nesting": "[" * 5000 + "]" * 5000,
    "deep block nesting": "".join("  " * i + "- \n" for i in range(2000)),
    "deep JSON": '{"a":' * 5000 + "1" + "}" * 5000,
    "recursive alias": "a: &a [*a]\n",
    "wide YAML list": "data: {controls: [" + ",".join(["x"] * 30000) + "]}",
    "oversize": "name: " + "x" * (MAX_SPEC_BYTES + 1),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_specs_are_answered_fast_and_short(name):
    text = HOSTILE[name]
    t0 = time.perf_counter()
    with pytest.raises(SpecError) as e:
        RunSpec.from_yaml(text)
    took = time.perf_counter() - t0
    assert took < 1.0, f"{name}: {took:.2f} s"
    assert len(str(e.value)) < 200 and str(e.value).startswith("spec")
    assert "Recursion" not in str(e.value)


def test_json_door_is_bounded_too():
    with pytest.raises(SpecError, match="deeper than"):
        RunSpec.from_json('{"a":' * 5000 + "1" + "}" * 5000)
    with pytest.raises(SpecError, match="not valid JSON"):
        parse_spec_text('{"a": NaN}', fmt="json")


def test_anchors_within_limits_still_work():
    d = parse_spec_text("common: &c {steps: 5, batch_size: 8}\noptim: *c\n")
    assert d["optim"] == {"steps": 5, "batch_size": 8}


def test_values_are_quoted_short_in_messages():
    with pytest.raises(SpecError) as e:
        RunSpec.from_dict({"backbone": "b" * 100_000, "data": {"controls": ["c" * 5000] * 500},
                           "optim": {"lr": "x" * 10_000}})
    assert len(str(e.value)) < 3000  # at most a dozen problems, each value cut to ~80 characters
    assert "more problem" in str(e.value)
    assert len(quote("z" * 1000)) <= 80 and quote(list(range(1000))) == "<list of 1000 items>"


def test_cli_answers_a_bomb_with_exit_2(tmp_path, capsys):
    from ldifs_engine.__main__ import main

    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb(), encoding="utf-8")
    t0 = time.perf_counter()
    assert main(["train", str(path), "--out", str(tmp_path / "out")]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "aliases are expanded" in err and len(err) < 300
