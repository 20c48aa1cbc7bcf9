"""Evaluating merged runs like any run: ``run_merge(MergeSpec, workdir)`` writes ``results.json``.

The steps mirror a run's recipe (``runner.py``): load the pre-trained model and every dataset of every
run (the first run's evaluation settings, so its test subsets and cached "before" evaluation are
reused); sweep the λ grid, scoring each merged model on every run's target with that run's own head
(on held-out validation images, which choose λ, and on the test images) and zero-shot on every
dataset; then evaluate the chosen merge fully (probes, calibration, per-image vectors → intervals)
and write the merged weights and ``results.json`` (schema ``ldifs.results/1`` plus a ``merge`` block).

Roles: the first run's target is the results' ``target`` (its head gives ``target_head_acc``); the
other runs' targets are ``"sequence"`` (trained on, so never counted as forgetting, as in a continual
run); every other dataset is a control.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from .checkpoint import atomic_write_json, save_tensors_atomic
from .errors import Cancelled
from .events import EventSink
from .merge import MergeError, MergeSpec, Source, check_backbones, load_source, load_weights, merge_id
from .merge import task_arithmetic, ties_merge, ties_vector

MAX_VAL = 1000  # validation images per task that choose λ
TEXT_EXEMPT = ("logit_scale", "logit_bias")  # not read by zero-shot classification


@dataclass
class Task:
    """One merged run's target: its dataset, its classifier, the validation images that choose λ."""

    source: Source
    es: object  # EvalSet
    head: nn.Linear | None
    val_set: object | None
    val_idx: torch.Tensor | None


def run_merge(mspec: MergeSpec, workdir: str | Path, *, sink: EventSink | None = None, cache=None,
              data_root: str | Path | None = None, device: torch.device | str | None = None,
              should_stop: Callable[[], bool] | None = None) -> dict:
    """Merge the runs of ``mspec`` over its λ grid, evaluate, write ``workdir/results.json``; return it."""
    from .runner import run_events

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with run_events(workdir, sink) as sink:
        r = MergeRecipe(mspec, workdir, sink, cache=cache, data_root=data_root, device=device,
                        should_stop=should_stop)
        r.prepare()
        r.evaluate_before()
        r.sweep()
        r.evaluate_chosen()
        return r.write_results()


