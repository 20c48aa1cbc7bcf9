"""Engine test fixtures shared by several modules."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def finished_runs(tmp_path_factory):
    """Two finished 3-step CE runs of the built-in model (quadrant; count), on 64 test images, sharing one
    engine cache (``cache``) so later evaluations of the pre-trained model are cache hits.
    Returns ``(quadrant_dir, count_dir, cache)``."""
    from ldifs_engine.cache import DiskStore
    from ldifs_engine.launch import run
    from ldifs_engine.spec import RunSpec

    from .helpers import tiny_spec

    root = tmp_path_factory.mktemp("finished-runs")
    cache = DiskStore(root / "cache")
    dirs = []
    for target, controls in (("quadrant", ["colour"]), ("count", ["colour", "quadrant"])):
        spec = RunSpec.from_dict(tiny_spec(**{
            "backbone": "concept-clip-tiny", "method": {"name": "ce", "head_init": "lp", "params": {}},
            "data.target": target, "data.controls": controls, "optim.steps": 3, "optim.lr": 1e-3,
            "eval.linear_probe": False, "eval.curve_points": 0}))
        run(spec, root / target, cache=cache)
        dirs.append(root / target)
    return dirs[0], dirs[1], cache
