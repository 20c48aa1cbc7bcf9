"""The training loop: AdamW, warm-up + cosine, clipping, AMP, gradient accumulation, OOM back-off,
atomic checkpoints, exact resume and stop requests at step boundaries."""
from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .accel import make_optimizer
from .batches import BatchPlan, StepBatches, TrainImages, step_loader
from .checkpoint import complete_checkpoints, load_checkpoint, save_checkpoint
from .data.catalog import ImageSet
from .errors import Cancelled, Diverged, InvalidCheckpoint, OutOfMemory
from .evaluate import Preprocessor
from .events import EventSink
from .methods.base import Method, TrainState

FAULT_OOM_ENV = "LDIFS_FAULT_OOM_ABOVE"  # test seam: simulate OOM while micro-batch > N


@dataclass
class TrainConfig:
    total_steps: int
    batch_size: int
    micro_batch: int
    lr: float
    weight_decay: float
    warmup_steps: int
    grad_clip: float | None
    precision: str  # fp32 | bf16 | fp16 (resolved, not "auto")
    checkpoint_every: int
    seed: int
    freeze_head: bool = False
    curve_steps: tuple[int, ...] = ()
    fused_adamw: bool = False  # one-kernel AdamW (the runner turns it on for CUDA)
    channels_last: bool = False  # NHWC input batches (ResNet towers on CUDA)


def warmup_cosine(step: int, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up over ``warmup`` updates, then cosine to 0 at ``total``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e))


@dataclass
class TrainResult:
    steps: int
    micro_batch: int
    accum: int
    backoffs: list[dict] = field(default_factory=list)
    final_loss: float | None = None
    curves: dict = field(default_factory=dict)
    seconds: float = 0.0
    resumed_from: int | None = None
    stopped_early: dict | None = None  # {"step", "reason"} when ``should_end`` ended training before the last step


IN_PROCESS = {"num_workers": 0, "pin_memory": False, "persistent_workers": False}


