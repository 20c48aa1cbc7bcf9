"""Continual fine-tuning (METHOD.md §3): fine-tune on a sequence of datasets, one stage after another,
and report the accuracy matrix with the ZSCL-style summaries.

Each stage is an ordinary one-task run (``run_task``) in ``stages/NN/``, started from the previous
stage's weights, with every dataset of the sequence and every control evaluated before and after it.
A stage that finished with the same spec is never redone; the stage in progress resumes from its
checkpoint when asked to resume. The
top-level ``results.json`` keeps the one-task schema (before = the pre-trained model, after = the end
of the sequence, target = the last task, earlier tasks with role ``sequence``) and adds ``continual``.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_json
from .events import EventSink
from .files import STAGES_DIR, stage_dir
from .metrics import forgetting_summary
from .results import validate_results
from .runner import run_task
from .spec import RunSpec
from .stopping import StopFile


def stage_specs(spec: RunSpec) -> list[RunSpec]:
    """One single-task spec per stage: its task is the target, everything else is evaluated as a control."""
    tasks = (spec.data.target, *spec.data.sequence)
    evaluated = (*tasks, *spec.data.controls)
    base = spec.name or f"{spec.method.name} on {' → '.join(tasks)}"
    return [spec.replace(**{"data.target": key, "data.controls": [k for k in evaluated if k != key],
                            "data.sequence": [], "name": f"{base} · stage {i + 1}/{len(tasks)}: {key}"[:120]})
            for i, key in enumerate(tasks)]


def _finished(path: Path, spec: RunSpec) -> dict | None:
    """The stage's results if it finished with this very spec (else None: run or resume it)."""
    try:
        r = json.loads((path / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = r.get("spec_hash") in spec.accepted_hashes() and (path / "final" / "model.safetensors").is_file()
    return r if ok else None


def run_sequence(spec: RunSpec, workdir: str | Path, *, resume: bool = False, sink: EventSink | None = None,
                 **kw: Any) -> dict:
    """Run every stage of ``spec``'s sequence; write the combined ``results.json`` and return it.

    Keywords as ``run_task``; ``should_stop`` defaults to the sequence directory's ``STOP`` file (no
    signal handler is installed here: that is the entry point's business)."""
    t0 = time.perf_counter()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    own_sink = sink is None
    sink = sink or EventSink(workdir / "events.jsonl")
    kw["should_stop"] = kw.get("should_stop") or StopFile(workdir)
    specs = stage_specs(spec)
    per_stage = [s.optim.steps for s in specs]  # None with epochs: known per stage only
    try:
        sink.total_steps = sum(per_stage) if all(n is not None for n in per_stage) else None
        sink.suppress = {"done"}
        atomic_write_json(workdir / "spec.json", spec.to_dict())
        stages = _run_stages(spec, specs, per_stage, workdir, sink, resume, kw)
        results = combine(spec, stages, time.perf_counter() - t0)
        _attach_sequence_intervals(results, workdir, len(specs), spec.seed)
        _link_final(workdir, len(specs))
        validate_results(results)
        atomic_write_json(workdir / "results.json", results)
        sink.suppress = set()
        sink.emit("phase", phase="done", message="finished")
        sink.emit("done", results="results.json")
        return results
    finally:
        sink.step_offset, sink.suppress = 0, set()
        if own_sink:
            sink.close()


def _run_stages(spec: RunSpec, specs: list[RunSpec], per_stage: list[int | None], workdir: Path,
                sink: EventSink, resume: bool, kw: dict) -> list[dict]:
    """Each stage's results, running the stages not finished yet; each starts from the previous one's weights."""
    from safetensors.torch import load_file

    reference = getattr(spec.method.params, "reference", "previous")
    stages: list[dict] = []
    heads: dict[str, dict] = {}
    init_state = pretrained_state = None
    for i, s in enumerate(specs):
        sdir = stage_dir(workdir, i)
        sink.step_offset = sum(n or 0 for n in per_stage[:i])
        done = _finished(sdir, s)
        if done is None:
            sink.emit("phase", phase="stage", stage=i + 1, stages=len(specs), dataset=s.data.target,
                      message=f"stage {i + 1} of {len(specs)}: fine-tuning on {s.data.target}")
            done = run_task(s, sdir, resume=resume and sdir.is_dir(), sink=sink, init_state=init_state,
                            reference_state=pretrained_state if reference == "pretrained" else None,
                            carry_heads=dict(heads), cache_after=i + 1 < len(specs), **kw)
        else:
            sink.log(f"stage {i + 1} of {len(specs)} ({s.data.target}) already finished; kept")
        stages.append(done)
        if i + 1 == len(specs):
            break  # what the next stage would start from is not needed after the last one
        init_state = load_file(str(sdir / "final" / "model.safetensors"))
        if i == 0 and reference == "pretrained":
            # the pre-trained tower, as the first stage's before side saw it
            pretrained_state = _pretrained_state(spec, kw)
        if (sdir / "final" / "head.safetensors").is_file():
            heads[s.data.target] = load_file(str(sdir / "final" / "head.safetensors"))
    return stages


def _attach_sequence_intervals(results: dict, workdir: Path, n_stages: int, seed: int) -> None:
    """Intervals of the whole sequence: the first stage's before paired with the last stage's after."""
    from .intervals import PER_IMAGE, attach_intervals, read_per_image, sequence_per_image

    per_image = sequence_per_image(read_per_image(stage_dir(workdir, 0)), read_per_image(stage_dir(workdir, n_stages - 1)))
    if per_image is not None:
        atomic_write_json(workdir / PER_IMAGE, per_image)
    attach_intervals(results, per_image, seed)


def _link_final(workdir: Path, n_stages: int) -> None:
    """The run's final weights are the last stage's: linked (a ViT-B copy would be ~600 MB more)."""
    final = workdir / "final"
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(stage_dir(workdir, n_stages - 1) / "final", final, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a filesystem without hard links
        shutil.copy2(src, dst)


def _pretrained_state(spec: RunSpec, kw: dict) -> dict:
    from .backbones import load_backbone

    model = load_backbone(spec.backbone, device="cpu", cache_dir=kw.get("model_cache_dir"))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _mean(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def combine(spec: RunSpec, stages: list[dict], seconds: float) -> dict:
    """The sequence's results: the last stage's, with before = pre-trained and the ``continual`` block.

    Matrix rows: 0 = the pre-trained model, i = after stage i. ``task_acc[i][j]`` is task j's trained
    head on the row-i model once task j has been learned, its zero-shot accuracy before that.
    Transfer = mean zero-shot accuracy on each task in the rows after earlier stages, before it is
    learned; Avg = mean of ``task_acc`` over rows 1..n; Last = mean of the last row (ZSCL's metrics).
    """
    tasks = [spec.data.target, *spec.data.sequence]
    first, last = stages[0], stages[-1]
    keys = list(first["datasets"])
    zs = [[first["datasets"][k]["before"]["zs_acc"] for k in keys]]
    zs += [[st["datasets"][k]["after"]["zs_acc"] for k in keys] for st in stages]
    task_acc: list[list[float | None]] = [[first["datasets"][t]["before"]["zs_acc"] for t in tasks]]
    for i, st in enumerate(stages):
        row = []
        for j, t in enumerate(tasks):
            if j < i:
                acc = (st.get("carried_heads_acc") or {}).get(t, st["datasets"][t]["after"]["zs_acc"])
            elif j == i:
                acc = st["target_head_acc"]["after"]
            else:
                acc = st["datasets"][t]["after"]["zs_acc"]
            row.append(acc)
        task_acc.append(row)
    n = len(tasks)
    transfer = _mean([_mean([task_acc[i][j] for i in range(1, j + 1)]) for j in range(1, n)])
    transfer_note = _transfer_note(tasks, task_acc, stages)
    datasets = {}
    for k in keys:
        entry = dict(last["datasets"][k])
        entry["before"] = first["datasets"][k]["before"]
        entry["role"] = "target" if k == tasks[-1] else "sequence" if k in tasks else "control"
        datasets[k] = entry
    target_head = {"before": last["target_head_acc"]["before"], "after": last["target_head_acc"]["after"]}
    curves = _concat_curves([st.get("curves") or {} for st in stages], [st["training"]["steps"] for st in stages])
    rest = {k: v for k, v in last.items() if k != "carried_heads_acc"}
    return {
        **rest, "spec": spec.to_dict(), "spec_hash": spec.spec_hash(), "name": spec.name, "target": tasks[-1],
        "datasets": datasets, "target_head_acc": target_head, "summary": forgetting_summary(datasets, target_head),
        "curves": curves, "wise_ft": None,
        "training": {**last["training"], "steps": sum(st["training"]["steps"] for st in stages)},
        "timing": {**last["timing"], "total_s": seconds, "started_at": first["timing"]["started_at"],
                   "train_s": sum(st["timing"]["train_s"] for st in stages),
                   "eval_s": sum(st["timing"]["eval_s"] for st in stages)},
        "continual": {
            "sequence": tasks, "reference": getattr(spec.method.params, "reference", None), "datasets": keys,
            "zs_acc": zs, "task_acc": task_acc,
            "transfer": transfer, "avg": _mean([x for row in task_acc[1:] for x in row]), "last": _mean(task_acc[-1]),
            "stages": [f"{STAGES_DIR}/{i + 1:02d}/results.json" for i in range(n)],
            "transfer_note": transfer_note,
        },
    }


def _transfer_note(tasks: list[str], task_acc: list[list[float | None]], stages: list[dict]) -> str | None:
    """Why Transfer (and Avg) leave cells out: tasks whose zero-shot accuracy is not measurable
    (``zs_note``) before they are learned. None when every cell is a measurement."""
    left_out = [t for j, t in enumerate(tasks) if j >= 1 and any(task_acc[i][j] is None for i in range(1, j + 1))]
    if not left_out:
        return None
    notes = {t: next((st["datasets"][t].get("zs_note") for st in stages if st["datasets"][t].get("zs_note")),
                     "not measured") for t in left_out}
    why = "; ".join(f"{t}: {note}" for t, note in notes.items())
    cells = [task_acc[i][j] for j in range(1, len(tasks)) for i in range(1, j + 1)]
    if all(c is None for c in cells):
        return f"Transfer is not measurable: zero-shot accuracy before a task is learned is unmeasurable ({why})"
    return f"Transfer and Avg leave out the zero-shot cells of {', '.join(left_out)} ({why})"


def _concat_curves(curves: list[dict], steps: list[int]) -> dict:
    """Stage curves on one step axis (each stage's step 0 is the previous stage's end: kept once)."""
    out: dict = {"steps": [], "target_head_acc": [], "zs_acc": {}}
    offset = 0
    for c, n in zip(curves, steps):
        for idx, step in enumerate(c.get("steps") or []):
            if out["steps"] and step == 0:
                continue  # the same model as the previous stage's last point
            out["steps"].append(step + offset)
            head = c.get("target_head_acc") or []
            out["target_head_acc"].append(head[idx] if idx < len(head) else None)
            for k, vals in (c.get("zs_acc") or {}).items():
                out["zs_acc"].setdefault(k, [None] * (len(out["steps"]) - 1)).append(vals[idx])
        offset += n
    for vals in out["zs_acc"].values():
        vals.extend([None] * (len(out["steps"]) - len(vals)))
    return out
