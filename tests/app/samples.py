"""Hand-built results.json dicts (schema ldifs.results/1) for the app's pure-function tests."""
from __future__ import annotations

import copy
from typing import Any

HOSTILE = "<img src=x onerror=alert(1)>"


def results(target: str = "quadrant", method: str = "ldifs", **over: Any) -> dict[str, Any]:
    """A complete, plausible result: target 31 % → 97 %, 5 controls, worst colour −11.0."""
    d: dict[str, Any] = {
        "schema": "ldifs.results/1",
        "spec": {"backbone": "concept-clip-tiny", "name": "demo run", "seed": 0,
                 "data": {"target": target, "controls": ["colour", "shape", "texture", "size", "count"]},
                 "method": {"name": method, "head_init": "zs", "freeze_head": False, "params": {"alpha": 10.0}},
                 "optim": {"lr": 1e-5, "steps": 300, "batch_size": 128}, "eval": {"zero_shot": True}},
        "spec_hash": "ab" * 32,
        "target": target,
        "method": method,
        "datasets": {
            target: {"role": "target", "title": "Quadrant", "num_classes": 4,
                     "before": {"zs_acc": 0.26, "zs_ece": 0.05, "lp_acc": 0.31, "lp_ece": 0.04},
                     "after": {"zs_acc": 0.40, "zs_ece": 0.06, "lp_acc": 0.95, "lp_ece": 0.02}},
            "colour": {"role": "control", "title": "Colour", "num_classes": 6,
                       "before": {"zs_acc": 0.90, "zs_ece": 0.03, "lp_acc": 0.95, "lp_ece": 0.02},
                       "after": {"zs_acc": 0.79, "zs_ece": 0.08, "lp_acc": 0.93, "lp_ece": 0.03}},
            "shape": {"role": "control", "title": "Shape", "num_classes": 5,
                      "before": {"zs_acc": 0.80, "zs_ece": 0.04, "lp_acc": 0.90, "lp_ece": 0.02},
                      "after": {"zs_acc": 0.77, "zs_ece": 0.05, "lp_acc": 0.89, "lp_ece": 0.02}},
            "texture": {"role": "control", "title": "Texture", "num_classes": 4,
                        "before": {"zs_acc": 0.70, "zs_ece": 0.04, "lp_acc": 0.85, "lp_ece": 0.02},
                        "after": {"zs_acc": 0.68, "zs_ece": 0.05, "lp_acc": 0.84, "lp_ece": 0.02}},
            "size": {"role": "control", "title": "Size", "num_classes": 3,
                     "before": {"zs_acc": 0.60, "zs_ece": 0.04, "lp_acc": 0.80, "lp_ece": 0.02},
                     "after": {"zs_acc": 0.58, "zs_ece": 0.05, "lp_acc": 0.80, "lp_ece": 0.02}},
            "count": {"role": "control", "title": "Count", "num_classes": 4,
                      "before": {"zs_acc": 0.50, "zs_ece": 0.04, "lp_acc": 0.70, "lp_ece": 0.02},
                      "after": {"zs_acc": 0.47, "zs_ece": 0.05, "lp_acc": 0.69, "lp_ece": 0.02}},
        },
        "target_head_acc": {"before": 0.31, "after": 0.97},
        "summary": {"mean_delta_zs_controls": -0.042, "mean_delta_lp_controls": -0.01, "target_gain": 0.66,
                    "worst_control": {"dataset": "colour", "delta_zs": -0.11}},
        "curves": {"steps": [0, 100, 200, 300], "target_head_acc": [0.31, 0.7, 0.9, 0.97],
                   "zs_acc": {target: [0.26, 0.3, 0.35, 0.40], "colour": [0.9, 0.85, 0.8, 0.79],
                              "shape": [0.8, 0.79, 0.78, 0.77]}},
        "wise_ft": {"alphas": [0.0, 0.5, 1.0], "target_head_acc": [0.31, 0.9, 0.97],
                    "mean_delta_zs_controls": [0.0, -0.01, -0.042]},
        "training": {"steps": 300, "micro_batch": 128, "accum": 1, "backoffs": [], "final_loss": 0.1},
        "timing": {"total_s": 60.1, "train_s": 40.0, "eval_s": 12.0, "started_at": "2026-11-27T10:00:00Z",
                   "finished_at": "2026-11-27T10:01:00Z"},
        "versions": {"ldifs_studio": "0.1.0"},
        "artifacts": {"checkpoint": "final/model.safetensors", "head": "final/head.safetensors"},
    }
    d.update(over)
    return d


def partial_results() -> dict[str, Any]:
    """Running/partial: 'shape' has no after, 'size' has no LP at all, no curves or WiSE-FT."""
    d = results()
    d["datasets"]["shape"]["after"] = {"zs_acc": None, "lp_acc": None}
    d["datasets"]["size"]["before"].pop("lp_acc")
    d["datasets"]["size"]["after"]["lp_acc"] = None
    d["curves"] = {"steps": [0, 100, 200], "zs_acc": {"colour": [0.9, None, 0.8]}}
    d["wise_ft"] = None
    return d


def hostile_results() -> dict[str, Any]:
    d = copy.deepcopy(results())
    d["datasets"]["colour"]["title"] = HOSTILE
    d["spec"]["name"] = HOSTILE
    return d


def merge_results(selected_on: str = "validation") -> dict[str, Any]:
    """A merge of a quadrant run and a count run (CONTRACTS: ``merge`` block, no training, no curves):
    λ 0 / 0.5 / 1, λ = 0.5 chosen; count's test accuracy is missing at λ = 1 (drawn as a gap)."""
    d = results(method="merge")
    d["datasets"]["count"]["role"] = "sequence"
    d["curves"], d["training"], d["wise_ft"] = {}, None, None
    d["spec"]["method"] = {"name": "merge", "params": {}}
    del d["spec"]["optim"]  # a merge trains nothing
    d["target_head_acc"] = {"before": 0.31, "after": 0.85}
    d["merge"] = {
        "method": "task_arithmetic", "lambdas": [0.0, 0.5, 1.0], "chosen_lambda": 0.5, "selected_on": selected_on,
        "selection": "the mean over tasks of each run's classifier accuracy", "ties_keep": None,
        "tasks": [{"run": "CE on quadrant", "dataset": "quadrant", "title": "Quadrant", "method": "ce",
                   "classifier": "trained head", "before": 0.31, "run_after": 0.99, "run_mean_delta_zs_controls": -0.3,
                   "merged": 0.85, "merged_ci": [0.8, 0.9]},
                  {"run": "CE on count", "dataset": "count", "title": "Count", "method": "ce",
                   "classifier": "trained head", "before": 0.5, "run_after": 0.9, "run_mean_delta_zs_controls": -0.2,
                   "merged": 0.6, "merged_ci": [0.55, 0.65]}],
        "per_lambda": [
            {"lambda": 0.0, "task_acc": [0.31, 0.5], "val_task_acc": [0.3, 0.5],
             "zs_acc": {"colour": 0.9, "shape": 0.8}, "mean_delta_zs_controls": 0.0},
            {"lambda": 0.5, "task_acc": [0.85, 0.6], "val_task_acc": [0.84, 0.61],
             "zs_acc": {"colour": 0.8, "shape": 0.76}, "mean_delta_zs_controls": -0.07},
            {"lambda": 1.0, "task_acc": [0.95, None], "val_task_acc": [0.95, 0.3],
             "zs_acc": {"colour": 0.6, "shape": 0.7}, "mean_delta_zs_controls": -0.2}]}
    return d
