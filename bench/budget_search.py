"""README "Forgetting budget" figures: the budget search on the concept world vs a full grid.

The Quick-demo spec (LDIFS on quadrant, built-in model, seed 0) with a ``budget:`` block, searched for
each budget (``ldifs budget``'s loop, in this process, one trial after the other); then the full grid at
the search's final resolution (every alpha the bisection could reach, plus plain fine-tuning; no early
stop), run as plain specs in ``--workers`` processes, and the grid's own best setting within each budget.
Prints measured figures and writes them to ``OUT/figures.json``.

    python bench/budget_search.py --out /tmp/budget-bench                 # budgets 2 and 5 (~1 h on 2 busy cores)
    python bench/budget_search.py --out /tmp/b --budgets 5 --no-grid       # one search only
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def base_spec(budget: float) -> dict:
    from ldifs_engine.presets import QUICK

    d = copy.deepcopy(QUICK)
    d["budget"] = {"max_forgetting_points": budget}
    return d


def grid_values(spec) -> list[float]:
    """Every value of the search's final resolution over its range (and 0 when it tries plain fine-tuning)."""
    from ldifs_engine.budget import grid, nice

    coarse = grid(spec)
    pos = [v for v in coarse if v]
    n = (len(pos) - 1) * 2 ** spec.budget.refine_steps
    return ([0.0] if 0.0 in coarse else []) + [nice(pos[0] * (pos[-1] / pos[0]) ** (i / n)) for i in range(n + 1)]


def one_grid_run(job: tuple[dict, str]) -> tuple[str, dict]:
    import torch

    torch.set_num_threads(1)
    from ldifs_engine.launch import run
    from ldifs_engine.spec import RunSpec

    d, folder = job
    return folder, run(RunSpec.from_dict(d), folder, resume=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", default="2,5")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-grid", action="store_true")
    args = ap.parse_args()
    from ldifs_engine.budget import budget_document, trial_spec
    from ldifs_engine.budget_run import run_budget
    from ldifs_engine.spec import RunSpec

    out = Path(args.out)
    figures: dict = {"load_1min_at_start": os.getloadavg()[0], "cpus": os.cpu_count(), "searches": {}}
    budgets = [float(b) for b in args.budgets.split(",")]
    for b in budgets:
        spec = RunSpec.from_dict(base_spec(b))
        t = time.perf_counter()
        doc = run_budget(spec, out / f"search-{b:g}")
        figures["searches"][f"{b:g}"] = {
            "sentence": doc["sentence"], "recommended": doc["recommended"], "n_finetunes": doc["n_finetunes"],
            "n_early_stopped": doc["n_early_stopped"], "wall_s": round(time.perf_counter() - t, 1),
            "full_grid_finetunes": doc["full_grid_finetunes"], "load_1min_after": os.getloadavg()[0]}
        print(json.dumps(figures["searches"][f"{b:g}"], indent=1), flush=True)
    if not args.no_grid:
        spec = RunSpec.from_dict(base_spec(budgets[0]))
        plain = spec.replace(budget=None)
        jobs = []
        for i, v in enumerate(grid_values(spec)):
            d = trial_spec(spec, v).replace(budget=None).to_dict()  # the same trial without early stop
            jobs.append((d, str(out / "grid" / f"run_{i:02d}")))
        t = time.perf_counter()
        with ProcessPoolExecutor(args.workers) as pool:
            done = list(pool.map(one_grid_run, jobs))
        wall = round(time.perf_counter() - t, 1)
        figures["grid"] = {"n_finetunes": len(jobs), "workers": args.workers, "wall_s": wall,
                           "sum_run_s": round(sum(r["timing"]["total_s"] for _, r in done), 1)}
        for b in budgets:  # what the full grid would recommend for the same budget
            judged = RunSpec.from_dict({**plain.to_dict(), "budget": {"max_forgetting_points": b}})
            doc = budget_document(judged, [(Path(f).name, r) for f, r in done], complete=True)
            figures["grid"][f"{b:g}"] = {"sentence": doc["sentence"], "recommended": doc["recommended"]}
        print(json.dumps(figures["grid"], indent=1), flush=True)
    for b, s in figures["searches"].items():
        s["sum_run_s"] = round(sum(json.loads(p.read_text())["timing"]["total_s"]
                                   for p in (out / f"search-{b}").glob("trial_*/results.json")), 1)
    figures["load_1min_at_end"] = os.getloadavg()[0]
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    print(json.dumps({k: v for k, v in figures.items() if k not in ("searches", "grid")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
