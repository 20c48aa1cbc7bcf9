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
