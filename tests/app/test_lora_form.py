"""The New run form shows LoRA's params from the method registry, in words, and names them in errors."""
from __future__ import annotations

from app import forms
from app.tabs.new_run import field_labels, problem_line
from ldifs_engine.spec import validate
from tasks.api import catalog_methods


def test_lora_params_appear_in_the_form_with_plain_labels_and_errors_name_them():
    lora = next(m for m in catalog_methods() if m["name"] == "lora")
    pf = forms.method_param_fields(lora)
    assert [(f.path.rsplit(".", 1)[-1], f.kind) for f in pf] == [
        ("rank", "int"), ("lora_alpha", "float"), ("dropout", "float"), ("targets", "choice"),
        ("ldifs_alpha", "float"), ("export", "choice")]
    labels = field_labels(pf)
    assert labels["method.params.rank"] == "Adapter rank"
    assert labels["method.params.ldifs_alpha"] == "LDIFS strength (0 = off)"
    assert all(f.info for f in pf) and "1×1 convolutions" in dict((f.path, f.info) for f in pf)[
        "method.params.targets"]
    fields = forms.spec_fields()
    base, _ = forms.form_to_spec(fields, [forms.to_widget(f, f.default) for f in fields])
    base["method"]["name"] = "lora"
    spec, problems = forms.form_to_spec([], [], pf, [0, 16.0, 0.0, "attention", 0.0, "both"])
    base["method"]["params"] = spec["method"]["params"]
    base["optim"]["steps"] = 10
    problems = forms.preflight(base, problems, validate)
    lines = [problem_line(p, labels) for p in problems]
    assert len(lines) == 1 and lines[0].startswith("- ✗ **Adapter rank**: 0 is out of range"), lines
