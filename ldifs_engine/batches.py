"""Training batches: a pure function of (seed, step), built from decoded images kept in the engine's
store and delivered by a torch ``DataLoader`` (workers, pinned memory and persistent workers where a GPU is).

Why per step: a resumed run must see exactly the batches the uninterrupted run saw, so the batch of step
``s`` depends only on the run's seed, its training indices, the batch size and ``s``. The loader
iterates over steps (item ``i`` is the batch of step ``start + i``): workers prepare the next batches
while the model trains, and a resume starts the loader at the restored step.

What is cached: the deterministic part of a training image — its decoded uint8 RGB pixels at full size —
one store entry per image, keyed by the dataset's content (as the evaluation tensors are: files, labels),
the split, the image's index and the decode version. The random part, each step's RandomResizedCrop, is
drawn from the step's own generator in the worker, on the full-size image as before, so a batch read from
the store is bit-identical to one decoded from the files. The method's loss keeps drawing from that
generator, so its state after the crops travels with the batch. In-memory sets (the built-in concept
world) are uint8 tensors already: there is nothing to decode, they are sliced directly.
"""
from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from .cache import ByteCache, NullCache, content_key, get_tensors, tensors_to_bytes
from .data.catalog import ImageSet

TRAIN_CACHE_VERSION = 1
WORKERS_ENV = "LDIFS_DATA_WORKERS"  # operator setting: loader workers when the spec leaves data.num_workers at 0
MAX_AUTO_WORKERS = 4

Crop = Callable[[Sequence[torch.Tensor] | torch.Tensor, torch.Generator], torch.Tensor]


class TrainImages:
    """The images of one training split: sliced from memory, or decoded once and then read from the store."""

    def __init__(self, ds: ImageSet, store: ByteCache | None = None, identity: dict | None = None):
        self.ds = ds
        self.store = store if store is not None else NullCache()
        self.identity = dict(identity or {})
        self.in_memory = isinstance(getattr(ds, "images", None), torch.Tensor)
        self.labels = ds.labels().to(torch.int64)
        self.decoded = 0  # images decoded by this object in this process (a warm run decodes none)
        self.hits = 0

    def key(self, i: int) -> str:
        return content_key("train-image", v=TRAIN_CACHE_VERSION, data=self.identity, i=int(i))

    def image(self, i: int) -> torch.Tensor:
        """uint8 ``[3,H,W]`` of image ``i`` (from the store; decoded and stored on a miss)."""
        key = self.key(i)
        got = get_tensors(self.store, key)
        if got is not None:
            img = got[0].get("image")
            if img is not None and img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == 3:
                self.hits += 1
                return img
            delete = getattr(self.store, "delete", None)
            if delete is not None:
                delete(key)  # well-formed safetensors that is not an image of ours: recompute
        img, _ = self.ds[int(i)]
        self.decoded += 1
        self.store.set(key, tensors_to_bytes({"image": img}))
        return img

    def gather(self, idx: torch.Tensor) -> tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor]:
        """Images (a list, or one tensor for in-memory sets) and int64 labels of ``idx``."""
        if self.in_memory:
            return self.ds.images[idx], self.labels[idx]
        return [self.image(int(i)) for i in idx], self.labels[idx]


@dataclass
class BatchPlan:
    """Which images make the batch of a step, and the generator its augmentation draws from."""

    train_idx: torch.Tensor
    batch_size: int
    seed: int
    _perms: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(len(self.train_idx), generator=g)}  # one epoch kept
        return self._perms[epoch]

    def indices(self, step: int) -> torch.Tensor:
        """Dataset indices of the batch of ``step`` (epochs are seeded permutations of ``train_idx``)."""
        n, b = len(self.train_idx), self.batch_size
        pos = torch.arange(step * b, (step + 1) * b)
        out = torch.empty(b, dtype=torch.long)
        for epoch in pos.div(n, rounding_mode="floor").unique().tolist():
            mask = pos.div(n, rounding_mode="floor") == epoch
            out[mask] = self.train_idx[self._perm(epoch)[pos[mask] % n]]
        return out

    def generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed + 1) * 7_919 + step * 104_729)


class StepBatches:
    """Map-style dataset over steps ``start .. stop-1``; item ``i`` is the batch of step ``start + i``:
    ``(step, uint8 crops [B,3,S,S], int64 labels [B], generator state after the crops)``."""

    def __init__(self, plan: BatchPlan, images: TrainImages, crop: Crop, start: int, stop: int):
        self.plan, self.images, self.crop = plan, images, crop
        self.start, self.stop = int(start), int(stop)

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        step = self.start + int(i)
        gen = self.plan.generator(step)
        images, labels = self.images.gather(self.plan.indices(step))
        crops = self.crop(images, gen)
        return step, crops, labels, gen.get_state()


def loader_settings(device: torch.device, requested: int = 0) -> dict:
    """DataLoader keywords for training: ``requested`` workers (the spec's ``data.num_workers``), else
    ``$LDIFS_DATA_WORKERS``, else 0 on the CPU (the model needs the cores; decoding is cached) and up to
    4 on a GPU; pinned memory on CUDA; persistent workers (kept across curve evaluations) when there are any."""
    workers = int(requested)
    if workers <= 0:
        raw = os.environ.get(WORKERS_ENV, "").strip()
        if raw.isdigit():
            workers = int(raw)
        elif device.type == "cuda":
            workers = max(1, min(MAX_AUTO_WORKERS, (os.cpu_count() or 2) - 1))
    out: dict = {"num_workers": workers, "pin_memory": device.type == "cuda", "persistent_workers": workers > 0}
    if workers > 0:
        out["prefetch_factor"] = 2
    return out


def _worker_ignores_sigint(_worker_id: int) -> None:
    # A stop is one SIGINT to the engine's process group (tasks/jobs.py): the engine checkpoints at the next
    # step boundary. Workers killed by it would leave the engine waiting on a dead loader and fail the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _StepLoader(torch.utils.data.DataLoader):
    """A DataLoader whose workers are born ignoring SIGINT.

    ``worker_init_fn`` alone leaves a window: a stop that arrives between a worker's fork and its start-up
    code kills it. While the workers are forked, the parent's SIGINT handler is a recorder (the children
    inherit it, so a SIGINT there is swallowed until ``worker_init_fn`` ignores it for good); a SIGINT the
    parent receives in that window is re-raised once its own handler is back, so no stop is lost."""

    def _get_iterator(self):  # noqa: ANN202 — torch's private hook, returns torch's iterator
        if self.num_workers == 0 or threading.current_thread() is not threading.main_thread():
            return super()._get_iterator()
        seen: list[int] = []
        previous = signal.signal(signal.SIGINT, lambda signum, _frame: seen.append(signum))
        try:
            return super()._get_iterator()
        finally:
            signal.signal(signal.SIGINT, previous)
            if seen:
                signal.raise_signal(signal.SIGINT)


def step_loader(batches: StepBatches, settings: dict) -> torch.utils.data.DataLoader:
    """Batches in step order (``batch_size=None``: every item is a whole batch already). The loader gets
    its own generator: left to the global one, each new iterator would draw a worker seed from it and
    shift every later global draw (the batches themselves use no global randomness)."""
    extra = {"worker_init_fn": _worker_ignores_sigint} if settings.get("num_workers", 0) > 0 else {}
    return _StepLoader(batches, batch_size=None, shuffle=False, generator=torch.Generator().manual_seed(0),
                       **extra, **settings)

