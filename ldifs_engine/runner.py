"""One fine-tuning task as a recipe that reads top to bottom (docs/ARCHITECTURE.md, "The run as a recipe"):

    prepare()          the backbone, its tokenizer and preprocessing, every dataset split and capped
    evaluate_before()  the pre-trained model on every dataset (cached by content hash)
    build_state()      the head training starts from and what the method's own ``setup`` prepares
    train()            one sanity step, then the Trainer (checkpoints, resume, stop requests, curves)
    evaluate_after()   the fine-tuned model on every dataset, and earlier stages' heads
    wise_ft()          the WiSE-FT sweep, when the spec asks for one
    write_results()    final weights, then ``results.json`` (atomically, last)

``run_task`` runs those steps in that order; a continual sequence (``continual.run_sequence``) calls it
once per stage. The recipe never looks at which method it runs: methods say what they need through
their hooks (``methods/base.py``).
"""
from __future__ import annotations

import copy
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .accel import auto_precision, compile_tower, setup_device, use_channels_last
from .backbones import get_tokenizer, load_backbone, preprocess_cfg, tower_kind, weights_fingerprint
from .batches import TrainImages, loader_settings
from .cache import ByteCache, DiskStore, NullCache, content_key, size_limit_from_env
from .checkpoint import atomic_write_json, latest_checkpoint, save_tensors_atomic
from .data import DataContext, resolve_dataset
from .data.cache_tensors import attach_eval_cache, content_stamp
from .data.splits import seeded_split
from .errors import Cancelled, DatasetUnavailable, LdifsError
from .evaluate import (EvalSet, Preprocessor, before_key, before_metrics, encode_images, evaluate_model,
                       idx_hash, lp_init_head, remember_before, subset_indices, zs_acc_or_none)
from .events import EventSink
from .hardware import cpu_fallback_note
from .heads import ZS_SCALE, zs_head
from .intervals import attach_intervals, side_record, write_per_image
from .methods import METHODS
from .methods.base import TrainState
from .metrics import accuracy, forgetting_summary
from .results import SCHEMA, validate_results
from .spec import RunSpec
from .stopping import StopFile
from .train import TrainConfig, Trainer, TrainResult

METRIC_KEYS = ("zs_acc", "zs_ece", "lp_acc", "lp_ece")


def default_home() -> Path:
    return Path(os.environ.get("LDIFS_HOME") or Path.home() / ".ldifs-studio").expanduser()


def default_data_root() -> Path:
    return Path(os.environ.get("LDIFS_DATASETS_DIR") or default_home() / "datasets")


def default_cache() -> ByteCache:
    """The engine's store (``$LDIFS_CACHE_DIR``, else ``$LDIFS_HOME/cache/engine``; ``off`` = none)."""
    root = os.environ.get("LDIFS_CACHE_DIR")
    if root == "off":
        return NullCache()
    return DiskStore(Path(root) if root else default_home() / "cache" / "engine", size_limit=size_limit_from_env())


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return auto_precision(device)
    return precision


@dataclass
class Prepared:
    """Datasets of a run, split and capped."""

    target: EvalSet
    controls: list[EvalSet]
    train_set: object
    train_idx: torch.Tensor
    train_images: TrainImages  # the target's train split as training reads it (decoded images in the store)

    @property
    def all(self) -> list[EvalSet]:
        return [self.target, *self.controls]


