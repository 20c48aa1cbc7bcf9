"""``ldifs merge`` / ``ldifs card`` / ``ldifs push``: merging finished runs and sharing one on the Hub.

Run folders are the operator's own (command line only); the web app merges and pushes jobs by id
through the service layer, which resolves the folders itself.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .merge import DEFAULT_LAMBDAS, DEFAULT_TIES_KEEP, MERGE_METHODS


def cmd_merge(args: argparse.Namespace) -> int:
    from .merge import MergeSpec
    from .merge_run import run_merge
    from .stopping import StopFlag

    spec = MergeSpec.from_dict({"runs": list(args.runs), "method": args.method, "lambdas": args.lambdas,
                                "ties_keep": args.ties_keep, "name": args.name or ""})
    with StopFlag(Path(args.out)).installed() as stop:
        results = run_merge(spec, args.out, data_root=args.data_root, should_stop=stop)
    print(merge_table(results))
    print(f"results: {Path(args.out) / 'results.json'}; merged weights: {Path(args.out) / 'final/model.safetensors'}")
    return 0


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}" if isinstance(v, (int, float)) else "—"


def _pts(v: Any) -> str:
    return f"{100 * v:+.1f}" if isinstance(v, (int, float)) else "—"


def merge_table(results: Mapping[str, Any]) -> str:
    """The runs and their merge side by side: each task's accuracy (its own classifier), zero-shot on
    every control (after), mean ΔZS over the controls; then the λ sweep."""
    m = results["merge"]
    tasks = m["tasks"]
    controls = [k for k, d in results["datasets"].items() if d.get("role") == "control"]
    head = ["", *[f"{t['dataset']} acc" for t in tasks], *controls, "mean ΔZS"]
    rows = [["(before)", *[_pct(t["before"]) for t in tasks],
             *[_pct(results["datasets"][c]["before"].get("zs_acc")) for c in controls], ""]]
    for i, t in enumerate(tasks):
        rows.append([f"run {t['run']}"[:40], *[_pct(t["run_after"]) if j == i else "" for j in range(len(tasks))],
                     *["" for _ in controls], _pts(t.get("run_mean_delta_zs_controls"))])
    s = results.get("summary") or {}
    ci = s.get("mean_delta_zs_controls_ci")
    rows.append([f"merge λ={m['chosen_lambda']:g}", *[_pct(t["merged"]) for t in tasks],
                 *[_pct(results["datasets"][c]["after"].get("zs_acc")) for c in controls],
                 _pts(s.get("mean_delta_zs_controls")) + (f" [{_pts(ci[0])}, {_pts(ci[1])}]" if ci else "")])
    widths = [max(len(str(r[i])) for r in [head, *rows]) + 2 for i in range(len(head))]
    lines = ["".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [head, *rows]]
    lines.append(f"λ chosen on {m['selected_on']} images ({m['selection']}); sweep:")
    for p in m["per_lambda"]:
        val = p.get("val_task_acc")
        lines.append(f"  λ={p['lambda']:<5g} task acc " + " / ".join(_pct(a) for a in p["task_acc"])
                     + (f" (validation " + " / ".join(_pct(a) for a in val) + ")" if val else "")
                     + f"   mean ΔZS {_pts(p.get('mean_delta_zs_controls'))}")
    return "\n".join(lines)


def _headline(args: argparse.Namespace, run_dir: Path) -> str | None:
    """The report's headline for the card: the ``ldifs`` command passes the app's wording in as the
    ``card_headline`` default (the engine does not keep a second wording of the same story)."""
    fn = getattr(args, "card_headline", None)
    if fn is None:
        return None
    from .card import read_results

    return fn(read_results(run_dir))


def cmd_card(args: argparse.Namespace) -> int:
    from .card import write_card

    run_dir = Path(args.run_dir)
    path = write_card(run_dir, args.out, headline=_headline(args, run_dir), repo_id=args.repo)
    print(f"card: {path}; upload the folder {Path(args.out)} (or: ldifs push {run_dir} --repo user/name)")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    import tempfile

    from .card import check_repo_id, write_card
    from .hub import push_folder

    check_repo_id(args.repo)
    run_dir = Path(args.run_dir)
    with tempfile.TemporaryDirectory(prefix="ldifs-card-") as tmp:
        out = Path(args.out) if args.out else Path(tmp)
        write_card(run_dir, out, headline=_headline(args, run_dir), repo_id=args.repo)
        url = push_folder(out, args.repo, private=not args.public)
    print(f"pushed: {url}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``merge``, ``card`` and ``push`` to an argparse sub-parser set."""
    p = sub.add_parser("merge", help="merge finished runs of one backbone (task arithmetic / TIES over a λ grid)",
                       description="Merge run folders written by `ldifs train` and evaluate the merge like a run: "
                                   "OUT/results.json (with a `merge` block) and OUT/final/model.safetensors.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--method", default="task_arithmetic", choices=MERGE_METHODS)
    p.add_argument("--lambdas", default=",".join(f"{x:g}" for x in DEFAULT_LAMBDAS),
                   help="comma-separated λ grid, each from 0 to 2 (default: %(default)s)")
    p.add_argument("--ties-keep", type=float, default=DEFAULT_TIES_KEEP,
                   help="TIES: share of each task vector kept (default: %(default)s)")
    p.add_argument("--name", default=None)
    p.add_argument("--data-root", default=None)
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("card", help="write a Hugging Face model card and the folder to upload for a finished run",
                       description="OUT/README.md (the card: model-index, forgetting table, how to load), "
                                   "open_clip_model.safetensors + open_clip_config.json, the head, results.json.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--repo", default=None, help="user/name the card's loading snippet names (optional)")
    p.set_defaults(func=cmd_card)

    p = sub.add_parser("push", help="upload a finished run (its card folder) to the Hugging Face Hub",
                       description="Needs a token (HF_TOKEN, or `hf auth login`); creates the repository "
                                   "(private unless --public) and uploads the folder `ldifs card` writes.")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--repo", required=True, help="user/name on the Hub")
    p.add_argument("--public", action="store_true", help="create the repository public (default: private)")
    p.add_argument("--out", default=None, help="also keep the card folder here")
    p.set_defaults(func=cmd_push)


