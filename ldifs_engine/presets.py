"""Ready-made run specs (plain dicts, no torch): the app's presets and the demo's recipe.

The concept-world recipe (learning rate, steps, LDIFS strength) was chosen with a small sweep on
the built-in model; see README "What you will see".
"""
from __future__ import annotations

import copy
from typing import Any

CONCEPT_CONTROLS = ["shape", "colour", "pattern", "size"]  # the captioned concepts: what the model knows

QUICK: dict[str, Any] = {
    "name": "Quick demo: LDIFS on quadrant",
    "backbone": "concept-clip-tiny",
    "seed": 0,
    "data": {"target": "quadrant", "controls": CONCEPT_CONTROLS},
    # LP-FT (the authors' code's default init) and the paper's five taps; only alpha is tuned (50, not 10).
    "method": {"name": "ldifs", "head_init": "lp", "params": {"alpha": 50.0}},
    "optim": {"steps": 200, "batch_size": 64, "lr": 1e-3, "weight_decay": 0.1, "warmup_steps": 20,
              "grad_clip": 1.0, "checkpoint_every": 50},
    "eval": {"zero_shot": True, "linear_probe": True, "ece": True, "curve_points": 4, "lp_max_train": 1000},
}


def variant(base: dict, name: str, method: dict) -> dict:
    """A copy of ``base`` with another method and title."""
    d = copy.deepcopy(base)
    d["name"], d["method"] = name, method
    return d


CE_BASELINE = variant(QUICK, "CE baseline on quadrant", {"name": "ce", "head_init": "lp", "params": {}})
LDIFS_PAPER = variant(QUICK, "LDIFS (paper default, alpha 10) on quadrant",
                      {"name": "ldifs", "head_init": "lp", "params": {"alpha": 10.0}})
L2SP_TUNED = variant(QUICK, "L2-SP on quadrant", {"name": "l2sp", "head_init": "lp", "params": {"strength": 0.01}})

CONTINUAL = {**copy.deepcopy(QUICK), "name": "Continual: LDIFS on quadrant, then count",
             "data": {"target": "quadrant", "sequence": ["count"], "controls": CONCEPT_CONTROLS},
             "method": {"name": "ldifs", "head_init": "lp", "params": {"alpha": 50.0, "reference": "previous"}}}
CONTINUAL["eval"]["curve_points"] = 2

PRESETS: dict[str, list[dict]] = {
    "Quick demo": [QUICK],
    "CE baseline": [CE_BASELINE],
    "LDIFS (paper default, alpha 10)": [LDIFS_PAPER],
    "Compare CE vs LDIFS": [CE_BASELINE, variant(QUICK, "LDIFS on quadrant", QUICK["method"])],
    "Continual: quadrant, then count": [CONTINUAL],
}

DEMO_METHODS: dict[str, dict] = {
    "ce": CE_BASELINE["method"],
    "l2sp": L2SP_TUNED["method"],
    "ldifs": QUICK["method"],
    "ldifs-paper": LDIFS_PAPER["method"],
    "ldifs-final": {"name": "ldifs", "head_init": "lp", "params": {"alpha": 50.0, "final_embedding": True}},
    "ls": {"name": "ls", "head_init": "lp", "params": {"epsilon": 0.1}},
    "flyp": {"name": "flyp", "head_init": "zs", "params": {}},  # FLYP trains against class captions: no probe head
    # LoRA at its defaults (rank 16, alpha 64: scaling 4, attention + MLP), alone and with the demo's LDIFS strength
    "lora": {"name": "lora", "head_init": "lp", "params": {}},
    "lora-ldifs": {"name": "lora", "head_init": "lp", "params": {"ldifs_alpha": 50.0}},
}