def prepare_data(spec: RunSpec, ctx: DataContext, cache: ByteCache | None = None) -> Prepared:
    """Load every dataset of the spec; the target's train split loses a seeded validation share."""
    sets, train_ids = [], {}
    for key in spec.datasets:
        info = resolve_dataset(key, ctx)
        test = info.load("test", ctx)
        train = info.load("train", ctx) if spec.eval.linear_probe or key == spec.data.target else None
        if len(test) == 0 or (train is not None and len(train) == 0):
            raise DatasetUnavailable(f"dataset {key!r} has an empty split")
        test_idx = subset_indices(len(test), spec.data.max_eval_samples, spec.seed + 11)
        train_idx = subset_indices(len(train), spec.eval.lp_max_train, spec.seed + 13) if train is not None else None
        sets.append(EvalSet(key, info, test, test_idx, train, train_idx))
        if cache is not None:  # evaluation reads preprocessed tensors from the store after the first pass
            stamp = content_stamp(info, ctx)
            attach_eval_cache(test, info, "test", ctx, cache, stamp=stamp, workers=spec.data.num_workers)
            if train is not None:
                train_ids[key] = attach_eval_cache(train, info, "train", ctx, cache, stamp=stamp,
                                                   workers=spec.data.num_workers).identity
    target = sets[0]
    tr, _val = seeded_split(len(target.train), spec.data.val_fraction, spec.seed)
    tr = torch.as_tensor(tr, dtype=torch.long)
    if spec.data.max_train_samples is not None and len(tr) > spec.data.max_train_samples:
        tr = tr[subset_indices(len(tr), spec.data.max_train_samples, spec.seed + 17)]
    if not spec.eval.linear_probe:
        for es in sets:
            es.train, es.train_idx = (es.train, es.train_idx) if es is target else (None, None)
    images = TrainImages(target.train, cache, train_ids[target.key]) if cache is not None else TrainImages(target.train)
    return Prepared(target, sets[1:], target.train, tr, images)


def total_steps(spec: RunSpec, n_train: int) -> int:
    if spec.optim.steps is not None:
        return spec.optim.steps
    return max(1, math.ceil(spec.optim.epochs * n_train / spec.optim.batch_size))


def curve_steps(n_steps: int, points: int) -> tuple[int, ...]:
    """The steps after which the curves are measured: ``points`` of them, evenly spread."""
    return tuple(sorted({max(1, round(n_steps * k / points)) for k in range(1, points + 1)})) if points else ()


def versions() -> dict:
    import open_clip
    import torchvision

    return {"ldifs_studio": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version()}


def interpolate(theta0: dict, theta1: dict, alpha: float) -> dict:
    """WiSE-FT weights ``(1 − alpha)·θ0 + alpha·θ1`` (integer buffers are taken from θ1)."""
    if set(theta0) != set(theta1):
        raise ValueError("cannot interpolate state dicts with different keys")
    out = {}
    for k, v1 in theta1.items():
        v0 = theta0[k].to(v1.device)
        out[k] = (1 - alpha) * v0 + alpha * v1 if v1.is_floating_point() else v1.clone()
    return out


@dataclass(frozen=True)
class TaskOptions:
    """How to run one task beyond what its spec fixes (the keywords of ``run_task``)."""

    resume: bool = False
    cache: ByteCache | None = None
    data_root: str | Path | None = None
    download: bool = False
    device: torch.device | str | None = None
    should_stop: Callable[[], bool] | None = None
    fault_hook: Callable[[int, int], None] | None = None
    model_cache_dir: str | Path | None = None
    init_state: dict[str, torch.Tensor] | None = None
    reference_state: dict[str, torch.Tensor] | None = None
    carry_heads: dict[str, dict[str, torch.Tensor]] | None = None
    cache_after: bool = False


