"""``ldifs demo``: fine-tune the built-in model on an uncaptioned concept with each method and print
what each gained and forgot. Everything is offline and runs on a laptop CPU."""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path

from .errors import SpecError
from .presets import CONCEPT_CONTROLS, DEMO_METHODS, QUICK
from .spec import RunSpec


def demo_spec(method: str, *, target: str | None = None, seed: int = 0, steps: int | None = None) -> RunSpec:
    """The demo's spec for one method (the Quick demo recipe with that method)."""
    if method not in DEMO_METHODS:
        raise SpecError(f"--methods: unknown method {method!r}; choose from: {', '.join(DEMO_METHODS)}")
    d = copy.deepcopy(QUICK)
    d["name"] = f"demo: {method}"
    d["method"] = copy.deepcopy(DEMO_METHODS[method])
    d["seed"] = seed
    if target:
        d["data"]["target"] = target
        d["data"]["controls"] = [k for k in ["quadrant", *CONCEPT_CONTROLS] if k != target]
    if steps is not None:
        d["optim"]["steps"] = steps
        d["optim"]["checkpoint_every"] = max(1, min(50, steps))
    return RunSpec.from_dict(d)


def run_demo(*, target: str | None = None, seed: int = 0, methods: str = "ce,l2sp,ldifs",
             out: str | Path = "runs/demo", steps: int | None = None,
             should_stop: Callable[[], bool] | None = None) -> int:
    """Run each method, write ``out/<method>/results.json`` and print the before/after table."""
    from .launch import run
    from .tables import summary_table

    names = [m.strip() for m in methods.split(",") if m.strip()]
    specs = {m: demo_spec(m, target=target, seed=seed, steps=steps) for m in names}  # validate all first
    out = Path(out)
    results = {}
    t0 = time.perf_counter()
    for m, spec in specs.items():
        t = time.perf_counter()
        print(f"[{m}] fine-tuning {spec.backbone} on {spec.data.target} ({spec.optim.steps} steps) …", flush=True)
        results[m] = run(spec, out / m, resume=False, should_stop=should_stop)
        r = results[m]
        print(f"[{m}] done in {time.perf_counter() - t:.0f} s: target {100 * r['target_head_acc']['after']:.1f}%, "
              f"mean ΔZS on controls {100 * r['summary']['mean_delta_zs_controls']:+.1f} points", flush=True)
    print()
    print(f"Fine-tuning concept-clip-tiny on '{next(iter(specs.values())).data.target}' "
          f"(zero-shot accuracy on the other concepts, before → after; seed {seed}):")
    print(summary_table(results))
    print(f"\nTotal {time.perf_counter() - t0:.0f} s. Results: {out}/<method>/results.json")
    return 0
