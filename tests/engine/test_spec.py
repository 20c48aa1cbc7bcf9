"""RunSpec: every bad field reported by name, at once; round trips."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from ldifs_engine.errors import SpecError
from ldifs_engine.spec import RunSpec, validate

BASE = {"data": {"target": "quadrant", "controls": ["colour", "shape"]}, "optim": {"steps": 10}}


def problems(d):
    with pytest.raises(SpecError) as e:
        RunSpec.from_dict(d)
    return e.value.problems


@pytest.mark.parametrize("patch,field,words", [
    ({"optim": {"steps": 10, "lr": -1}}, "optim.lr", "> 0"),
    ({"optim": {"steps": 10, "batch_size": 0}}, "optim.batch_size", ">= 1"),
    ({"optim": {"steps": 10, "lr": "fast"}}, "optim.lr", "number"),
    ({"method": {"name": "ldifs", "params": {"alpha": float("nan")}}}, "method.params.alpha", "finite"),
    ({"method": {"name": "sgd-magic"}}, "method.name", "ce, ls, l2sp, ldifs, flyp"),
    ({"method": {"name": "ldifs", "params": {"normalize": "rows"}}}, "method.params.normalize", "tokens, channels"),
    ({"method": {"name": "ldifs", "params": {"beta": 1}}}, "method.params.beta", "unknown field"),
    ({"data": {"target": "colour", "controls": ["colour"]}}, "data.controls", "cannot also be a control"),
    ({"data": {"target": "../../etc/passwd"}}, "data.target", "unknown dataset"),
    ({"backbone": "hf-hub:evil/model"}, "backbone", "unknown backbone"),
    ({"optim": {"steps": 10, "epochs": 2}}, "optim.steps", "exactly one"),
    ({"optim": {}}, "optim.steps", "exactly one"),
    ({"optim": {"steps": 10, "precision": "int4"}}, "optim.precision", "auto, fp32, bf16, fp16"),
    ({"eval": {"wise_ft_alphas": [0, 1.5]}}, "eval.wise_ft_alphas[1]", "0 to 1"),
    ({"seed": -3}, "seed", ">= 0"),
    ({"surprise": 1}, "surprise", "unknown field"),
    ({"method": {"head_init": "random"}}, "method.head_init", "zs, lp"),
    ({"optim": {"steps": 10, "batch_size": 8, "micro_batch": 16}}, "optim.micro_batch", "larger than"),
])
def test_each_bad_field_is_named(patch, field, words):
    d = {**BASE, **patch}
    found = [p for p in problems(d) if p.startswith(field + ":")]
    assert found, problems(d)
    assert words in found[0]


def test_all_problems_reported_at_once():
    d = {"optim": {"lr": -1, "batch_size": 0, "steps": 5}, "method": {"name": "ldifs", "params": {"alpha": -2}},
         "data": {"target": "quadrant", "controls": ["quadrant"]}}
    fields = {p.split(":")[0] for p in problems(d)}
    assert {"optim.lr", "optim.batch_size", "method.params.alpha", "data.controls"} <= fields


def test_validate_returns_list():
    assert validate(BASE) == []
    assert validate({"optim": {"steps": 0}})


def test_not_a_mapping():
    with pytest.raises(SpecError, match="mapping"):
        RunSpec.from_yaml("- just\n- a list\n")
    with pytest.raises(SpecError, match="YAML"):
        RunSpec.from_yaml("a: [unclosed")


def test_yaml_and_json_round_trip_and_hash_is_stable():
    s = RunSpec.from_dict({**BASE, "method": {"name": "ldifs", "params": {"alpha": 100}}, "eval": {"wise_ft_alphas": [0, 0.5, 1]}})
    assert RunSpec.from_yaml(s.to_yaml()) == s
    assert RunSpec.from_json(s.to_json()) == s
    assert RunSpec.from_yaml(s.to_yaml()).spec_hash() == s.spec_hash()
    assert s.replace(**{"optim.lr": 1e-3}).spec_hash() != s.spec_hash()


@settings(max_examples=40, deadline=None)
@given(lr=st.floats(1e-8, 1.0), bs=st.integers(1, 4096), alpha=st.floats(0, 1e6), seed=st.integers(0, 2**31 - 1),
       method=st.sampled_from(["ce", "ls", "l2sp", "ldifs", "flyp"]), steps=st.integers(1, 10**6),
       name=st.text(max_size=40).filter(lambda s: all(ord(c) >= 32 for c in s)))
def test_round_trip_property(lr, bs, alpha, seed, method, steps, name):
    params = {"alpha": alpha} if method == "ldifs" else {}
    d = {**BASE, "name": name, "seed": seed, "method": {"name": method, "params": params},
         "optim": {"steps": steps, "lr": lr, "batch_size": bs}}
    s = RunSpec.from_dict(d)
    assert RunSpec.from_dict(s.to_dict()) == s
    assert RunSpec.from_yaml(s.to_yaml()) == s