class MergeRecipe:
    def __init__(self, mspec: MergeSpec, workdir: Path, sink: EventSink, *, cache, data_root, device, should_stop):
        from .runner import default_cache, pick_device
        from .stopping import StopFile

        self.t_all, self.started = time.perf_counter(), datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.mspec, self.workdir, self.sink = mspec, workdir, sink
        self.cache = cache if cache is not None else default_cache()
        self.data_root = data_root
        self.device = torch.device(device) if device is not None else pick_device()
        stop_file = StopFile(workdir)
        self.should_stop = (lambda: should_stop() or stop_file()) if should_stop is not None else stop_file

    # ---- 1. the runs, the model, the data ----------------------------------------------------------
    def prepare(self) -> None:
        from .backbones import get_tokenizer, load_backbone, preprocess_cfg
        from .data import DataContext
        from .evaluate import Preprocessor
        from .runner import default_data_root, prepare_data, resolve_precision

        m = self.mspec
        self.sources = [load_source(d, label) for d, label in zip(m.runs, m.labels)]
        self.backbone = check_backbones(self.sources)
        self.sink.emit("phase", phase="load", message=f"loading {self.backbone} and {len(self.sources)} runs")
        self.model = load_backbone(self.backbone, device=self.device)
        self.theta0 = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.thetas = [load_weights(s, self.theta0) for s in self.sources]
        self.tau = ties_vector(self.theta0, self.thetas, m.ties_keep) if m.method == "ties" else None
        self.text_changed = any(not torch.equal(th[k], v) for th in self.thetas for k, v in self.theta0.items()
                                if not k.startswith("visual.") and k not in TEXT_EXEMPT)
        first = self.sources[0].spec
        self.tokenizer, self.pre = get_tokenizer(self.backbone), Preprocessor(preprocess_cfg(self.model))
        self.precision = resolve_precision(first.optim.precision, self.device)
        self.eval_spec = first.replace(**{"data.controls": self._other_datasets()})
        self.ctx = DataContext(Path(self.data_root) if self.data_root else default_data_root())
        self.data = prepare_data(self.eval_spec, self.ctx, self.cache)
        self.sets = {es.key: es for es in self.data.all}
        self.tasks = [self._task(s) for s in self.sources]
        self.sink.emit("start", total_steps=0, resumed_from=None, pid=os.getpid(), device=str(self.device))

    def _other_datasets(self) -> list[str]:
        """Every dataset of every run but the first run's target: other targets first, then controls."""
        first = self.sources[0].target
        keys = [s.target for s in self.sources[1:]] + [c for s in self.sources for c in s.spec.data.controls]
        return [k for i, k in enumerate(keys) if k != first and k not in keys[:i]]

    def _task(self, src: Source) -> Task:
        from safetensors.torch import load_file, safe_open

        es = self.sets[src.target]
        head = None
        if src.head_path is not None:
            with safe_open(str(src.head_path), "pt") as f:
                names = (f.metadata() or {}).get("classnames")
            if names is not None and tuple(names.split("\n")) != es.classnames:
                raise MergeError(f"run {src.label}: its head was trained on other class names than dataset "
                                 f"{src.target!r} has now")
            state = load_file(str(src.head_path))
            if set(state) != {"weight", "bias"} or state["weight"].shape[0] != len(es.classnames):
                raise MergeError(f"run {src.label}: final/head.safetensors does not fit dataset {src.target!r}")
            head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
            head.load_state_dict(state)
            head = head.to(self.device).eval()
        val_set, val_idx = self._validation(src, es)
        return Task(src, es, head, val_set, val_idx)

    def _validation(self, src: Source, es) -> tuple[object | None, torch.Tensor | None]:
        """The run's own held-out share of its target's train split (never trained on)."""
        from .data import resolve_dataset
        from .data.splits import seeded_split
        from .evaluate import subset_indices

        if src.spec.data.val_fraction <= 0:
            return None, None
        train = es.train if es.train is not None else resolve_dataset(es.key, self.ctx).load("train", self.ctx)
        _tr, val = seeded_split(len(train), src.spec.data.val_fraction, src.spec.seed)
        if len(val) == 0:
            return None, None
        val = torch.as_tensor(val, dtype=torch.long)
        return train, val[subset_indices(len(val), MAX_VAL, src.spec.seed + 19)]

    # ---- 2. the pre-trained model (cached, shared with the runs) ----------------------------------------
    def evaluate_before(self) -> None:
        from .backbones import weights_fingerprint
        from .evaluate import before_key, before_metrics
        from .intervals import side_record

        self.sink.emit("phase", phase="before_eval", message="evaluating the pre-trained model")
        fp, e, seed = weights_fingerprint(self.model), self.eval_spec.eval, self.eval_spec.seed
        flags = {"zs": e.zero_shot, "lp": e.linear_probe, "ece": e.ece}
        self.before, self.zs_w, self.per_image = {}, {}, {}
        for i, es in enumerate(self.data.all):
            m, keep, _hit = before_metrics(self.model, es, self.pre, key=before_key(self.backbone, fp, es, self.pre,
                                                                                     flags, seed),
                                           cache=self.cache, **self._eval_kw())
            self.before[es.key], self.zs_w[es.key] = m, keep["zs_weights"]
            self.per_image[es.key] = {"before": side_record(keep, m)}
            self.sink.emit("progress", phase="before_eval", done=i + 1, total=len(self.data.all))

    def _eval_kw(self) -> dict:
        e = self.eval_spec.eval
        return dict(tokenizer=self.tokenizer, device=self.device, zero_shot=True, linear_probe=e.linear_probe,
                    ece=e.ece, seed=self.eval_spec.seed, autocast=self.precision == "bf16")

    # ---- scoring the merged weights now loaded ---------------------------------------------------------
    def merged_state(self, lam: float) -> dict:
        if self.tau is not None:
            return ties_merge(self.theta0, self.tau, lam)
        return task_arithmetic(self.theta0, self.thetas, lam)

    def zs_weights_now(self, es) -> torch.Tensor:
        """The pre-trained text tower's weights unless a run trained the text tower (then the merged one's)."""
        from .heads import zero_shot_weights

        if not self.text_changed:
            return self.zs_w[es.key]
        return zero_shot_weights(self.model, self.tokenizer, es.classnames, tuple(es.info.templates),
                                 device=self.device).cpu()

    def task_correct(self, task: Task, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per image, whether the run's own classifier (its head; zero-shot without one) is right."""
        from .heads import ZS_SCALE

        with torch.no_grad():
            if task.head is not None:
                return task.head(feats.to(self.device)).float().cpu().argmax(1) == labels
            return (ZS_SCALE * feats @ self.zs_weights_now(task.es).t()).argmax(1) == labels

    def measure(self, lam: float) -> dict:
        """One point of the λ sweep: task accuracies (test and validation), zero-shot on every dataset."""
        from .evaluate import encode_images, zs_acc_or_none

        feats = {es.key: encode_images(self.model.visual, es.test, es.test_idx, self.pre, device=self.device)
                 for es in self.data.all}
        zs = {k: zs_acc_or_none(*feats[k], self.zs_weights_now(self.sets[k]), self.sets[k].classnames)
              for k in feats}
        task_acc, val_acc = [], []
        for t in self.tasks:
            task_acc.append(self.task_correct(t, *feats[t.es.key]).float().mean().item())
            if t.val_idx is not None:
                vf = encode_images(self.model.visual, t.val_set, t.val_idx, self.pre, device=self.device)
                val_acc.append(self.task_correct(t, *vf).float().mean().item())
        deltas = [zs[k] - self.before[k]["zs_acc"] for k in zs if self._role(k) == "control"
                  and zs[k] is not None and self.before[k]["zs_acc"] is not None]
        return {"lambda": lam, "task_acc": task_acc, "val_task_acc": val_acc if len(val_acc) == len(self.tasks) else None,
                "zs_acc": zs, "mean_delta_zs_controls": sum(deltas) / len(deltas) if deltas else None}

    def _role(self, key: str) -> str:
        if key == self.sources[0].target:
            return "target"
        return "sequence" if key in {s.target for s in self.sources} else "control"

    # ---- 3. the λ sweep ---------------------------------------------------------------------------
    @torch.no_grad()
    def sweep(self) -> None:
        lambdas = self.mspec.lambdas
        self.sink.emit("phase", phase="merge", message=f"{self.mspec.method.replace('_', ' ')} over {len(lambdas)} "
                                                       f"values of lambda")
        self.points = []
        for i, lam in enumerate(lambdas):
            if self.should_stop():
                raise Cancelled("merge stopped on request (nothing to keep: a merge starts again from the runs)")
            self.model.load_state_dict(self.merged_state(lam))
            self.points.append(self.measure(lam))
            self.sink.emit("progress", phase="merge", done=i + 1, total=len(lambdas))
        on_val = all(p["val_task_acc"] is not None for p in self.points)
        self.selected_on = "validation" if on_val else "test"
        if not on_val:
            self.sink.log("a run holds out no validation images (data.val_fraction 0): lambda is chosen on the "
                          "test images, so the merge's target numbers are optimistic", level="warning")
        score = [sum(p["val_task_acc" if on_val else "task_acc"]) / len(self.tasks) for p in self.points]
        best = max(score)
        self.chosen = next(i for i, s in enumerate(score) if s >= best - 1e-12)  # ties: the smallest λ

    # ---- 4. the chosen merge, evaluated as a run is -----------------------------------------------------------
    @torch.no_grad()
    def evaluate_chosen(self) -> None:
        from .evaluate import encode_images, evaluate_model
        from .intervals import side_record

        lam = self.mspec.lambdas[self.chosen]
        self.sink.emit("phase", phase="after_eval", message=f"evaluating the merge at lambda {lam:g}")
        self.state = self.merged_state(lam)
        self.model.load_state_dict(self.state)
        self.datasets = {}
        for i, es in enumerate(self.data.all):
            m, keep = evaluate_model(self.model, es, self.pre, zs_weights=self.zs_weights_now(es), **self._eval_kw())
            self.per_image[es.key]["after"] = side_record(keep, m)
            self.datasets[es.key] = {"role": self._role(es.key), "title": es.info.title,
                                     "num_classes": len(es.classnames), "source": es.info.source,
                                     "before": {k: self.before[es.key].get(k) for k in METRIC_KEYS},
                                     "after": {k: m.get(k) for k in METRIC_KEYS}}
            self.sink.emit("progress", phase="after_eval", done=i + 1, total=len(self.data.all))
        self.task_vectors = [self.task_correct(t, *encode_images(self.model.visual, t.es.test, t.es.test_idx, self.pre,
                                                                  device=self.device)) for t in self.tasks]

    # ---- 5. weights, then results.json (last) ----------------------------------------------------------------
    def write_results(self) -> dict:
        from .intervals import from_bits, read_per_image, write_per_image, attach_intervals
        from .metrics import forgetting_summary
        from .results import SCHEMA, validate_results
        from .runner import versions
        from .stats import wilson_of

        self.sink.emit("phase", phase="write", message="writing the merged weights and the report")
        first = self.sources[0]
        before_bits = ((read_per_image(first.run_dir) or {}).get("target_head") or {}).get("before")
        if before_bits is not None and len(before_bits) != len(self.task_vectors[0]):
            before_bits = None  # another test subset: no paired interval
        th_before = first.results["target_head_acc"].get("before")
        target_head = {"before": th_before, "after": self.task_vectors[0].float().mean().item()}
        results = {
            "schema": SCHEMA, "spec": self.spec_doc(), "spec_hash": merge_id(self.sources, self.mspec),
            "name": self.title(), "target": first.target, "method": "merge", "backbone": self.backbone,
            "datasets": self.datasets, "target_head_acc": target_head,
            "summary": forgetting_summary(self.datasets, target_head), "curves": {}, "wise_ft": None,
            "training": None,
            "timing": {"total_s": time.perf_counter() - self.t_all, "train_s": 0.0, "eval_s": time.perf_counter() - self.t_all,
                       "started_at": self.started,
                       "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "versions": versions(), "artifacts": self.save_final(), "merge": self.merge_block(wilson_of),
        }
        vectors = write_per_image(self.workdir, self.per_image,
                                  {"before": from_bits(before_bits) if before_bits else None,
                                   "after": self.task_vectors[0]})
        attach_intervals(results, vectors, self.eval_spec.seed)
        validate_results(results)
        atomic_write_json(self.workdir / "results.json", results)
        self.sink.emit("phase", phase="done", message="finished")
        self.sink.emit("done", results="results.json")
        return results

    def title(self) -> str:
        return self.mspec.name or f"merge ({self.mspec.method.replace('_', ' ')}) of " + " + ".join(
            s.target for s in self.sources)

    def spec_doc(self) -> dict:
        """What the report reads as the spec: the backbone, the seed, the datasets and the merge's settings
        (runs by their labels, never by their folders)."""
        d = self.mspec.to_dict()
        d.pop("runs")
        return {"name": self.title(), "backbone": self.backbone, "seed": self.eval_spec.seed,
                "data": {"target": self.sources[0].target, "controls": list(self.eval_spec.data.controls)},
                "method": {"name": "merge", "params": {k: v for k, v in d.items() if k != "name"}}, "merge": d}

    def merge_block(self, wilson_of) -> dict:
        lam = self.mspec.lambdas[self.chosen]
        tasks = []
        for t, correct in zip(self.tasks, self.task_vectors):
            own = t.source.results.get("target_head_acc") or {}
            tasks.append({"run": t.source.label, "dataset": t.es.key, "title": t.es.info.title,
                          "method": t.source.results.get("method"), "spec_hash": t.source.results.get("spec_hash"),
                          "classifier": "trained head" if t.head is not None else "zero-shot",
                          "before": own.get("before"), "run_after": own.get("after"),
                          "run_mean_delta_zs_controls": (t.source.results.get("summary") or {}).get(
                              "mean_delta_zs_controls"),
                          "merged": correct.float().mean().item(), "merged_ci": wilson_of(correct.numpy())})
        return {"method": self.mspec.method, "lambdas": list(self.mspec.lambdas), "chosen_lambda": lam,
                "selected_on": self.selected_on,
                "selection": "the mean over tasks of each run's own classifier accuracy" + (
                    " on its held-out validation images" if self.selected_on == "validation" else " on test images"),
                "ties_keep": self.mspec.ties_keep if self.mspec.method == "ties" else None,
                "tasks": tasks, "per_lambda": self.points}

    def save_final(self) -> dict:
        final = self.workdir / "final"
        final.mkdir(exist_ok=True)
        save_tensors_atomic(final / "model.safetensors", self.state,
                            metadata={"backbone": self.backbone, "merge": self.mspec.method,
                                      "lambda": repr(self.mspec.lambdas[self.chosen])})
        artifacts = {"checkpoint": "final/model.safetensors"}
        heads = []
        for i, t in enumerate(self.tasks):
            if t.source.head_path is None:
                continue
            name = f"final/heads/{i + 1:02d}-{t.es.key.replace(':', '-')}.safetensors"
            (final / "heads").mkdir(exist_ok=True)
            shutil.copyfile(t.source.head_path, self.workdir / name)
            heads.append(name)
            if i == 0:
                shutil.copyfile(t.source.head_path, final / "head.safetensors")
                artifacts["head"] = "final/head.safetensors"
        if heads:
            artifacts["heads"] = heads
        return artifacts


METRIC_KEYS = ("zs_acc", "zs_ece", "lp_acc", "lp_ece")
