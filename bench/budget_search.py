"""README "Forgetting budget" figures: the budget search on the concept world vs a full grid.

The Quick-demo spec (LDIFS on quadrant, built-in model, seed 0) with a ``budget:`` block, searched for
each budget (``ldifs budget``'s loop, in this process, one trial after the other); then the full grid at
the search's final resolution (every alpha the bisection could reach, plus plain fine-tuning; no early
stop), run as plain specs in ``--workers`` processes, and the grid's own best setting within each budget.
Prints measured figures and writes them to ``OUT/figures.json``.

    python bench/budget_search.py --out /tmp/budget-bench                 # budgets 2 and 5, then the grid
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


SHORT: dict = {}  # --steps / --eval-images: a shorter recipe for a busy machine (set in main)


def base_spec(budget: float) -> dict:
    """The Quick demo (LDIFS on quadrant, 200 steps) with a budget; the report's linear probe and calibration
    are off: neither enters the budget (zero-shot forgetting, the trained head's accuracy)."""
    from ldifs_engine.presets import QUICK

    d = copy.deepcopy(QUICK)
    d["eval"].update({"linear_probe": False, "ece": False})
    d["budget"] = {"max_forgetting_points": budget}
    if SHORT.get("steps"):
        d["optim"].update(steps=SHORT["steps"], warmup_steps=max(1, SHORT["steps"] // 10))
    if SHORT.get("eval_images"):
        d["data"]["max_eval_samples"] = SHORT["eval_images"]
    return d


def one_search(job: tuple[float, str, dict]) -> dict:
    import torch

    torch.set_num_threads(1)
    from ldifs_engine.budget_run import run_budget
    from ldifs_engine.spec import RunSpec

    b, out, short = job
    SHORT.update(short)  # a worker process does not run main()
    t = time.perf_counter()
    doc = run_budget(RunSpec.from_dict(base_spec(b)), out, say=lambda line: print(f"[budget {b:g}] {line}", flush=True))
    return {"sentence": doc["sentence"], "recommended": doc["recommended"], "n_finetunes": doc["n_finetunes"],
            "n_early_stopped": doc["n_early_stopped"], "wall_s": round(time.perf_counter() - t, 1),
            "full_grid_finetunes": doc["full_grid_finetunes"], "load_1min_after": os.getloadavg()[0]}


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


def run_grid(out: Path, budgets: list[float], workers: int) -> dict:
    """Every value of the final resolution, run to the end (no early stop). A search trial that ran to the end
    is the same computation (its budget block only decides early stops), so it is reused, not run again."""
    from ldifs_engine.budget import budget_document, trial_spec
    from ldifs_engine.spec import RunSpec

    spec = RunSpec.from_dict(base_spec(budgets[0]))
    reused: dict[float, tuple[str, dict]] = {}
    for b in budgets:
        for p in sorted((out / f"search-{b:g}").glob("trial_*/results.json")):
            r = json.loads(p.read_text())
            if not r["training"].get("stopped_early"):
                reused[r["spec"]["method"]["params"]["alpha"]] = (str(p.parent), r)
    values = grid_values(spec)
    jobs = [(trial_spec(spec, v).replace(budget=None).to_dict(), str(out / "grid" / f"run_{i:02d}"))
            for i, v in enumerate(values) if v not in reused]
    t = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        done = list(pool.map(one_grid_run, jobs)) + [reused[v] for v in values if v in reused]
    fig = {"n_finetunes": len(values), "ran": len(jobs), "reused_from_searches": len(values) - len(jobs),
           "workers": workers, "wall_s_of_ran": round(time.perf_counter() - t, 1),
           "sum_run_s": round(sum(r["timing"]["total_s"] for _, r in done), 1)}
    plain = spec.replace(budget=None)
    for b in budgets:  # what the full grid recommends for the same budget
        judged = RunSpec.from_dict({**plain.to_dict(), "budget": {"max_forgetting_points": b}})
        doc = budget_document(judged, [(Path(f).name, r) for f, r in done], complete=True)
        fig[f"{b:g}"] = {"sentence": doc["sentence"], "recommended": doc["recommended"]}
    return fig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", default="2,5")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--no-grid", action="store_true")
    ap.add_argument("--steps", type=int, default=None, help="a shorter recipe (default: the demo's 200 steps)")
    ap.add_argument("--eval-images", type=int, default=None, help="cap on test images per dataset")
    args = ap.parse_args()
    SHORT.update(steps=args.steps, eval_images=args.eval_images)
    out = Path(args.out)
    figures: dict = {"load_1min_at_start": os.getloadavg()[0], "cpus": os.cpu_count(), "searches": {},
                     "recipe": base_spec(0)["optim"] | {"max_eval_samples": base_spec(0)["data"].get("max_eval_samples")}}
    budgets = [float(b) for b in args.budgets.split(",")]
    t = time.perf_counter()
    with ProcessPoolExecutor(min(args.workers, len(budgets))) as pool:  # one search per process, 1 thread each
        docs = list(pool.map(one_search, [(b, str(out / f"search-{b:g}"), dict(SHORT)) for b in budgets]))
    figures["searches_wall_s"] = round(time.perf_counter() - t, 1)
    for b, doc in zip(budgets, docs):
        figures["searches"][f"{b:g}"] = doc
        print(json.dumps(doc, indent=1), flush=True)
    (out / "figures.json").write_text(json.dumps(figures, indent=1))
    if not args.no_grid:
        figures["grid"] = run_grid(out, budgets, args.workers)
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