class Trainer:
    """Runs ``method`` on ``train_set[train_idx]`` for ``cfg.total_steps`` updates.

    ``train_set`` is an ``ImageSet`` or its ``TrainImages`` (decoded images in the engine's store);
    ``loader`` the DataLoader settings (``batches.loader_settings``; default: in this process)."""

    def __init__(self, method: Method, st: TrainState, train_set: ImageSet | TrainImages, train_idx: torch.Tensor,
                 pre: Preprocessor, cfg: TrainConfig, *, device: torch.device, sink: EventSink,
                 ckpt_root: Path | None, spec_hash: str, should_stop: Callable[[], bool] = lambda: False,
                 on_curve: Callable[[int], dict] | None = None,
                 fault_hook: Callable[[int, int], None] | None = None, accepted_hashes: tuple[str, ...] = (),
                 loader: dict | None = None, should_end: Callable[[], str | None] | None = None):
        self.method, self.st, self.cfg = method, st, cfg
        self.images = train_set if isinstance(train_set, TrainImages) else TrainImages(train_set)
        self.train_set, self.train_idx, self.pre = self.images.ds, train_idx, pre
        self.plan = BatchPlan(train_idx, cfg.batch_size, cfg.seed)
        self.loader = dict(loader) if loader is not None else dict(IN_PROCESS)
        self.should_end = should_end  # asked after each curve point: a reason ends training there (no stop request)
        self.device, self.sink, self.ckpt_root, self.spec_hash = device, sink, ckpt_root, spec_hash
        self.should_stop, self.on_curve, self.fault_hook = should_stop, on_curve, fault_hook
        self.accepted_hashes = (spec_hash, *accepted_hashes)  # resume also from these (RunSpec.accepted_hashes)
        self.named = [(n, p) for n, p in method.trainable(st, freeze_head=cfg.freeze_head)]
        trainable_ids = {id(p) for _, p in self.named}
        for p in list(st.model.parameters()) + (list(st.head.parameters()) if st.head is not None else []):
            p.requires_grad_(id(p) in trainable_ids)
        self.params = [p for _, p in self.named]
        self.opt = make_optimizer(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=cfg.fused_adamw)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: warmup_cosine(s, cfg.warmup_steps, cfg.total_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=cfg.precision == "fp16" and device.type == "cuda")
        self.micro, self.backoffs = cfg.micro_batch, []
        self.curves: dict = {"steps": [], "target_head_acc": [], "zs_acc": {}}
        self.step = 0
        env = os.environ.get(FAULT_OOM_ENV)
        if env and self.fault_hook is None:
            limit = int(env)

            def simulated(_step: int, micro: int) -> None:
                if micro > limit:
                    raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (simulated: micro-batch {micro} > {limit})")

            self.fault_hook = simulated

    # ---- data order: a pure function of (seed, step), so a resumed run sees the same batches ----
    def batch_indices(self, step: int) -> torch.Tensor:
        return self.plan.indices(step)

    def batches(self) -> StepBatches:
        """The batches of the steps still to run (what the loader iterates)."""
        return StepBatches(self.plan, self.images, self.pre.train_crops, self.step, self.cfg.total_steps)

    # ---- checkpoints ------------------------------------------------------------------------
    def weights(self) -> dict[str, torch.Tensor]:
        return self.method.checkpoint_tensors(self.st)  # the whole model, or only what the method trains

    def save(self) -> Path | None:
        if self.ckpt_root is None:
            return None
        path = save_checkpoint(
            self.ckpt_root, self.step, weights=self.weights(),
            state={"spec_hash": self.spec_hash, "micro_batch": self.micro, "backoffs": self.backoffs,
                   "curves": self.curves, "total_steps": self.cfg.total_steps},
            optim_state={"opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                         "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state()},
        )
        self.sink.emit("checkpoint", step=self.step, path=str(path.relative_to(self.ckpt_root.parent)))
        return path

    def _restore_newest_valid(self) -> bool:
        """Restore the newest checkpoint that verifies; say which ones were skipped and why.

        Returns False when there is none. A run whose every checkpoint is damaged (or of another spec)
        fails with all the reasons instead of silently starting over."""
        reasons = []
        for path in reversed(complete_checkpoints(self.ckpt_root)):
            try:
                self.restore(path)
            except InvalidCheckpoint as e:
                reasons.append(str(e))
                self.sink.log(f"skipped a damaged checkpoint: {e}")
                self.sink.emit("checkpoint_skipped", checkpoint=path.name, reason=str(e))
                continue
            return True
        if reasons:
            raise InvalidCheckpoint("no checkpoint of this run can be resumed: " + "; ".join(reasons[:3]))
        return False

    def restore(self, path: Path) -> None:
        weights, state, optim_state = load_checkpoint(path, spec_hash=self.accepted_hashes)
        self.method.restore_tensors(self.st, weights)
        self.opt.load_state_dict(optim_state["opt"])
        self.sched.load_state_dict(optim_state["sched"])
        self.scaler.load_state_dict(optim_state["scaler"])
        torch.set_rng_state(optim_state["rng"])
        self.step = int(state["step"])
        self.micro = int(state.get("micro_batch", self.micro))
        self.backoffs = list(state.get("backoffs", []))
        self.curves = state.get("curves", self.curves)

    # ---- one update ---------------------------------------------------------------------------
    def _update(self, step: int, batch: tuple) -> tuple[float, float, float]:
        _step, crops, y, gen_state = batch
        gen = torch.Generator()
        gen.set_state(gen_state)  # where the crops left the step's generator: the loss draws on from there
        if self.device.type == "cuda":  # uint8 crosses the bus (4x fewer bytes); normalised on the GPU
            crops = crops.to(self.device, non_blocking=True)
        x = self.pre.normalise(crops)
        b = len(y)
        self.opt.zero_grad(set_to_none=True)
        task_sum = reg_sum = torch.zeros((), device=self.device)  # summed on the device: no host sync per micro-batch
        amp = self.cfg.precision in ("bf16", "fp16")
        fmt = torch.channels_last if self.cfg.channels_last else torch.contiguous_format
        dtype = torch.bfloat16 if self.cfg.precision == "bf16" else torch.float16
        for start in range(0, b, self.micro):
            if self.fault_hook is not None:
                self.fault_hook(step, self.micro)
            xb = x[start:start + self.micro].to(self.device, non_blocking=True, memory_format=fmt)
            yb = y[start:start + self.micro].to(self.device, non_blocking=True)
            with torch.autocast(self.device.type, dtype=dtype, enabled=amp):
                task, reg = self.method.loss(self.st, xb, yb, gen)
            share = len(yb) / b
            loss = (task + reg).float() * share
            self.scaler.scale(loss).backward()
            task_sum = task_sum + task.detach().float() * share
            reg_sum = reg_sum + reg.detach().float() * share
        # The one host sync of a step, where the step is logged anyway; before the update, so a
        # non-finite loss never reaches the weights.
        task_f, reg_f = (float(v) for v in torch.stack([task_sum, reg_sum]).cpu())
        if not math.isfinite(task_f + reg_f):
            raise Diverged(f"loss became {task_f + reg_f} at step {step + 1}; the last good checkpoint is kept "
                           "(try a lower learning rate)")
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        lr = self.opt.param_groups[0]["lr"]
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return task_f, reg_f, lr

    def _update_with_backoff(self, step: int, batch: tuple) -> tuple[float, float, float]:
        while True:
            try:
                return self._update(step, batch)
            except Exception as e:  # OOM is handled outside the step so its frames are freed
                if not _is_oom(e):
                    raise
                msg = str(e).splitlines()[0][:200]
            self.opt.zero_grad(set_to_none=True)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if self.micro <= 1:
                raise OutOfMemory(f"out of memory even at micro-batch 1 (step {step + 1}): use a smaller backbone "
                                  "or a GPU with more memory")
            self.micro = max(1, self.micro // 2)
            accum = math.ceil(self.cfg.batch_size / self.micro)
            self.backoffs.append({"step": step + 1, "micro_batch": self.micro, "accum": accum})
            self.sink.emit("oom_backoff", step=step + 1, micro_batch=self.micro, accum=accum,
                           message=f"out of memory: micro-batch halved to {self.micro} "
                                   f"(x{accum} accumulation keeps the batch at {self.cfg.batch_size}); {msg}")

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self, *, resume: bool = False) -> TrainResult:
        resumed_from = None
        if resume and self.ckpt_root is not None and self._restore_newest_valid():
            resumed_from = self.step
            self.sink.log(f"resumed from checkpoint at step {self.step}")
        if self.step == 0 and not self.curves["steps"] and self.on_curve is not None:
            self._record_curve(0)
        if self.step == 0:
            self.save()  # the true initial model is checkpoint 0
        self.st.model.train()
        if self.st.head is not None:
            self.st.head.train()
        t_start = time.perf_counter()
        last_loss = None
        batches = iter(step_loader(self.batches(), self.loader))
        stopped_early = None
        while self.step < self.cfg.total_steps:
            if self.should_stop():
                path = self.save()
                rel = str(path.relative_to(self.ckpt_root.parent)) if path else None
                self.sink.emit("stopped", step=self.step, checkpoint=rel)
                raise Cancelled(f"stopped at step {self.step} on request; resume continues from there")
            t0 = time.perf_counter()
            batch = next(batches)
            if batch[0] != self.step:  # the loader runs in step order; anything else is a bug, not data
                raise RuntimeError(f"data loader gave the batch of step {batch[0]} at step {self.step}")
            task, reg, lr = self._update_with_backoff(self.step, batch)
            self.step += 1
            self.sink.step = self.step
            dt = time.perf_counter() - t0
            last_loss = task + reg
            self.sink.emit("step", step=self.step, total_steps=self.cfg.total_steps, loss=last_loss, task_loss=task,
                           reg_loss=reg, lr=lr, samples_per_s=self.cfg.batch_size / max(dt, 1e-9),
                           micro_batch=self.micro, accum=math.ceil(self.cfg.batch_size / self.micro))
            if self.step in self.cfg.curve_steps and self.on_curve is not None:
                self._record_curve(self.step)
                why = self.should_end() if self.should_end is not None and self.step < self.cfg.total_steps else None
                if why:
                    stopped_early = {"step": self.step, "reason": why}
                    self.sink.log(f"training ended early at step {self.step}: {why}")
                    break
                self.st.model.train()
                if self.st.head is not None:
                    self.st.head.train()
            if self.step % self.cfg.checkpoint_every == 0 or self.step == self.cfg.total_steps:
                self.save()
        self.st.model.eval()
        if self.st.head is not None:
            self.st.head.eval()
        return TrainResult(steps=self.step, micro_batch=self.micro, accum=math.ceil(self.cfg.batch_size / self.micro),
                           backoffs=self.backoffs, final_loss=last_loss, curves=self.curves,
                           seconds=time.perf_counter() - t_start, resumed_from=resumed_from,
                           stopped_early=stopped_early)

    def _record_curve(self, step: int) -> None:
        point = self.on_curve(step) if self.on_curve else {}
        self.curves["steps"].append(step)
        self.curves["target_head_acc"].append(point.get("target_head_acc"))
        for key, acc in point.get("zs_acc", {}).items():
            self.curves["zs_acc"].setdefault(key, []).append(acc)
        for key, acc in point.get("zs_acc", {}).items():
            self.sink.emit("eval", step=step, dataset=key, zs_acc=acc, head_acc=point.get("target_head_acc")
                           if key == point.get("target") else None)
