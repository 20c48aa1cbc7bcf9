"""Widget values ↔ spec dicts, presets, CLI preview and YAML (app/forms.py)."""
from __future__ import annotations

import pytest
import yaml

from app import forms
from ldifs_engine.errors import SpecError
from ldifs_engine.spec import RunSpec, validate


def _values(fields, **over):
    vals = []
    for f in fields:
        v = over.get(f.path, forms.to_widget(f, f.default))
        vals.append(v)
    return vals


def test_fields_cover_the_whole_spec_and_basic_first():
    fields = forms.spec_fields()
    paths = [f.path for f in fields]
    assert paths[:len(forms.BASIC)] == list(forms.BASIC)
    flat = forms.flatten(RunSpec().to_dict())
    for p in flat:
        if not p.startswith("method.params"):
            assert p in paths, p
    kinds = {f.path: f.kind for f in fields}
    assert kinds["data.controls"] == kinds["data.sequence"] == "datasets" and kinds["optim.lr"] == "float"
    assert kinds["eval.wise_ft_alphas"] == "floats" and kinds["method.head_init"] == "choice"
    assert all(f.info for f in fields), "every field needs a one-line help"


def test_form_to_spec_builds_a_valid_spec():
    fields = forms.spec_fields()
    vals = _values(fields, **{"optim.steps": 20.0, "data.controls": ["shape", "colour"],
                              "eval.wise_ft_alphas": "0, 0.5, 1", "optim.micro_batch": None, "name": "my run"})
    spec, problems = forms.form_to_spec(fields, vals)
    assert problems == []
    assert spec["optim"]["steps"] == 20 and isinstance(spec["optim"]["steps"], int)
    assert spec["eval"]["wise_ft_alphas"] == [0.0, 0.5, 1.0]
    assert spec["optim"]["micro_batch"] is None
    assert validate(spec) == []


def test_method_params_from_metadata():
    method = {"name": "ldifs", "params": [
        {"name": "alpha", "type": "float", "default": 10.0, "help": "Weight.", "min": 0.0, "max": 1e9},
        {"name": "normalize", "type": "str", "default": "tokens", "help": "Axis.", "choices": ["tokens", "channels"]},
        {"name": "final_embedding", "type": "bool", "default": False, "help": "Also the embedding."}]}
    pf = forms.method_param_fields(method)
    assert [f.kind for f in pf] == ["float", "choice", "bool"]
    assert pf[0].info == "Weight." and pf[1].choices == ("tokens", "channels")
    spec, problems = forms.form_to_spec([], [], pf, [3.0, "channels", True])
    assert spec["method"]["params"] == {"alpha": 3.0, "normalize": "channels", "final_embedding": True}


def test_every_problem_reported_at_once():
    fields = forms.spec_fields()
    vals = _values(fields, **{"optim.lr": -1.0, "optim.steps": None, "eval.wise_ft_alphas": "0, x, 2",
                              "data.target": "nope"})
    spec, parse = forms.form_to_spec(fields, vals)
    problems = forms.preflight(spec, parse, validate)
    text = "\n".join(problems)
    assert "eval.wise_ft_alphas: 'x' is not a number" in text
    assert "optim.lr" in text
    assert len(problems) >= 3


def test_spec_round_trips_through_the_form():
    fields = forms.spec_fields()
    spec = RunSpec.from_dict({"data": {"target": "shape", "controls": ["colour"]}, "optim": {"steps": 7},
                              "eval": {"wise_ft_alphas": [0, 0.5]}, "name": "x"}).to_dict()
    back, problems = forms.form_to_spec(fields, forms.spec_to_form(fields, spec))
    back["method"]["params"] = spec["method"]["params"]
    assert problems == [] and RunSpec.from_dict(back).to_dict() == spec


def test_yaml_and_cli_preview():
    spec = RunSpec.from_dict({"optim": {"steps": 5}, "name": "it's $(rm -rf ~)"}).to_dict()
    y = forms.spec_yaml(spec)
    assert yaml.safe_load(y) == spec
    cmd = forms.cli_command(spec)
    assert "<<'LDIFS_SPEC'" in cmd  # quoted heredoc: no shell expansion of the spec's text
    assert "ldifs train spec.yaml --out" in cmd and "ldifs submit spec.yaml" in cmd
    assert forms.yaml_to_spec(y) == spec


