"""Continual fine-tuning: stages chained on one model, the accuracy matrix, resume, spec checks."""
from __future__ import annotations

import json
import shutil

import pytest

from ldifs_engine import continual
from ldifs_engine.errors import SpecError
from ldifs_engine.events import read_events
from ldifs_engine.launch import run
from ldifs_engine.results import results_problems
from ldifs_engine.spec import RunSpec

from .helpers import tiny_spec


def _spec(**over) -> RunSpec:
    return RunSpec.from_dict(tiny_spec(**{"data.sequence": ["count"], "eval.linear_probe": False,
                                          "optim.steps": 4, "optim.checkpoint_every": 2, "eval.curve_points": 2,
                                          **over}))


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """One uninterrupted run of ``_spec()`` (two stages), shared by the tests that read it or copy it:
    ``(workdir, results)``. Its own home and cache, so it neither sees nor leaves anything in a test's."""
    root = tmp_path_factory.mktemp("continual-whole")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LDIFS_HOME", str(root / "home"))
        mp.delenv("LDIFS_CACHE_DIR", raising=False)
        r = run(_spec(), root / "seq")
    return root / "seq", r


def test_a_sequence_chains_stages_and_reports_the_matrix(whole):
    seq, r = whole
    assert results_problems(r) == []
    c = r["continual"]
    assert c["sequence"] == ["quadrant", "count"] and len(c["task_acc"]) == 3 and len(c["zs_acc"]) == 3
    assert {k: d["role"] for k, d in r["datasets"].items()} == {"quadrant": "sequence", "count": "target",
                                                               "colour": "control"}
    s1, s2 = (json.loads((seq / p).read_text()) for p in c["stages"])
    # stage 2 starts from stage 1's weights: its "before" is stage 1's "after", dataset by dataset
    for key in ("quadrant", "count", "colour"):
        assert s2["datasets"][key]["before"]["zs_acc"] == s1["datasets"][key]["after"]["zs_acc"]
    # the top level compares the end of the sequence with the pre-trained model
    assert r["datasets"]["colour"]["before"] == s1["datasets"]["colour"]["before"]
    assert r["datasets"]["colour"]["after"] == s2["datasets"]["colour"]["after"]
    # matrix cells: learned tasks use their own head, later tasks zero-shot
    assert c["task_acc"][1][0] == s1["target_head_acc"]["after"]
    assert c["task_acc"][2][0] == s2["carried_heads_acc"]["quadrant"]
    assert c["task_acc"][1][1] == s1["datasets"]["count"]["after"]["zs_acc"]
    assert c["task_acc"][2][1] == s2["target_head_acc"]["after"]
    assert (seq / "final" / "model.safetensors").is_file()
    # one progress axis: 4 + 4 steps, one "done" for the whole run
    events = read_events(seq / "events.jsonl")
    steps = [e["step"] for e in events if e["type"] == "step"]
    assert steps == list(range(1, 9)) and {e["total_steps"] for e in events if e["type"] == "step"} == {8}
    assert [e["type"] for e in events].count("done") == 1
    # stage 2 starts from weights stage 1 has just evaluated: its "before" side is not recomputed
    before_logs = [e["message"] for e in events if e["type"] == "log" and e["message"].startswith("before-side")]
    assert before_logs[-1] == "before-side: 3 of 3 datasets served from cache"
    assert r["curves"]["steps"] == sorted(set(r["curves"]["steps"])) and r["curves"]["steps"][-1] == 8


def test_finished_stages_are_kept_on_resume(whole, tmp_path, monkeypatch):
    spec = _spec()
    shutil.copytree(whole[0], tmp_path / "seq")  # a finished sequence of this spec
    first = whole[1]

    def no_training(*a, **k):
        raise AssertionError("a finished stage was run again")

    monkeypatch.setattr(continual, "run_task", no_training)
    again = run(spec, tmp_path / "seq", resume=True)
    assert again["continual"]["task_acc"] == first["continual"]["task_acc"]