def job_document(path: str | Path) -> tuple[str, Any] | None:
    """What a merge or push job's ``spec.json`` asks for — ``("merge", MergeSpec)`` or ``("push", dict)`` —
    or None for a run spec. The service layer names run folders relative to the job's own folder."""
    import json

    from .errors import SpecError
    from .merge import MergeSpec
    from .specio import MAX_SPEC_BYTES

    p = Path(path)
    if not p.is_file() or p.suffix.lower() != ".json" or p.stat().st_size > MAX_SPEC_BYTES:
        return None  # the run-spec reader says what is wrong with it
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not ({"merge", "push"} & set(doc)):
        return None
    kind = "merge" if "merge" in doc else "push"
    body = doc[kind]
    if not isinstance(body, dict):
        raise SpecError(f"{kind}: expected an object")
    base = p.parent
    if kind == "merge":
        runs = body.get("runs")
        if isinstance(runs, list):
            body = {**body, "runs": [str(base / r) if isinstance(r, str) else r for r in runs]}
        return kind, MergeSpec.from_dict(body)
    if not isinstance(body.get("run"), str) or not isinstance(body.get("repo"), str):
        raise SpecError("push: expected run and repo")
    return kind, {**body, "run": str(base / body["run"])}


def run_job_document(kind: str, body: Any, workdir: str | Path, *, data_root: str | None, should_stop: Any) -> None:
    """Run a merge or push job in ``workdir`` (its events go to ``events.jsonl`` as a run's do)."""
    if kind == "merge":
        from .merge_run import run_merge

        run_merge(body, workdir, data_root=data_root, should_stop=should_stop)
        return
    from .card import write_card
    from .events import EventSink
    from .files import atomic_write_json
    from .hub import push_folder
    from .runner import errors_reported

    workdir = Path(workdir)
    sink = EventSink(workdir / "events.jsonl")
    try:
        with errors_reported(sink):
            sink.emit("phase", phase="write", message=f"writing the model card for {body['repo']}")
            write_card(body["run"], workdir / "card", headline=body.get("headline"), repo_id=body["repo"])
            sink.emit("phase", phase="push", message=f"uploading to {body['repo']}")
            url = push_folder(workdir / "card", body["repo"], private=bool(body.get("private", True)))
            atomic_write_json(workdir / "push.json", {"repo": body["repo"], "url": url,
                                                       "private": bool(body.get("private", True))})
            sink.emit("phase", phase="done", message=f"pushed to {body['repo']}")
            sink.emit("done", results="push.json")
    finally:
        sink.close()