@pytest.mark.parametrize("bad, msg", [("a: [", "not valid YAML"), ("- 1\n- 2", "mapping"), ("", "empty"),
                                      ("x: " + "a" * 200_000, "larger than")])
def test_yaml_errors_are_typed(bad, msg):
    with pytest.raises(SpecError, match=msg):
        forms.yaml_to_spec(bad)


def test_presets_and_companion_runs():
    presets = forms.load_presets()
    for name in ("Quick demo", "CE baseline", "LDIFS (paper default, alpha 10)", "Compare CE vs LDIFS"):
        assert name in presets, name
    both = presets["Compare CE vs LDIFS"]
    assert len(both) == 2 and {s["method"]["name"] for s in both} == {"ce", "ldifs"}
    ov = forms.overrides_between(both[0], both[1])
    assert ov["method.name"] == both[1]["method"]["name"]
    merged = forms.apply_overrides(both[0], ov)
    assert merged["method"] == both[1]["method"]


def test_config_diff_only_differing_fields():
    a = RunSpec.from_dict({"optim": {"steps": 5}, "method": {"name": "ce"}}).to_dict()
    b = RunSpec.from_dict({"optim": {"steps": 9}, "method": {"name": "ldifs"}}).to_dict()
    diff = dict(forms.config_diff([a, b]))
    assert diff["optim.steps"] == [5, 9] and diff["method.name"] == ["ce", "ldifs"]
    assert diff["method.params.alpha"] == ["—", 10.0]
    assert "optim.lr" not in diff


def test_warnings():
    spec = {"backbone": "ViT-B-32/openai", "data": {"target": "shape", "controls": []}}
    w = forms.warnings(spec, [{"key": "ViT-B-32/openai", "needs_download": True}],
                       [{"key": "shape", "available": False, "title": "Shape", "how_to_get": "put it in X"}])
    assert len(w) == 3 and any("downloaded" in x for x in w) and any("put it in X" in x for x in w)


def test_every_preset_survives_the_form_unchanged():
    """Loading a preset into the form and submitting it queues exactly the preset (continual included)."""
    from tasks.api import catalog_methods

    methods = {m["name"]: m for m in catalog_methods()}
    fields = forms.spec_fields()
    for name, specs in forms.load_presets().items():
        for preset in specs:
            pfields = forms.method_param_fields(methods[preset["method"]["name"]])
            spec, problems = forms.form_to_spec(fields, forms.spec_to_form(fields, preset), pfields,
                                                forms.params_to_form(pfields, preset["method"]["params"]))
            assert problems == [], (name, problems)
            assert RunSpec.from_dict(spec) == RunSpec.from_dict(preset), name


def test_each_dataset_has_one_role():
    assert forms.separate_datasets("quadrant", ["count", "quadrant", "count"], ["shape", "count", "quadrant"]) == (
        ["count"], ["shape"])
    assert forms.separate_datasets("quadrant", None, None) == ([], [])


def test_the_budget_switch_turns_a_run_into_a_budget_search_and_back():
    fields = forms.spec_fields()
    base = {"method": {"name": "ldifs", "params": {}}, "optim": {"steps": 7}, "data": {"controls": ["shape"]}}
    plain, problems = forms.form_to_spec(fields, forms.spec_to_form(fields, base))
    assert problems == [] and "budget" not in plain  # switch off (the default): an ordinary run
    on = {**base, "budget": {"max_forgetting_points": 2}}
    vals = forms.spec_to_form(fields, on)
    assert vals[[f.path for f in fields].index(forms.BUDGET_SWITCH)] is True
    spec, problems = forms.form_to_spec(fields, vals)
    assert problems == [] and spec["budget"]["max_forgetting_points"] == 2 and "enabled" not in spec["budget"]
    assert validate(spec) == [] and RunSpec.from_dict(spec).budget.max_forgetting_points == 2
    assert "ldifs budget spec.yaml --out" in forms.cli_command(spec)
    assert "ldifs train" in forms.cli_command(plain)
