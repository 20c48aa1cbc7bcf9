"""The sweep behind the demo recipe (README "What you will see"): each configuration is the Quick-demo
spec with a few fields changed, run on the built-in model for each seed; prints target accuracy and
mean zero-shot change on the four concepts. The report's linear probe, calibration and curves are
turned off (they do not change these two numbers), so one fine-tune takes ~60–100 s on a CPU core.

    python bench/demo_sweep.py                       # every configuration, seeds 0 1 2 (~1 h on 2 cores)
    python bench/demo_sweep.py --only ce,ldifs-a50 --seeds 1 --workers 2
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LP = {"method.head_init": "lp", "optim.lr": 1e-3}  # the demo's recipe
ZS = {"method.head_init": "zs", "optim.lr": 3e-4}  # the earlier recipe: head from class prompts


def _ldifs(alpha: float, final: bool = False) -> dict:
    return {"method.name": "ldifs", "method.params": {"alpha": alpha, "final_embedding": final}}


CONFIGS: dict[str, dict] = {
    "ce": {**LP, "method.name": "ce", "method.params": {}},
    "l2sp-0.01": {**LP, "method.name": "l2sp", "method.params": {"strength": 0.01}},
    "l2sp-0.1": {**LP, "method.name": "l2sp", "method.params": {"strength": 0.1}},
    "ldifs-a10": {**LP, **_ldifs(10.0)},
    "ldifs-a50": {**LP, **_ldifs(50.0)},
    "ldifs-a10-final": {**LP, **_ldifs(10.0, True)},
    "ldifs-a50-final": {**LP, **_ldifs(50.0, True)},
    # LoRA (README "LoRA on the concept world"): rank / scaling, alone and with the LDIFS term
    "lora-r8-a16": {**LP, "method.name": "lora", "method.params": {"rank": 8, "lora_alpha": 16.0}},
    "lora-r8-a64": {**LP, "method.name": "lora", "method.params": {"rank": 8, "lora_alpha": 64.0}},
    "lora-r16-a64": {**LP, "method.name": "lora", "method.params": {"rank": 16, "lora_alpha": 64.0}},
    "zs-ce": {**ZS, "method.name": "ce", "method.params": {}},
    "zs-ldifs-a20-final": {**ZS, **_ldifs(20.0, True)},
    "zs-lr1e-3-ce": {**ZS, "optim.lr": 1e-3, "method.name": "ce", "method.params": {}},
    "zs-lr1e-3-ldifs-a50-final": {**ZS, "optim.lr": 1e-3, **_ldifs(50.0, True)},
    "zs-lr1e-3-ldifs-a100-final": {**ZS, "optim.lr": 1e-3, **_ldifs(100.0, True)},
}


def one(job: tuple[str, int, str]) -> dict:
    name, seed, out = job
    import torch

    torch.set_num_threads(1)
    from ldifs_engine.presets import QUICK
    from ldifs_engine.launch import run
    from ldifs_engine.spec import RunSpec

    d = copy.deepcopy(QUICK)
    d["seed"] = seed
    d["eval"].update({"curve_points": 0, "linear_probe": False, "ece": False})
    spec = RunSpec.from_dict(d).replace(**CONFIGS[name])
    t = time.perf_counter()
    r = run(spec, Path(out) / f"{name}-s{seed}")
    return {"config": name, "seed": seed, "target_acc": round(r["target_head_acc"]["after"], 4),
            "mean_delta_zs": round(r["summary"]["mean_delta_zs_controls"], 4),
            "seconds": round(time.perf_counter() - t)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(CONFIGS), help=f"comma-separated, from: {', '.join(CONFIGS)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--workers", type=int, default=2, help="parallel fine-tunes, one CPU thread each")
    ap.add_argument("--out", default=None, help="run directories (default: a temporary folder)")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        ap.error(f"--only: unknown {', '.join(unknown)}; choose from: {', '.join(CONFIGS)}")
    os.environ["OMP_NUM_THREADS"] = "1"
    out = args.out or tempfile.mkdtemp(prefix="ldifs-sweep-")
    jobs = [(n, s, out) for s in args.seeds for n in names]
    with ProcessPoolExecutor(args.workers) as ex:
        for row in ex.map(one, jobs):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
