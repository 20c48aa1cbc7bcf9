"""The spec hash of a spec written before a field existed stays what it was (its runs still resume)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ldifs_engine.checkpoint import load_checkpoint, save_checkpoint
from ldifs_engine.errors import InvalidCheckpoint
from ldifs_engine.fields import ADDED_LATER, drop_later_defaults, param
from ldifs_engine.methods import METHODS
from ldifs_engine.spec import DataSpec, EvalSpec, MethodSpec, OptimSpec, RunSpec

# spec.json of examples/ldifs_paper.yaml as the engine of 2026-11-27 (commit 51d3f9f) wrote it, and the
# spec hash that version computed for it (its checkpoints carry this hash).
OLD_SPEC_JSON = """{"backbone": "concept-clip-tiny",
 "data": {"target": "quadrant", "controls": ["shape", "colour", "pattern", "size"], "sequence": [],
          "val_fraction": 0.1, "max_train_samples": null, "max_eval_samples": null, "num_workers": 0},
 "method": {"name": "ldifs", "head_init": "lp", "freeze_head": false,
            "params": {"alpha": 10.0, "normalize": "tokens", "taps": "official", "final_embedding": false,
                       "reference": "previous"}},
 "optim": {"lr": 0.001, "weight_decay": 0.1, "batch_size": 64, "micro_batch": null, "steps": 200, "epochs": null,
           "warmup_steps": 20, "grad_clip": 1.0, "precision": "auto", "checkpoint_every": 50},
 "eval": {"zero_shot": true, "linear_probe": true, "ece": true, "curve_points": 4, "wise_ft_alphas": [],
          "lp_max_train": 1000},
 "seed": 0, "name": "LDIFS (paper default, alpha 10) on quadrant"}"""
OLD_HASH = "94863546c96bafb50ccd9bd4525efc61c3b72856ee3627bb8f27daf1d74b0962"

# Every field the first released spec had (51d3f9f). A field not listed here was added later and must be
# declared ``added_later=True`` (fields.param), or the hash of every older spec changes.
FIRST_FIELDS = {
    RunSpec: {"backbone", "data", "method", "optim", "eval", "seed", "name"},
    DataSpec: {"target", "controls", "sequence", "val_fraction", "max_train_samples", "max_eval_samples",
               "num_workers"},
    MethodSpec: {"name", "head_init", "freeze_head", "params"},
    OptimSpec: {"lr", "weight_decay", "batch_size", "micro_batch", "steps", "epochs", "warmup_steps", "grad_clip",
                "precision", "checkpoint_every"},
    EvalSpec: {"zero_shot", "linear_probe", "ece", "curve_points", "wise_ft_alphas", "lp_max_train"},
}
FIRST_METHOD_PARAMS = {"ce": set(), "l2sp": {"strength"}, "flyp": {"learn_temperature"},
                       "ldifs": {"alpha", "normalize", "taps", "final_embedding", "reference"},
                       "ls": {"epsilon"}}


def test_an_old_spec_keeps_its_old_hash():
    spec = RunSpec.from_json(OLD_SPEC_JSON)
    assert spec.optim.compile is False  # a field the old spec does not have, at its default
    assert spec.spec_hash() == OLD_HASH
    assert spec.replace(**{"optim.compile": True}).spec_hash() != OLD_HASH  # a set new option still counts
    assert spec.replace(**{"optim.lr": 2e-3}).spec_hash() != OLD_HASH
    assert json.loads(spec.to_json())["optim"]["compile"] is False  # spec.json / results.json still say it


def test_every_field_added_after_the_first_release_is_declared_added_later():
    for cls, first in FIRST_FIELDS.items():
        for f in dataclasses.fields(cls):
            assert f.name in first or f.metadata.get(ADDED_LATER), (
                f"{cls.__name__}.{f.name} was added after runs existed: declare it with param(..., added_later=True)")
    for name, first in FIRST_METHOD_PARAMS.items():
        params_cls = METHODS.get(name).Params
        for f in dataclasses.fields(params_cls):
            assert f.name in first or f.metadata.get(ADDED_LATER), (
                f"{name} Params.{f.name} was added after runs existed: declare it with param(..., added_later=True)")


def test_later_fields_are_dropped_at_any_depth_only_at_their_default():
    @dataclasses.dataclass(frozen=True)
    class Inner:
        old: int = param(1, "old")
        new: str = param("x", "new", added_later=True)

    @dataclasses.dataclass(frozen=True)
    class Outer:
        inner: Inner = dataclasses.field(default_factory=Inner)
        extra: tuple[int, ...] = param((), "new list", added_later=True)

    d = drop_later_defaults(Outer(), {"inner": {"old": 1, "new": "x"}, "extra": []})
    assert d == {"inner": {"old": 1}}
    o = Outer(Inner(new="y"), (3,))
    assert drop_later_defaults(o, {"inner": {"old": 1, "new": "y"}, "extra": [3]}) == {
        "inner": {"old": 1, "new": "y"}, "extra": [3]}


def test_a_checkpoint_written_under_the_full_dict_hash_still_resumes(tmp_path):
    """Runs started between adding ``optim.compile`` and this fix wrote the hash of the full dict."""
    spec = RunSpec.from_json(OLD_SPEC_JSON)
    legacy = spec.accepted_hashes()[1]
    assert legacy != spec.spec_hash()
    path = save_checkpoint(tmp_path, 3, weights={"w": torch.ones(2)}, state={"spec_hash": legacy},
                           optim_state={"opt": {}, "sched": {}})
    _w, state, _o = load_checkpoint(path, spec_hash=spec.accepted_hashes())
    assert state["step"] == 3
    other = spec.replace(**{"optim.lr": 2e-3})
    with pytest.raises(InvalidCheckpoint, match="another spec"):
        load_checkpoint(path, spec_hash=other.accepted_hashes())