def run_task(spec: RunSpec, workdir: str | Path, *, sink: EventSink | None = None, **options) -> dict:
    """Fine-tune and evaluate one task; write ``results.json`` into ``workdir`` and return it.

    ``options`` are ``TaskOptions``' fields. A continual sequence calls this once per stage with
    ``init_state`` (the previous stage's weights), ``reference_state`` (weights of LDIFS's reference
    tower when it is not the starting model), ``carry_heads`` (earlier stages' heads, scored on the
    fine-tuned model as ``carried_heads_acc``) and ``cache_after`` (store the final evaluation as the
    "before" side of the fine-tuned weights). Stops at the next step boundary once ``should_stop()``
    turns true or a ``STOP`` file appears in ``workdir``; installs no signal handler (an entry point
    does that, and passes its flag as ``should_stop``).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    with run_events(workdir, sink) as sink:
        recipe = TaskRecipe(spec, workdir, sink, TaskOptions(**options))
        recipe.prepare()
        recipe.evaluate_before()
        recipe.build_state()
        recipe.train()
        recipe.evaluate_after()
        recipe.wise_ft()
        return recipe.write_results()


@contextmanager
def run_events(workdir: Path, sink: EventSink | None) -> Iterator[EventSink]:
    """The run's event sink (its own ``workdir/events.jsonl`` unless one is given), with failures reported
    as ``error`` events and a heartbeat while the body runs; a sink opened here is closed here."""
    own_sink = sink is None
    sink = sink or EventSink(workdir / "events.jsonl")
    try:
        with errors_reported(sink), sink.heartbeat():
            yield sink
    finally:
        if own_sink:
            sink.close()


@contextmanager
def errors_reported(sink: EventSink) -> Iterator[None]:
    """A failure becomes an ``error`` event (a stop is not a failure: the trainer reported it)."""
    try:
        yield
    except Cancelled:
        raise
    except LdifsError as e:
        sink.emit("error", kind=type(e).__name__, message=str(e))
        raise
    except Exception as e:
        sink.emit("error", kind=type(e).__name__, message=f"{type(e).__name__}: {str(e)[:300]}")
        raise


class TaskRecipe:
    """The steps of one task; each fills in what the next one reads (see the module docstring)."""

    def __init__(self, spec: RunSpec, workdir: Path, sink: EventSink, opts: TaskOptions):
        self.t_all = time.perf_counter()
        self.started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.spec, self.workdir, self.sink, self.opts = spec, workdir, sink, opts
        self.cache = opts.cache if opts.cache is not None else default_cache()
        self.device = torch.device(opts.device) if opts.device is not None else pick_device()
        note = cpu_fallback_note(self.device.type, torch.__version__, torch.version.cuda) if opts.device is None else None
        if note:
            sink.log(note, level="warning")  # in the job's log: why a GPU job runs slowly
        self.precision = resolve_precision(spec.optim.precision, self.device)
        stop_file, asked = StopFile(workdir), opts.should_stop
        self.should_stop = (lambda: asked() or stop_file()) if asked is not None else stop_file
        self.method = METHODS.get(spec.method.name)(spec.method.params)
        self.eval_s = 0.0
        torch.manual_seed(spec.seed)
        atomic_write_json(workdir / "spec.json", spec.to_dict())

    # ---- 1. prepare ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """Load the backbone (or a previous stage's weights) and every dataset; announce the run."""
        spec, opts = self.spec, self.opts
        self.sink.emit("phase", phase="load", message=f"loading {spec.backbone} and {len(spec.datasets)} datasets")
        self.model = load_backbone(spec.backbone, device=self.device, cache_dir=opts.model_cache_dir)
        if opts.init_state is not None:
            self.model.load_state_dict(opts.init_state)
        self.tokenizer = get_tokenizer(spec.backbone)
        self.pre = Preprocessor(preprocess_cfg(self.model))
        self.data = prepare_data(spec, DataContext(Path(opts.data_root) if opts.data_root else default_data_root(),
                                                   download=opts.download), self.cache)
        self.n_steps = total_steps(spec, len(self.data.train_idx))
        self.sink.emit("start", total_steps=self.n_steps, resumed_from=self._resumable_step(), pid=os.getpid(),
                       device=str(self.device))
        if spec.optim.warmup_steps >= self.n_steps:
            self.sink.log(f"warm-up ({spec.optim.warmup_steps}) is not shorter than the run ({self.n_steps} steps): "
                          "the learning rate never reaches its peak", level="warning")

    def _resumable_step(self) -> int | None:
        if not self.opts.resume:
            return None
        last = latest_checkpoint(self.workdir / "checkpoints")
        return int(last.name.split("-")[1]) if last is not None else None

    # ---- 2. evaluate before -------------------------------------------------------------------
    def evaluate_before(self) -> None:
        """The pre-trained model's metrics and zero-shot weights on every dataset (cached)."""
        t0 = time.perf_counter()
        self.sink.emit("phase", phase="before_eval", message="evaluating the pre-trained model")
        self.fingerprint = weights_fingerprint(self.model)
        self.before: dict[str, dict] = {}
        self.zs_w: dict[str, torch.Tensor] = {}  # the pre-trained text tower's zero-shot weights
        self.per_image: dict[str, dict] = {}  # dataset → before/after correctness vectors (the intervals' input)
        hits = 0
        for i, es in enumerate(self.data.all):
            m, keep, hit = before_metrics(self.model, es, self.pre, key=self._before_key(self.fingerprint, es),
                                          cache=self.cache, **self._eval_kw())
            hits += hit
            self.before[es.key], self.zs_w[es.key] = m, keep["zs_weights"]
            self.per_image[es.key] = {"before": side_record(keep, m)}
            self.sink.emit("progress", phase="before_eval", done=i + 1, total=len(self.data.all))
        self.sink.log(f"before-side: {hits} of {len(self.data.all)} datasets served from cache")
        self.eval_s += time.perf_counter() - t0

    def _eval_kw(self) -> dict:
        e = self.spec.eval
        return dict(tokenizer=self.tokenizer, device=self.device, zero_shot=True, linear_probe=e.linear_probe,
                    ece=e.ece, seed=self.spec.seed, autocast=self.precision == "bf16")

    def _before_key(self, fingerprint: str, es: EvalSet) -> str:
        e = self.spec.eval
        flags = {"zs": e.zero_shot, "lp": e.linear_probe, "ece": e.ece}
        return before_key(self.spec.backbone, fingerprint, es, self.pre, flags, self.spec.seed)

    # ---- 3. build the training state ------------------------------------------------------------
    def build_state(self) -> None:
        """The head training starts from, then whatever the method's ``setup`` prepares."""
        target = self.data.target
        head = self.method.initial_head(self.spec.method.head_init, from_probe=self._lp_init_head,
                                        from_prompts=lambda: zs_head(self.zs_w[target.key]))
        self.st = TrainState(model=self.model, head=head.to(self.device) if head is not None else None,
                             classnames=target.classnames, templates=tuple(target.info.templates),
                             tokenizer=self.tokenizer, device=self.device, reference_state=self.opts.reference_state,
                             seed=self.spec.seed)
        # WiSE-FT interpolates from these (taken before ``setup``, which may attach adapters to the model)
        self.initial_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
        self.method.setup(self.st)
        self.initial_head = copy.deepcopy(self.st.head).cpu() if self.st.head is not None else None
        feats, labels = encode_images(self.model.visual, target.test, target.test_idx, self.pre, device=self.device)
        self.head_before_correct = self.head_correct(feats, labels, self.zs_w[target.key])
        self.target_head_before = self.head_before_correct.float().mean().item()

    def _lp_init_head(self) -> nn.Linear:
        # Fitted on the run's own training split, so the starting head does not depend on the
        # evaluation settings (whether the report's probe runs, or its lp_max_train cap).
        spec, data = self.spec, self.data
        key = content_key("lp-init", train_idx=idx_hash(data.train_idx), before=before_key(
            spec.backbone, self.fingerprint, data.target, self.pre, {"lp_init": True}, spec.seed))
        return lp_init_head(self.model, data.target, data.train_idx, self.pre, key=key, cache=self.cache,
                            device=self.device, seed=spec.seed).requires_grad_(True)

    # ---- 4. train -----------------------------------------------------------------------------
    def train(self) -> None:
        """One forward/backward on two images, then the training loop."""
        self._sanity_step()
        spec, o = self.spec, self.spec.optim
        cuda = self.device.type == "cuda"
        setup_device(self.device)
        if cuda:
            use_channels_last(self.model.visual)
            if self.st.reference is not None:
                use_channels_last(self.st.reference.tower)
        if o.compile:
            n = compile_tower(self.model.visual)
            self.sink.log(f"torch.compile: {n} modules of the image tower (the first steps compile them)")
        self.sink.emit("phase", phase="train", message=f"fine-tuning with {self.method.title} for {self.n_steps} steps")
        cfg = TrainConfig(total_steps=self.n_steps, batch_size=o.batch_size, micro_batch=o.micro_batch or o.batch_size,
                          lr=o.lr, weight_decay=o.weight_decay, warmup_steps=o.warmup_steps, grad_clip=o.grad_clip,
                          precision=self.precision, checkpoint_every=o.checkpoint_every, seed=spec.seed,
                          freeze_head=spec.method.freeze_head,
                          curve_steps=curve_steps(self.n_steps, spec.eval.curve_points), fused_adamw=cuda,
                          channels_last=cuda and tower_kind(self.model.visual) == "resnet")
        trainer = Trainer(self.method, self.st, self.data.train_images, self.data.train_idx, self.pre, cfg,
                          device=self.device, sink=self.sink, ckpt_root=self.workdir / "checkpoints",
                          spec_hash=spec.spec_hash(), should_stop=self.should_stop,
                          on_curve=self.curve_point if spec.eval.curve_points else None,
                          fault_hook=self.opts.fault_hook, accepted_hashes=spec.accepted_hashes(),
                          loader=loader_settings(self.device, spec.data.num_workers),
                          should_end=self._over_budget if spec.budget is not None else None)
        self.trained_curves = lambda: trainer.curves  # the curve points so far (restored on resume)
        self.trained: TrainResult = trainer.fit(resume=self.opts.resume)
        self.method.after_training(self.st)  # e.g. adapters folded in: everything after sees a plain model

    def _sanity_step(self) -> None:
        """A broken method or model fails here in seconds, not after the first long evaluation."""
        self.sink.emit("phase", phase="sanity", message="checking one training step")
        self.model.eval()
        images, labels = self.data.train_images.gather(self.data.train_idx[:2])
        x = self.pre.eval_batch(images)
        task, reg = self.method.loss(self.st, x.to(self.device), labels.to(self.device), torch.Generator().manual_seed(0))
        (task + reg).backward()
        self.model.zero_grad(set_to_none=True)
        if self.st.head is not None:
            self.st.head.zero_grad(set_to_none=True)

    def curve_point(self, step: int) -> dict:
        """A point of the accuracy-vs-step curves (step 0: the before-evaluation's numbers)."""
        if step == 0:
            return {"target": self.data.target.key, "target_head_acc": self.target_head_before,
                    "zs_acc": {k: m["zs_acc"] for k, m in self.before.items()}}
        return self.measure()

    def _over_budget(self) -> str | None:
        """A budget trial that already forgets clearly more than its budget ends training here (budget.py)."""
        from .budget import deltas_now, early_stop_reason, forgetting_points

        curves, b = self.trained_curves(), self.spec.budget
        before = {k: m["zs_acc"] for k, m in self.before.items()}
        controls = [es.key for es in self.data.controls]
        history = [forgetting_points(b.metric, *deltas_now(before, {k: v[i] for k, v in curves["zs_acc"].items()},
                                                              controls))
                   for i, step in enumerate(curves["steps"]) if step > 0]
        return early_stop_reason(b, history)

    # ---- scoring the weights as they are now (curves, after, WiSE-FT) ---------------------------
    def measure(self) -> dict:
        """Zero-shot accuracy of the current weights on every dataset and the target head's accuracy."""
        self.model.eval()
        out: dict = {"target": self.data.target.key, "zs_acc": {}}
        for es in self.data.all:
            feats, labels = encode_images(self.model.visual, es.test, es.test_idx, self.pre, device=self.device)
            w = self.zs_weights_now(es)
            out["zs_acc"][es.key] = zs_acc_or_none(feats, labels, w, es.classnames)  # None: unmeasurable
            if es is self.data.target:
                out["target_head_acc"] = self.head_acc(feats, labels, w)
        return out

    def tuned_zs_weights(self, es: EvalSet) -> torch.Tensor | None:
        """Zero-shot weights from the method's text tower as trained (None: the text tower is unchanged)."""
        w = self.method.zero_shot_weights(self.st, es.classnames, tuple(es.info.templates))
        return w.cpu() if w is not None else None

    def zs_weights_now(self, es: EvalSet) -> torch.Tensor:
        tuned = self.tuned_zs_weights(es)
        return tuned if tuned is not None else self.zs_w[es.key]

    def head_correct(self, feats: torch.Tensor, labels: torch.Tensor, zs_target: torch.Tensor) -> torch.Tensor:
        """Per test image, whether the run's classifier (its head, or zero-shot weights for a method
        without one) gets it right: the target's headline numbers and their intervals come from this."""
        if self.st.head is not None:
            with torch.no_grad():
                return self.st.head(feats.to(self.device)).float().cpu().argmax(1) == labels
        return (ZS_SCALE * feats @ zs_target.t()).argmax(1) == labels

    def head_acc(self, feats: torch.Tensor, labels: torch.Tensor, zs_target: torch.Tensor) -> float:
        """Accuracy of the run's classifier (``head_correct``'s mean)."""
        return self.head_correct(feats, labels, zs_target).float().mean().item()

    # ---- 5. evaluate after --------------------------------------------------------------------
    def evaluate_after(self) -> None:
        """The fine-tuned model's metrics on every dataset, the target head, earlier stages' heads."""
        t0 = time.perf_counter()
        self.sink.emit("phase", phase="after_eval", message="evaluating the fine-tuned model")
        # a sequence's next stage starts from these very weights: it reuses this evaluation as its before side
        fingerprint = weights_fingerprint(self.model) if self.opts.cache_after else None
        self._test_feats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.datasets = {}
        for i, es in enumerate(self.data.all):
            self.datasets[es.key] = self._evaluate_after_on(es, fingerprint)
            self.sink.emit("progress", phase="after_eval", done=i + 1, total=len(self.data.all))
        target = self.data.target
        self.head_after_correct = self.head_correct(*self.test_feats(target), self.zs_weights_now(target))
        self.target_head = {"before": self.target_head_before,
                            "after": self.head_after_correct.float().mean().item()}
        self.carried = {key: self._carried_head_acc(key, state) for key, state in (self.opts.carry_heads or {}).items()}
        self.eval_s += time.perf_counter() - t0

    def _evaluate_after_on(self, es: EvalSet, fingerprint: str | None) -> dict:
        tuned = self.tuned_zs_weights(es)
        m, keep = evaluate_model(self.model, es, self.pre, zs_weights=tuned if tuned is not None else self.zs_w[es.key],
                                 **self._eval_kw())
        if fingerprint is not None:
            remember_before(self.cache, self._before_key(fingerprint, es), m, keep)
        self.per_image[es.key]["after"] = side_record(keep, m)
        entry = {"role": "target" if es is self.data.target else "control", "title": es.info.title,
                 "num_classes": len(es.classnames), "source": es.info.source,
                 "before": {k: self.before[es.key].get(k) for k in METRIC_KEYS},
                 "after": {k: m.get(k) for k in METRIC_KEYS}}
        if tuned is not None:  # how the tuned image tower scores with the original text tower
            entry["after"]["zs_acc_pretrained_text"] = zs_acc_or_none(*self.test_feats(es), self.zs_w[es.key],
                                                                      es.classnames)
        return entry

    def test_feats(self, es: EvalSet) -> tuple[torch.Tensor, torch.Tensor]:
        """fp32 test embeddings of the fine-tuned model, which heads are scored on; encoded once."""
        if es.key not in self._test_feats:
            self._test_feats[es.key] = encode_images(self.model.visual, es.test, es.test_idx, self.pre,
                                                     device=self.device)
        return self._test_feats[es.key]

    def _carried_head_acc(self, key: str, state: dict[str, torch.Tensor]) -> float:
        feats, labels = self.test_feats(next(e for e in self.data.all if e.key == key))
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0]).to(self.device)
        head.load_state_dict(state)
        with torch.no_grad():
            return accuracy(head(feats.to(self.device)).float().cpu(), labels)

    # ---- 6. WiSE-FT ---------------------------------------------------------------------------
    def wise_ft(self) -> None:
        """θ_a = (1 − a)·θ_0 + a·θ_ft for every weight (head included), measured per alpha."""
        alphas = self.spec.eval.wise_ft_alphas
        self.wise = None
        if alphas and self.trained.stopped_early:
            self.sink.log("WiSE-FT skipped: training ended early (over the forgetting budget)")
        elif alphas:
            self.sink.emit("phase", phase="wise_ft", message=f"WiSE-FT sweep over {len(alphas)} alphas")
            self.wise = self._wise_ft_sweep(alphas)

    @torch.no_grad()
    def _wise_ft_sweep(self, alphas: tuple[float, ...]) -> dict:
        model, head, target = self.model, self.st.head, self.data.target.key
        ft_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        ft_head = copy.deepcopy(head) if head is not None else None
        out: dict = {"alphas": list(alphas), "target_head_acc": [], "mean_delta_zs_controls": [], "target_zs_acc": [],
                     "worst_delta_zs_control": []}
        try:
            for n_done, a in enumerate(alphas):
                model.load_state_dict(interpolate(self.initial_state, ft_state, a))
                if head is not None:
                    head.load_state_dict(interpolate(self.initial_head.state_dict(), ft_head.state_dict(), a))
                point = self.measure()
                out["target_zs_acc"].append(point["zs_acc"][target])
                out["target_head_acc"].append(point["target_head_acc"])
                # an unmeasurable zero-shot head (null before or now) has no change either
                deltas = [point["zs_acc"][es.key] - self.before[es.key]["zs_acc"] for es in self.data.controls
                          if point["zs_acc"][es.key] is not None and self.before[es.key]["zs_acc"] is not None]
                out["mean_delta_zs_controls"].append(sum(deltas) / len(deltas) if deltas else None)
                out["worst_delta_zs_control"].append(min(deltas) if deltas else None)
                self.sink.emit("progress", phase="wise_ft", done=n_done + 1, total=len(alphas))
        finally:
            model.load_state_dict(ft_state)
            if head is not None:
                head.load_state_dict(ft_head.state_dict())
        return out

    # ---- 7. write results ---------------------------------------------------------------------
    def write_results(self) -> dict:
        """Final weights first, then ``per_image.json``, then ``results.json`` (atomically, last: its
        presence means done) with the intervals drawn from the per-image vectors."""
        self.sink.emit("phase", phase="write", message="writing the fine-tuned weights and the report")
        results = self.results(self.save_final())
        vectors = write_per_image(self.workdir, self.per_image,
                                  {"before": self.head_before_correct, "after": self.head_after_correct})
        attach_intervals(results, vectors, self.spec.seed)
        validate_results(results)
        atomic_write_json(self.workdir / "results.json", results)
        self.sink.emit("phase", phase="done", message="finished")
        self.sink.emit("done", results="results.json")
        return results

    def save_final(self) -> dict[str, str]:
        """``final/model.safetensors`` (or what the method exports instead, e.g. a LoRA adapter) and the
        head: the artefacts, by path relative to the run."""
        final = self.workdir / "final"
        final.mkdir(exist_ok=True)
        artifacts = {}
        for key, filename, tensors, extra in self.method.final_weights(self.st):
            save_tensors_atomic(final / filename, tensors,
                                metadata={"backbone": self.spec.backbone, "spec_hash": self.spec.spec_hash(), **extra})
            artifacts[key] = f"final/{filename}"
        if self.st.head is not None:
            save_tensors_atomic(final / "head.safetensors", self.st.head.state_dict(),
                                metadata={"classnames": "\n".join(self.data.target.classnames)})
            artifacts["head"] = "final/head.safetensors"
        return artifacts

    def results(self, artifacts: dict[str, str]) -> dict:
        """The ``results.json`` document (schema in docs/CONTRACTS.md)."""
        spec, tr = self.spec, self.trained
        results = {
            "schema": SCHEMA, "spec": spec.to_dict(), "spec_hash": spec.spec_hash(), "name": spec.name,
            "target": self.data.target.key, "method": spec.method.name, "backbone": spec.backbone,
            "datasets": self.datasets, "target_head_acc": self.target_head,
            "summary": forgetting_summary(self.datasets, self.target_head),
            "curves": tr.curves, "wise_ft": self.wise,
            "training": {"steps": tr.steps, "batch_size": spec.optim.batch_size, "micro_batch": tr.micro_batch,
                         "accum": tr.accum, "backoffs": tr.backoffs, "final_loss": tr.final_loss,
                         "resumed_from": tr.resumed_from, "device": str(self.device), "precision": self.precision,
                         "n_train": len(self.data.train_idx), "stopped_early": tr.stopped_early},
            "timing": {"total_s": time.perf_counter() - self.t_all, "train_s": tr.seconds, "eval_s": self.eval_s,
                       "started_at": self.started,
                       "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
            "versions": versions(), "artifacts": artifacts,
        }
        if self.opts.carry_heads:
            results["carried_heads_acc"] = self.carried
        return results
