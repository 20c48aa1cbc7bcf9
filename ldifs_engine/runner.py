"""Compose the engine: spec → backbone, data, method → before-eval → train → after-eval → results.json."""
from __future__ import annotations

import copy
import math
import os
import platform
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .backbones import frozen_copy, get_tokenizer, load_backbone, preprocess_cfg, weights_fingerprint
from .cache import ByteCache, DirCache, NullCache, content_key
from .checkpoint import atomic_write_json, latest_checkpoint, save_tensors_atomic
from .data import DataContext, resolve_dataset
from .data.splits import seeded_split
from .errors import Cancelled, DatasetUnavailable, LdifsError, SpecError
from .evaluate import (EvalSet, Preprocessor, before_key, before_metrics, encode_images, evaluate_model, idx_hash,
                       lp_init_head, remember_before, subset_indices, zs_metrics)
from .events import EventSink
from .heads import ZS_SCALE, zero_shot_weights, zs_head
from .methods import METHODS
from .methods.base import TrainState
from .metrics import accuracy, forgetting_summary
from .results import SCHEMA, validate_results
from .spec import RunSpec
from .train import TrainConfig, Trainer

STOP_FILE = "STOP"


def default_home() -> Path:
    return Path(os.environ.get("LDIFS_HOME") or Path.home() / ".ldifs-studio").expanduser()


def default_data_root() -> Path:
    return Path(os.environ.get("LDIFS_DATASETS_DIR") or default_home() / "datasets")


def default_cache() -> ByteCache:
    root = os.environ.get("LDIFS_CACHE_DIR")
    if root == "off":
        return NullCache()
    return DirCache(Path(root) if root else default_home() / "cache" / "engine")


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


class StopFlag:
    """Stop requested by a ``STOP`` file in the run directory or by SIGINT (a second SIGINT aborts)."""

    def __init__(self, workdir: Path | None):
        self.workdir = workdir
        self.requested = False
        self._old = None

    def install(self) -> None:
        try:
            self._old = signal.signal(signal.SIGINT, self._on_sigint)
        except ValueError:  # not the main thread: the STOP file still works
            self._old = None

    def _on_sigint(self, *_):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def uninstall(self) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def __call__(self) -> bool:
        return self.requested or bool(self.workdir and (self.workdir / STOP_FILE).exists())


@dataclass
class Prepared:
    """Datasets of a run, split and capped."""

    target: EvalSet
    controls: list[EvalSet]
    train_set: object
    train_idx: torch.Tensor

    @property
    def all(self) -> list[EvalSet]:
        return [self.target, *self.controls]


def prepare_data(spec: RunSpec, ctx: DataContext) -> Prepared:
    """Load every dataset of the spec; the target's train split loses a seeded validation share."""
    sets = []
    for key in spec.datasets:
        info = resolve_dataset(key, ctx)
        test = info.load("test", ctx)
        train = info.load("train", ctx) if spec.eval.linear_probe or key == spec.data.target else None
        if len(test) == 0 or (train is not None and len(train) == 0):
            raise DatasetUnavailable(f"dataset {key!r} has an empty split")
        test_idx = subset_indices(len(test), spec.data.max_eval_samples, spec.seed + 11)
        train_idx = subset_indices(len(train), spec.eval.lp_max_train, spec.seed + 13) if train is not None else None
        sets.append(EvalSet(key, info, test, test_idx, train, train_idx))
    target = sets[0]
    tr, _val = seeded_split(len(target.train), spec.data.val_fraction, spec.seed)
    tr = torch.as_tensor(tr, dtype=torch.long)
    if spec.data.max_train_samples is not None and len(tr) > spec.data.max_train_samples:
        tr = tr[subset_indices(len(tr), spec.data.max_train_samples, spec.seed + 17)]
    if not spec.eval.linear_probe:
        for es in sets:
            es.train, es.train_idx = (es.train, es.train_idx) if es is target else (None, None)
    return Prepared(target, sets[1:], target.train, tr)


def total_steps(spec: RunSpec, n_train: int) -> int:
    if spec.optim.steps is not None:
        return spec.optim.steps
    return max(1, math.ceil(spec.optim.epochs * n_train / spec.optim.batch_size))


