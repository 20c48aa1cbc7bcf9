"""Seed repeats: ``seeds`` in a spec expands into one run per seed."""
from __future__ import annotations

import pytest

from ldifs_engine.errors import SpecError
from ldifs_engine.spec import RunSpec


def test_seeds_expand_into_single_seed_specs():
    spec = RunSpec.from_dict({"optim": {"steps": 5}, "seeds": [0, 1, 2], "name": "probe"})
    runs = spec.expand_seeds()
    assert [r.seed for r in runs] == [0, 1, 2] and all(r.seeds == () for r in runs)
    assert [r.name for r in runs] == ["probe · seed 0", "probe · seed 1", "probe · seed 2"]
    assert RunSpec.from_dict(spec.to_dict()).seeds == (0, 1, 2)
    single = RunSpec.from_dict({"optim": {"steps": 5}})
    assert single.expand_seeds() == [single]


def test_a_spec_without_seeds_keeps_its_dict_and_hash():
    d = RunSpec.from_dict({"optim": {"steps": 5}}).to_dict()
    assert "seeds" not in d  # so every existing run's spec hash is unchanged


@pytest.mark.parametrize("bad, words", [([1, 1], "each seed may appear once"), ([-1], "out of range"),
                                        (list(range(11)), "at most 10"), ("0,1", "expected a list")])
def test_bad_seeds_name_the_field(bad, words):
    with pytest.raises(SpecError) as e:
        RunSpec.from_dict({"optim": {"steps": 5}, "seeds": bad})
    assert any(p.startswith("seeds") and words in p for p in e.value.problems)


def test_the_engine_refuses_to_run_a_group_as_one_run(tmp_path):
    from ldifs_engine.launch import run

    with pytest.raises(SpecError, match="seeds: a spec with seeds is a group of runs"):
        run(RunSpec.from_dict({"optim": {"steps": 5}, "seeds": [0, 1]}), tmp_path)


def test_ldifs_train_runs_each_seed_into_its_folder_and_prints_mean_and_sd(tmp_path, capsys):
    import json

    import yaml

    from ldifs_engine.__main__ import main

    from .helpers import tiny_spec

    d = tiny_spec(**{"optim.steps": 1, "eval.curve_points": 0, "data.max_eval_samples": 16,
                     "data.max_train_samples": 32, "method.name": "ce", "method.params": {}})
    d["seeds"] = [0, 1]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(d))
    assert main(["train", str(tmp_path / "spec.yaml"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    runs = [json.loads((tmp_path / "out" / f"seed-{s}" / "results.json").read_text()) for s in (0, 1)]
    assert [r["spec"]["seed"] for r in runs] == [0, 1]
    agg = json.loads((tmp_path / "out" / "aggregate.json").read_text())
    assert agg["n_runs"] == 2 and agg["seeds"] == [0, 1]
    mean = (runs[0]["target_head_acc"]["after"] + runs[1]["target_head_acc"]["after"]) / 2
    assert agg["target_head_acc"]["after"]["mean"] == pytest.approx(mean)
    assert "mean ± sd over 2 seeds (0, 1)" in out and f"target {100 * mean:.1f}" in out
    assert "seed 0" in out and "seed 1" in out