@pytest.mark.parametrize("reference", ["previous", "pretrained"])
def test_ldifs_reference_is_the_previous_stage_or_the_pretrained_model(tmp_path, monkeypatch, reference):
    seen = []
    real = continual.run_task

    def spy(spec, workdir, **kw):
        seen.append((kw.get("init_state") is not None, kw.get("reference_state") is not None,
                     sorted(kw.get("carry_heads") or {})))
        return real(spec, workdir, **kw)

    monkeypatch.setattr(continual, "run_task", spy)
    run(_spec(**{"method.params": {"alpha": 10.0, "reference": reference}, "optim.steps": 2}), tmp_path / "r")
    assert seen[0] == (False, False, [])
    assert seen[1] == (True, reference == "pretrained", ["quadrant"])


def test_accuracy_matrix_summaries_follow_their_definitions():
    spec = _spec(**{"data.sequence": ["count", "shape"]})
    stages = []
    # rows after stage 1..3 on tasks (quadrant, count, shape): head acc once learned, zero-shot before
    zs_after = [{"quadrant": .5, "count": .3, "shape": .2, "colour": .9},
                {"quadrant": .4, "count": .6, "shape": .25, "colour": .8},
                {"quadrant": .3, "count": .5, "shape": .7, "colour": .7}]
    heads = [.9, .8, .95]
    carried = [{}, {"quadrant": .85}, {"quadrant": .75, "count": .7}]
    for i in range(3):
        stages.append({
            "datasets": {k: {"role": "control", "before": {"zs_acc": .25, "zs_ece": None, "lp_acc": None, "lp_ece": None},
                             "after": {"zs_acc": v, "zs_ece": None, "lp_acc": None, "lp_ece": None}}
                         for k, v in zs_after[i].items()},
            "target_head_acc": {"before": .25, "after": heads[i]}, "carried_heads_acc": carried[i],
            "curves": {}, "training": {"steps": 4}, "timing": {"train_s": 1.0, "eval_s": 1.0, "started_at": "t"},
        })
    c = continual.combine(spec, stages, 3.0)["continual"]
    assert c["task_acc"][1:] == [[.9, .3, .2], [.85, .8, .25], [.75, .7, .95]]
    assert c["last"] == pytest.approx((.75 + .7 + .95) / 3)
    assert c["avg"] == pytest.approx(sum([.9, .3, .2, .85, .8, .25, .75, .7, .95]) / 9)
    # transfer: count before it is learned (after stage 1: .3); shape before (stages 1, 2: .2, .25)
    assert c["transfer"] == pytest.approx((.3 + (.2 + .25) / 2) / 2)


@pytest.mark.parametrize(("over", "field"), [
    ({"data.sequence": ["quadrant"]}, "data.sequence"),
    ({"data.sequence": ["count", "count"]}, "data.sequence"),
    ({"data.sequence": ["colour"]}, "data.sequence"),
    ({"data.sequence": ["nope"]}, "data.sequence[0]"),
    ({"eval.wise_ft_alphas": [0.5]}, "eval.wise_ft_alphas"),
])
def test_bad_sequences_are_refused_naming_the_field(over, field):
    with pytest.raises(SpecError) as e:
        _spec(**over)
    assert any(p.startswith(field) for p in e.value.problems), e.value.problems


def test_a_sequence_stopped_in_its_second_stage_resumes_to_the_same_result(whole, tmp_path):
    from safetensors.torch import load_file

    from ldifs_engine.errors import Cancelled

    spec = _spec()
    whole_dir, whole = whole
    wd = tmp_path / "stopped"

    def stop_in_stage_two():
        steps = [e["step"] for e in read_events(wd / "events.jsonl") if e["type"] == "step"]
        return bool(steps) and steps[-1] >= 6

    with pytest.raises(Cancelled):
        run(spec, wd, should_stop=stop_in_stage_two)
    assert (wd / "stages" / "01" / "results.json").is_file() and not (wd / "results.json").exists()
    resumed = run(spec, wd, resume=True)
    for got, want in zip(resumed["continual"]["task_acc"], whole["continual"]["task_acc"]):
        assert got == pytest.approx(want, abs=1e-6)
    wa, wb = load_file(wd / "final" / "model.safetensors"), load_file(whole_dir / "final" / "model.safetensors")
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) <= 1e-6
