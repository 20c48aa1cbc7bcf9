"""Small builders shared by the engine tests (random data, tiny models)."""
from __future__ import annotations

import torch

from ldifs_engine.data.catalog import TensorImageSet


def random_images(n: int, size: int = 48, classes: int = 4, seed: int = 0) -> TensorImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=g)
    return TensorImageSet(images, labels, [f"class {i}" for i in range(classes)])


def tiny_spec(**over) -> dict:
    """A spec dict for the random-init tiny ViT on concept data, small enough for a test."""
    d = {
        "name": "test",
        "backbone": "tiny-vit-random",
        "seed": 0,
        "data": {"target": "quadrant", "controls": ["colour"], "max_eval_samples": 64, "max_train_samples": 128},
        "method": {"name": "ldifs", "params": {"alpha": 10.0}},
        "optim": {"steps": 6, "batch_size": 16, "lr": 1e-4, "warmup_steps": 2, "checkpoint_every": 3},
        "eval": {"curve_points": 2, "lp_max_train": 64},
    }
    for k, v in over.items():
        node = d
        *parents, leaf = k.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = v
    return d
