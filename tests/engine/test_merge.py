"""Merging finished runs: λ = 0 is the pre-trained model, λ = 1 with one run is that run, TIES' arithmetic,
and runs that do not fit together are refused with one line naming the run."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ldifs_engine.__main__ import main
from ldifs_engine.backbones import load_backbone
from ldifs_engine.merge import MergeSpec, task_arithmetic, ties_vector
from ldifs_engine.merge_run import run_merge
from ldifs_engine.results import results_problems

METRICS = ("zs_acc", "zs_ece", "lp_acc", "lp_ece", "zs_acc_ci")


def test_lambda_one_with_one_run_gives_that_runs_numbers_exactly(finished_runs, tmp_path):
    quadrant, _count, cache = finished_runs
    run = json.loads((quadrant / "results.json").read_text())
    merged = run_merge(MergeSpec.from_dict({"runs": [str(quadrant)], "lambdas": [1.0]}), tmp_path / "m", cache=cache)
    assert not results_problems(merged)
    assert merged["datasets"].keys() == run["datasets"].keys()
    for key, d in run["datasets"].items():
        for side in ("before", "after"):
            assert {k: merged["datasets"][key][side].get(k) for k in METRICS} == {k: d[side].get(k) for k in METRICS}
        assert merged["datasets"][key]["delta_zs_ci"] == d["delta_zs_ci"]
    for k in ("before", "after", "before_ci", "after_ci", "delta_ci"):
        assert merged["target_head_acc"][k] == run["target_head_acc"][k]
    assert merged["merge"]["chosen_lambda"] == 1.0 and merged["merge"]["tasks"][0]["merged"] == run["target_head_acc"]["after"]
    mine, theirs = load_file(tmp_path / "m/final/model.safetensors"), load_file(quadrant / "final/model.safetensors")
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_lambda_zero_gives_the_pretrained_models_numbers(finished_runs, tmp_path):
    quadrant, count, cache = finished_runs
    merged = run_merge(MergeSpec.from_dict({"runs": [str(quadrant), str(count)], "lambdas": [0.0]}), tmp_path / "m",
                       cache=cache)
    assert merged["target"] == "quadrant" and merged["datasets"]["count"]["role"] == "sequence"
    assert {k for k, d in merged["datasets"].items() if d["role"] == "control"} == {"colour"}
    for key, d in merged["datasets"].items():
        assert d["after"]["zs_acc"] == d["before"]["zs_acc"], key
    assert merged["summary"]["mean_delta_zs_controls"] == 0.0
    theta0 = load_backbone("concept-clip-tiny").state_dict()
    state = load_file(tmp_path / "m/final/model.safetensors")
    assert all(torch.equal(state[k], v) for k, v in theta0.items())
    # the sweep's point and the full evaluation agree; each task is scored with its own run's head
    assert [t["dataset"] for t in merged["merge"]["tasks"]] == ["quadrant", "count"]
    assert merged["merge"]["per_lambda"][0]["task_acc"] == [t["merged"] for t in merged["merge"]["tasks"]]


def test_task_arithmetic_and_ties_arithmetic():
    t0 = {"w": torch.zeros(3), "n": torch.tensor([7])}
    t1 = {"w": torch.tensor([3.0, -1.0, 0.1]), "n": torch.tensor([7])}
    t2 = {"w": torch.tensor([1.0, 2.0, -0.2]), "n": torch.tensor([7])}
    assert torch.allclose(task_arithmetic(t0, [t1, t2], 0.5)["w"], torch.tensor([2.0, 0.5, -0.05]))
    # keep 2 of 3 entries per task vector; signs elected from the trimmed sum; agreeing entries averaged
    assert torch.equal(ties_vector(t0, [t1, t2], 2 / 3)["w"], torch.tensor([2.0, 2.0, 0.0], dtype=torch.float64))


def _fake_run(src, dst, *, backbone=None, weights=None):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints"))
    if backbone:
        r = json.loads((dst / "results.json").read_text())
        r["spec"]["backbone"] = backbone
        (dst / "results.json").write_text(json.dumps(r))
    if weights is not None:
        save_file(weights, str(dst / "final/model.safetensors"))
    return dst


@pytest.mark.parametrize("case", ["backbone", "weights"])
def test_runs_that_do_not_fit_are_refused_naming_the_run(finished_runs, tmp_path, capsys, case):
    quadrant, count, _ = finished_runs
    if case == "backbone":
        bad = _fake_run(count, tmp_path / "other-backbone", backbone="tiny-rn-random")
        wanted = "backbone 'tiny-rn-random' differs from 'concept-clip-tiny'"
    else:
        bad = _fake_run(count, tmp_path / "other-weights", weights={"visual.proj": torch.zeros(2, 2)})
        wanted = "its weights do not fit backbone 'concept-clip-tiny'"
    assert main(["merge", str(quadrant), str(bad), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"run {bad}" in err and wanted in err, err
    assert not (tmp_path / "m" / "results.json").exists()


def test_a_run_that_exported_its_lora_adapter_only_is_merged_and_carded_with_it_folded_in(finished_runs, tmp_path):
    from ldifs_engine.adapters import FORMAT
    from ldifs_engine.card import WEIGHTS_NAME, write_card

    quadrant, _count, cache = finished_runs
    run = shutil.copytree(quadrant, tmp_path / "lora-run", ignore=shutil.ignore_patterns("checkpoints"))
    (run / "final/model.safetensors").unlink()
    theta0 = load_backbone("concept-clip-tiny").state_dict()
    w = theta0["visual.proj"]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, w.shape[1], generator=g), torch.randn(w.shape[0], 2, generator=g)
    save_file({"visual.proj.lora_A": a, "visual.proj.lora_B": b}, str(run / "final/adapter.safetensors"),
              metadata={"format": FORMAT, "scaling": "0.5"})
    run_merge(MergeSpec.from_dict({"runs": [str(run)], "lambdas": [1.0]}), tmp_path / "m", cache=cache)
    merged = load_file(tmp_path / "m/final/model.safetensors")
    assert torch.allclose(merged["visual.proj"], w + 0.5 * b @ a)
    assert all(torch.equal(merged[k], v) for k, v in theta0.items() if k != "visual.proj")
    write_card(run, tmp_path / "card")
    carded = load_file(tmp_path / "card" / WEIGHTS_NAME)
    assert torch.allclose(carded["visual.proj"], w + 0.5 * b @ a) and (tmp_path / "card/adapter.safetensors").is_file()


def test_a_merge_job_document_runs_as_the_worker_runs_it(finished_runs, tmp_path, monkeypatch):
    """What the worker runs for New run → Merge runs: ``run --spec spec.json`` on the service layer's job
    document, the runs named relative to the job's own folder; results, events and the λ sweep as the
    Report reads them."""
    quadrant, count, cache = finished_runs
    monkeypatch.setenv("LDIFS_CACHE_DIR", str(cache.directory))  # the runs' cache: "before" is a hit, as on a worker
    runs = tmp_path / "runs"
    for d in (quadrant, count):
        shutil.copytree(d, runs / d.name, ignore=shutil.ignore_patterns("checkpoints"))
    job = runs / "job"
    job.mkdir()
    (job / "spec.json").write_text(json.dumps({"merge": {
        "runs": ["../quadrant", "../count"], "labels": ["CE on quadrant", "CE on count"],
        "method": "task_arithmetic", "lambdas": [0.0, 1.0]}}))
    assert main(["run", "--spec", str(job / "spec.json"), "--workdir", str(job)]) == 0
    r = json.loads((job / "results.json").read_text())
    assert not results_problems(r) and r["method"] == "merge" and r["training"] is None
    assert [t["run"] for t in r["merge"]["tasks"]] == ["CE on quadrant", "CE on count"]  # labels, never folders
    assert str(runs) not in json.dumps(r)
    assert [p["lambda"] for p in r["merge"]["per_lambda"]] == [0.0, 1.0] and r["merge"]["chosen_lambda"] in (0.0, 1.0)
    events = [json.loads(line) for line in (job / "events.jsonl").read_text().splitlines()]
    assert any(e["type"] == "phase" and e.get("phase") == "merge" for e in events) and events[-1]["type"] == "done"
    assert (job / "final/model.safetensors").is_file()
