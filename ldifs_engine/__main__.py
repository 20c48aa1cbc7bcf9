"""Engine commands: ``python -m ldifs_engine run|train|budget|eval|backbones|methods|datasets|demo|pretrain-demo``.

``run`` is what the job worker's child process executes; the others are also reachable through the
``ldifs`` console script. Errors print one readable line and exit non-zero (``cli.py``; codes in docs/CONTRACTS.md).
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

from .cli import dispatch
from .presets import DEMO_METHODS


def _load_spec(path: str):
    from .errors import SpecError
    from .spec import RunSpec

    p = Path(path)
    if not p.is_file():
        raise SpecError(f"spec: file {path!r} not found")
    from .specio import MAX_SPEC_BYTES, parse_spec_text

    if p.stat().st_size > MAX_SPEC_BYTES:
        raise SpecError(f"spec: file {path!r:.80} is larger than {MAX_SPEC_BYTES // 1024} KiB")
    return RunSpec.from_dict(parse_spec_text(p.read_bytes(), source=f"spec {p.name[:60]!r}",
                                             fmt="json" if p.suffix.lower() == ".json" else None))


def cmd_run(args: argparse.Namespace) -> int:
    from .share_cli import job_document, run_job_document

    job = job_document(args.spec)  # a merge or push job's spec.json (written by the service layer)
    if job is not None:
        from .stopping import StopFlag

        with StopFlag(Path(args.workdir)).installed() as stop:
            run_job_document(*job, args.workdir, data_root=args.data_root, should_stop=stop)
        return 0
    spec = _load_spec(args.spec)  # first: a hostile spec is refused before torch is even imported
    from .launch import run
    from .stopping import StopFlag
    from .tables import continual_table, summary_table

    # the process's entry point owns SIGINT: first = checkpoint and stop, second = abort
    with StopFlag(Path(args.workdir)).installed() as stop:
        results = run(spec, args.workdir, resume=args.resume, data_root=args.data_root, download=args.download,
                      should_stop=stop)
    if getattr(args, "print_summary", False):
        print(summary_table({spec.method.name: results}))
        if results.get("continual"):
            print()
            print(continual_table(results))
        print(f"results: {Path(args.workdir) / 'results.json'}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    args.workdir = args.out
    args.print_summary = True
    spec = _load_spec(args.spec)
    if spec.budget is not None:  # a forgetting budget is a search: the same as `ldifs budget`
        return cmd_budget(args)
    if spec.seeds:
        return train_repeats(args)
    return cmd_run(args)


def cmd_budget(args: argparse.Namespace) -> int:
    """A forgetting-budget search: trials in OUT/trial_NN/, the answer in OUT/budget.json."""
    from .errors import SpecError

    spec = _load_spec(args.spec)
    if spec.budget is None:
        raise SpecError("budget: this spec has no budget block; add e.g. `budget: {max_forgetting_points: 2}`")
    from .budget_run import run_budget
    from .stopping import StopFlag

    with StopFlag(Path(args.out)).installed() as stop:  # SIGINT / OUT/STOP: the running trial checkpoints
        doc = run_budget(spec, args.out, data_root=args.data_root, download=args.download, should_stop=stop)
    print(doc["sentence"])
    print(f"{doc['n_finetunes']} fine-tunes ({doc['n_early_stopped']} stopped early) in {doc['wall_s']:.0f} s; a full "
          f"grid at the same resolution: {doc['full_grid_finetunes']}. Every candidate: {Path(args.out) / 'budget.json'}")
    return 0


def train_repeats(args: argparse.Namespace) -> int:
    """A spec with ``seeds``: each seed into ``OUT/seed-N/``, then their mean ± sd (``OUT/aggregate.json``)."""
    spec = _load_spec(args.spec)
    from .files import atomic_write_json
    from .launch import run
    from .stats import aggregate_runs
    from .stopping import StopFlag
    from .tables import repeats_line, summary_table

    out = Path(args.out)
    results = {}
    for s in spec.expand_seeds():
        print(f"[seed {s.seed}] fine-tuning into {out / f'seed-{s.seed}'} …", flush=True)
        with StopFlag(out / f"seed-{s.seed}").installed() as stop:
            results[f"seed {s.seed}"] = run(s, out / f"seed-{s.seed}", resume=args.resume, data_root=args.data_root,
                                           download=args.download, should_stop=stop)
    agg = aggregate_runs(list(results.values()))
    atomic_write_json(out / "aggregate.json", agg)
    print(summary_table(results))
    print()
    print(repeats_line(agg))
    print(f"results: {out}/seed-N/results.json; mean ± sd: {out / 'aggregate.json'}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .backbones import get_tokenizer, load_backbone, load_safetensors_into, preprocess_cfg
    from .data import DataContext, resolve_dataset
    from .evaluate import EvalSet, Preprocessor, evaluate_model, subset_indices
    from .runner import default_data_root, pick_device
    from .tables import fmt_metric

    device = pick_device()
    model = load_backbone(args.backbone, device=device)
    if args.checkpoint:
        load_safetensors_into(model, Path(args.checkpoint))
    tok = get_tokenizer(args.backbone)
    pre = Preprocessor(preprocess_cfg(model))
    ctx = DataContext(Path(args.data_root) if args.data_root else default_data_root(), download=args.download)
    rows = {}
    for key in [k.strip() for k in args.datasets.split(",") if k.strip()]:
        info = resolve_dataset(key, ctx)
        test = info.load("test", ctx)
        train = info.load("train", ctx) if not args.no_lp else None
        es = EvalSet(key, info, test, subset_indices(len(test), args.max_samples, 11),
                     train, subset_indices(len(train), args.max_samples, 13) if train is not None else None)
        m, _ = evaluate_model(model, es, pre, tokenizer=tok, device=device, zero_shot=True,
                              linear_probe=not args.no_lp, ece=True, seed=0)
        rows[key] = m
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'dataset':<14}{'ZS acc':>8}{'ZS ECE':>8}{'LP acc':>8}{'LP ECE':>8}")
        for k, m in rows.items():
            print(f"{k:<14}" + "".join(f"{fmt_metric(m.get(c)):>8}" for c in ("zs_acc", "zs_ece", "lp_acc", "lp_ece")))
    return 0


def cmd_backbones(args: argparse.Namespace) -> int:
    from .backbones import BACKBONES, OPERATOR_PROBLEMS, check_operator_shapes

    problems = OPERATOR_PROBLEMS + check_operator_shapes()
    for line in problems:  # the operator's file: one line per problem, entries with problems left out
        print(f"warning: {line}", file=sys.stderr)
    rows = [b.meta() for _, b in BACKBONES.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for b in rows:
        where = ("operator" if b.get("operator") else "needs download" if b["needs_download"]
                 else "random init" if b["random_init"] else "built-in")
        print(f"{b['key']:<34}{where:<16}{b['title']}")
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS

    rows = [m.meta() for _, m in METHODS.items()]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for m in rows:
        params = ", ".join(f"{p['name']}={p['default']}" for p in m["params"]) or "—"
        print(f"{m['name']:<8}{m['title']:<36}params: {params}")
        print(textwrap.fill(m["description"], width=110, initial_indent=" " * 8, subsequent_indent=" " * 8))
    print("post-hoc: WiSE-FT weight interpolation — set eval.wise_ft_alphas, e.g. [0, 0.1, ..., 1]")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from .data import DATASETS

    rows = [d.meta() for _, d in DATASETS.items()]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for d in rows:
        print(f"{d['key']:<16}{d['num_classes']:>5} classes  {d['source']:<12}{d['title']}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .stopping import StopFlag

    with StopFlag(None).installed() as stop:  # SIGINT stops the method running (checkpointed), a second aborts
        return run_demo(target=args.target, seed=args.seed, methods=args.methods, out=args.out, steps=args.steps,
                        should_stop=stop)


def cmd_pretrain_demo(args: argparse.Namespace) -> int:
    from .pretrain import pretrain_demo

    kw = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
    pretrain_demo(Path(args.out), **kw)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the engine commands to an argparse sub-parser set (used by ``ldifs``)."""
    p = sub.add_parser("run", help="run a spec in a run directory (what the worker's child executes)")
    p.add_argument("--spec", required=True)
    p.add_argument("--workdir", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true", help="let torchvision datasets download when online")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="fine-tune from a spec file (YAML/JSON) and write results into --out")
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("budget", help="find the setting that learns the most within a forgetting budget "
                       "(the spec's budget block); trials in OUT/trial_NN/, the answer in OUT/budget.json")
    p.add_argument("spec")
    p.add_argument("--out", required=True)
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.set_defaults(func=cmd_budget)

    p = sub.add_parser("eval", help="zero-shot / linear-probe accuracy of a backbone or a checkpoint")
    p.add_argument("--backbone", default="concept-clip-tiny")
    p.add_argument("--checkpoint", default=None, help="a run's final/model.safetensors (safetensors only)")
    p.add_argument("--datasets", default="shape,colour,pattern,size,quadrant")
    p.add_argument("--max-samples", type=int, default=None)
    p.add_argument("--no-lp", action="store_true")
    p.add_argument("--json", action="store_true")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.set_defaults(func=cmd_eval)

    for name, fn, hlp in (("backbones", cmd_backbones, "list allowed backbones"),
                          ("methods", cmd_methods, "list fine-tuning methods and their parameters"),
                          ("datasets", cmd_datasets, "list the dataset catalog")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=fn)

    p = sub.add_parser("demo", help="headless end-to-end demo on the built-in model: CE vs L2-SP vs LDIFS")
    p.add_argument("--target", default=None, help="concept dataset to fine-tune on (default: quadrant; count is the other one the model never saw named)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--methods", default="ce,l2sp,ldifs",
                   help=f"comma-separated, from: {', '.join(DEMO_METHODS)} (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps per method (default: the recipe's 200)")
    p.add_argument("--out", default="runs/demo", help="results go to OUT/<method>/results.json")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("pretrain-demo", help="re-create the built-in concept-clip-tiny from scratch")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.set_defaults(func=cmd_pretrain_demo)

    from .share_cli import register as register_share

    register_share(sub)  # merge, card, push


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ldifs_engine", description=__doc__.splitlines()[0])
    register(parser.add_subparsers(dest="command", required=True))
    return dispatch(parser.parse_args(argv))  # the one error policy of every ldifs command (cli.py)


if __name__ == "__main__":
    sys.exit(main())