def versions() -> dict:
    import open_clip
    import torchvision

    return {"ldifs_studio": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version()}


def run(spec: RunSpec, workdir: str | Path, **kw: Any) -> dict:
    """Fine-tune and evaluate one spec — one task, or a continual sequence (``data.sequence``) — write
    ``results.json`` into ``workdir`` and return it. Keywords as ``run_task``."""
    if spec.seeds:
        raise SpecError("seeds: a spec with seeds is a group of runs, one per seed; submit it (`ldifs submit`) "
                        "or use `ldifs train`, which runs each seed into its own folder")
    if spec.data.sequence:
        from .continual import run_sequence

        return run_sequence(spec, workdir, **kw)
    return run_task(spec, workdir, **kw)


def run_task(spec: RunSpec, workdir: str | Path, *, resume: bool = False, sink: EventSink | None = None,
             cache: ByteCache | None = None, data_root: str | Path | None = None, download: bool = False,
             device: torch.device | str | None = None, should_stop: Callable[[], bool] | None = None,
             fault_hook: Callable[[int, int], None] | None = None, model_cache_dir: str | Path | None = None,
             init_state: dict[str, torch.Tensor] | None = None, reference_state: dict[str, torch.Tensor] | None = None,
             carry_heads: dict[str, dict[str, torch.Tensor]] | None = None, cache_after: bool = False) -> dict:
    """Fine-tune and evaluate one task; write ``results.json`` into ``workdir`` and return it.

    A continual sequence calls this once per stage with ``init_state`` (the previous stage's weights),
    ``reference_state`` (weights of LDIFS's reference tower when it is not the starting model) and
    ``carry_heads`` (earlier stages' heads, scored on the fine-tuned model as ``carried_heads_acc``) and
    ``cache_after`` (store the final evaluation as the "before" side of the fine-tuned weights).
    """
    t_all = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    own_sink = sink is None
    sink = sink or EventSink(workdir / "events.jsonl")
    cache = cache if cache is not None else default_cache()
    device = torch.device(device) if device is not None else pick_device()
    precision = resolve_precision(spec.optim.precision, device)
    ctx = DataContext(Path(data_root) if data_root else default_data_root(), download=download)
    stop_flag = None
    if should_stop is None:
        stop_flag = should_stop = StopFlag(workdir)
        stop_flag.install()  # SIGINT = save a checkpoint and exit at the next step boundary
    torch.manual_seed(spec.seed)
    atomic_write_json(workdir / "spec.json", spec.to_dict())
    try:
        sink.start_heartbeat()
        sink.emit("phase", phase="load", message=f"loading {spec.backbone} and {len(spec.datasets)} datasets")
        model = load_backbone(spec.backbone, device=device, cache_dir=model_cache_dir)
        if init_state is not None:
            model.load_state_dict(init_state)
        tokenizer = get_tokenizer(spec.backbone)
        pre = Preprocessor(preprocess_cfg(model))
        data = prepare_data(spec, ctx)
        n_steps = total_steps(spec, len(data.train_idx))
        resumed_from = None
        if resume:
            last = latest_checkpoint(workdir / "checkpoints")
            resumed_from = int(last.name.split("-")[1]) if last is not None else None
        sink.emit("start", total_steps=n_steps, resumed_from=resumed_from, pid=os.getpid(), device=str(device))
        if spec.optim.warmup_steps >= n_steps:
            sink.log(f"warm-up ({spec.optim.warmup_steps}) is not shorter than the run ({n_steps} steps): "
                     "the learning rate never reaches its peak", level="warning")

        # ---- before: the pre-trained model (cached by content hash) ----
        t_eval = time.perf_counter()
        sink.emit("phase", phase="before_eval", message="evaluating the pre-trained model")
        fingerprint = weights_fingerprint(model)
        flags = {"zs": spec.eval.zero_shot, "lp": spec.eval.linear_probe, "ece": spec.eval.ece}
        before, zs_w, hits = {}, {}, 0
        eval_kw = dict(tokenizer=tokenizer, device=device, zero_shot=True, linear_probe=spec.eval.linear_probe,
                       ece=spec.eval.ece, seed=spec.seed, autocast=precision == "bf16")
        for es in data.all:
            key = before_key(spec.backbone, fingerprint, es, pre, flags, spec.seed)
            m, keep, hit = before_metrics(model, es, pre, key=key, cache=cache, **eval_kw)
            hits += hit
            before[es.key], zs_w[es.key] = m, keep["zs_weights"]
        sink.log(f"before-side: {hits} of {len(data.all)} datasets served from cache")
        eval_s = time.perf_counter() - t_eval

        # ---- method, head, reference ----
        method_cls = METHODS.get(spec.method.name)
        method = method_cls(spec.method.params)
        head = None
        if method.uses_head:
            if spec.method.head_init == "lp":
                # Fitted on the run's own training split, so the starting head does not depend on the
                # evaluation settings (whether the report's probe runs, or its lp_max_train cap).
                key = content_key("lp-init", train_idx=idx_hash(data.train_idx), before=before_key(
                    spec.backbone, fingerprint, data.target, pre, {"lp_init": True}, spec.seed))
                head = lp_init_head(model, data.target, data.train_idx, pre, key=key, cache=cache, device=device,
                                    seed=spec.seed).requires_grad_(True)
            else:
                head = zs_head(zs_w[data.target.key])
            head = head.to(device)
        st = TrainState(model=model, head=head, classnames=data.target.classnames,
                        templates=tuple(data.target.info.templates), tokenizer=tokenizer)
        if method.needs_reference:
            st.reference = frozen_copy(model.visual).to(device)
            if reference_state is not None:
                st.reference.tower.load_state_dict(
                    {k[len("visual."):]: v for k, v in reference_state.items() if k.startswith("visual.")})
        if method.needs_anchor:
            st.anchor = {f"model.visual.{n}": p.detach().clone() for n, p in model.visual.named_parameters()}
        if method.trains_text:
            prompts = [t.replace("{}", c) for c in st.classnames for t in st.templates]
            st.extras["caption_tokens"] = tokenizer(prompts).view(len(st.classnames), len(st.templates), -1).to(device)
        initial_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        initial_head = copy.deepcopy(head).cpu() if head is not None else None

        def head_acc(feats: torch.Tensor, labels: torch.Tensor, zs_target: torch.Tensor | None = None) -> float:
            if head is not None:
                with torch.no_grad():
                    return accuracy(head(feats.to(device)).float().cpu(), labels)
            return accuracy(ZS_SCALE * feats @ zs_target.t(), labels)

        target_test = encode_images(model.visual, data.target.test, data.target.test_idx, pre, device=device)
        target_head_before = head_acc(*target_test, zs_w[data.target.key])

        def current_zs_weights(es: EvalSet) -> torch.Tensor:
            if not method.trains_text:
                return zs_w[es.key]
            return zero_shot_weights(model, tokenizer, es.classnames, es.info.templates, device=device).cpu()

        def on_curve(step: int) -> dict:
            if step == 0:
                return {"target": data.target.key, "target_head_acc": target_head_before,
                        "zs_acc": {k: before[k]["zs_acc"] for k in before}}
            model.eval()
            out = {"target": data.target.key, "zs_acc": {}}
            for es in data.all:
                f, y = encode_images(model.visual, es.test, es.test_idx, pre, device=device)
                w = current_zs_weights(es)
                out["zs_acc"][es.key] = accuracy(ZS_SCALE * f @ w.t(), y)
                if es is data.target:
                    out["target_head_acc"] = head_acc(f, y, w)
            return out

        # ---- sanity: one forward/backward on two images before the long loop ----
        sink.emit("phase", phase="sanity", message="checking one training step")
        model.eval()
        x = pre.eval_batch(torch.stack([data.train_set[int(i)][0] for i in data.train_idx[:2]])
                           if hasattr(data.train_set, "images") else [data.train_set[int(i)][0] for i in data.train_idx[:2]])
        y = torch.tensor([int(data.train_set[int(i)][1]) for i in data.train_idx[:2]])
        task, reg = method.loss(st, x.to(device), y.to(device), torch.Generator().manual_seed(0))
        (task + reg).backward()
        model.zero_grad(set_to_none=True)
        if head is not None:
            head.zero_grad(set_to_none=True)

        # ---- train ----
        sink.emit("phase", phase="train", message=f"fine-tuning with {method.title} for {n_steps} steps")
        points = spec.eval.curve_points
        curve_steps = tuple(sorted({max(1, round(n_steps * k / points)) for k in range(1, points + 1)})) if points else ()
        micro = spec.optim.micro_batch or spec.optim.batch_size
        cfg = TrainConfig(total_steps=n_steps, batch_size=spec.optim.batch_size, micro_batch=micro, lr=spec.optim.lr,
                          weight_decay=spec.optim.weight_decay, warmup_steps=spec.optim.warmup_steps,
                          grad_clip=spec.optim.grad_clip, precision=precision,
                          checkpoint_every=spec.optim.checkpoint_every, seed=spec.seed,
                          freeze_head=spec.method.freeze_head, curve_steps=curve_steps)
        trainer = Trainer(method, st, data.train_set, data.train_idx, pre, cfg, device=device, sink=sink,
                          ckpt_root=workdir / "checkpoints", spec_hash=spec.spec_hash(), should_stop=should_stop,
                          on_curve=on_curve if points else None, fault_hook=fault_hook)
        tr = trainer.fit(resume=resume)

        # ---- after ----
        t_after = time.perf_counter()
        sink.emit("phase", phase="after_eval", message="evaluating the fine-tuned model")
        after, datasets = {}, {}
        after_fingerprint = weights_fingerprint(model) if cache_after else None
        head_feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

        def test_feats(es: EvalSet) -> tuple[torch.Tensor, torch.Tensor]:
            """fp32 test embeddings of the fine-tuned model, which heads are scored on; encoded once."""
            if es.key not in head_feats:
                head_feats[es.key] = encode_images(model.visual, es.test, es.test_idx, pre, device=device)
            return head_feats[es.key]

        for es in data.all:
            m, keep = evaluate_model(model, es, pre, zs_weights=None if method.trains_text else zs_w[es.key],
                                     **eval_kw)
            if after_fingerprint is not None:  # the next stage of a sequence starts from these very weights
                remember_before(cache, before_key(spec.backbone, after_fingerprint, es, pre, flags, spec.seed),
                                m, keep)
            if method.trains_text:
                m["zs_acc_pretrained_text"] = zs_metrics(*test_feats(es), zs_w[es.key], ece=False)["zs_acc"]
            after[es.key] = m
            datasets[es.key] = {
                "role": "target" if es is data.target else "control", "title": es.info.title,
                "num_classes": len(es.classnames), "source": es.info.source,
                "before": {k: before[es.key].get(k) for k in ("zs_acc", "zs_ece", "lp_acc", "lp_ece")},
                "after": {k: m.get(k) for k in ("zs_acc", "zs_ece", "lp_acc", "lp_ece")},
            }
            if "zs_acc_pretrained_text" in m:
                datasets[es.key]["after"]["zs_acc_pretrained_text"] = m["zs_acc_pretrained_text"]
        target_head_after = head_acc(*test_feats(data.target), current_zs_weights(data.target))
        target_head = {"before": target_head_before, "after": target_head_after}
        carried = {}
        for key, state in (carry_heads or {}).items():
            f, y = test_feats(next(e for e in data.all if e.key == key))
            old_head = torch.nn.Linear(state["weight"].shape[1], state["weight"].shape[0]).to(device)
            old_head.load_state_dict(state)
            with torch.no_grad():
                carried[key] = accuracy(old_head(f.to(device)).float().cpu(), y)
        eval_s += time.perf_counter() - t_after

        # ---- WiSE-FT: interpolate all weights (head included) between pre-trained and fine-tuned ----
        wise = None
        if spec.eval.wise_ft_alphas:
            sink.emit("phase", phase="wise_ft", message=f"WiSE-FT sweep over {len(spec.eval.wise_ft_alphas)} alphas")
            wise = wise_ft_sweep(model, head, initial_state, initial_head, spec.eval.wise_ft_alphas, data, pre,
                                 before, zs_w, method.trains_text, tokenizer, device)

        # ---- write artefacts, results last ----
        final = workdir / "final"
        final.mkdir(exist_ok=True)
        save_tensors_atomic(final / "model.safetensors", model.state_dict(),
                            metadata={"backbone": spec.backbone, "spec_hash": spec.spec_hash()})
        artifacts = {"checkpoint": "final/model.safetensors"}
        if head is not None:
            save_tensors_atomic(final / "head.safetensors", head.state_dict(),
                                metadata={"classnames": "\n".join(data.target.classnames)})
            artifacts["head"] = "final/head.safetensors"
        results = {
            "schema": SCHEMA, "spec": spec.to_dict(), "spec_hash": spec.spec_hash(), "name": spec.name,
            "target": data.target.key, "method": spec.method.name, "backbone": spec.backbone,
            "datasets": datasets, "target_head_acc": target_head,
            "summary": forgetting_summary(datasets, target_head),
            "curves": tr.curves, "wise_ft": wise,
            "training": {"steps": tr.steps, "batch_size": spec.optim.batch_size, "micro_batch": tr.micro_batch,
                         "accum": tr.accum, "backoffs": tr.backoffs, "final_loss": tr.final_loss,
                         "resumed_from": tr.resumed_from, "device": str(device), "precision": precision,
                         "n_train": len(data.train_idx)},
            "timing": {"total_s": time.perf_counter() - t_all, "train_s": tr.seconds, "eval_s": eval_s,
                       "started_at": started, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "versions": versions(), "artifacts": artifacts,
        }
        if carry_heads:
            results["carried_heads_acc"] = carried
        validate_results(results)
        atomic_write_json(workdir / "results.json", results)
        sink.emit("phase", phase="done", message="finished")
        sink.emit("done", results="results.json")
        return results
    except Cancelled:
        raise  # the trainer already emitted "stopped"; a stop is not an error
    except LdifsError as e:
        sink.emit("error", kind=type(e).__name__, message=str(e))
        raise
    except Exception as e:
        sink.emit("error", kind=type(e).__name__, message=f"{type(e).__name__}: {str(e)[:300]}")
        raise
    finally:
        if stop_flag is not None:
            stop_flag.uninstall()
        sink.close() if own_sink else sink._hb_stop.set()


@torch.no_grad()
def wise_ft_sweep(model, head, initial_state, initial_head, alphas, data: Prepared, pre, before, zs_w,
                  trains_text: bool, tokenizer, device) -> dict:
    """θ_a = (1 − a)·θ_0 + a·θ_ft for every weight (head included), evaluated per alpha."""
    ft_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    ft_head = copy.deepcopy(head) if head is not None else None
    out = {"alphas": list(alphas), "target_head_acc": [], "mean_delta_zs_controls": [], "target_zs_acc": []}
    try:
        for a in alphas:
            model.load_state_dict(interpolate(initial_state, ft_state, a))
            if head is not None:
                head.load_state_dict(interpolate(initial_head.state_dict(), ft_head.state_dict(), a))
            model.eval()
            deltas = []
            for es in data.all:
                f, y = encode_images(model.visual, es.test, es.test_idx, pre, device=device)
                w = zero_shot_weights(model, tokenizer, es.classnames, es.info.templates, device=device).cpu() \
                    if trains_text else zs_w[es.key]
                zs = accuracy(ZS_SCALE * f @ w.t(), y)
                if es is data.target:
                    out["target_zs_acc"].append(zs)
                    acc = accuracy(head(f.to(device)).float().cpu(), y) if head is not None else zs
                    out["target_head_acc"].append(acc)
                elif before[es.key]["zs_acc"] is not None:  # an unmeasurable head has no change either
                    deltas.append(zs - before[es.key]["zs_acc"])
            out["mean_delta_zs_controls"].append(sum(deltas) / len(deltas) if deltas else None)
    finally:
        model.load_state_dict(ft_state)
        if head is not None:
            head.load_state_dict(ft_head.state_dict())
    return out


def interpolate(theta0: dict, theta1: dict, alpha: float) -> dict:
    """WiSE-FT weights ``(1 − alpha)·θ0 + alpha·θ1`` (integer buffers are taken from θ1)."""
    if set(theta0) != set(theta1):
        raise ValueError("cannot interpolate state dicts with different keys")
    out = {}
    for k, v1 in theta1.items():
        v0 = theta0[k].to(v1.device)
        out[k] = (1 - alpha) * v0 + alpha * v1 if v1.is_floating_point() else v1.clone()
    return out
