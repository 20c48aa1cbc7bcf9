"""Evaluation: preprocessing, image features, zero-shot / linear-probe accuracy and ECE.

The pre-trained model's numbers for a (backbone weights, dataset, templates, preprocessing) key
never change, so ``before_metrics`` goes through a byte cache keyed by a content hash.
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2 import functional as TF

from .cache import ByteCache, NullCache, content_key, get_tensors, tensors_to_bytes
from .data.catalog import DatasetInfo, ImageSet
from .heads import fit_linear_probe, zero_shot_weights, zs_note, ZS_SCALE
from .metrics import accuracy, expected_calibration_error

CACHE_VERSION = 2  # 2: per-image correctness kept, zero-shot notes, LP ECE after temperature scaling


class Preprocessor:
    """uint8 images → normalised float batches at the tower's size (eval: resize + centre crop;
    train: RandomResizedCrop with scale 0.9–1, as open_clip's train transform)."""

    def __init__(self, cfg: dict):
        self.size = int(cfg["size"])
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        self.cfg = {"size": self.size, "mean": list(cfg["mean"]), "std": list(cfg["std"])}

    def _fit(self, img: torch.Tensor) -> torch.Tensor:
        if img.shape[-2:] == (self.size, self.size):
            return img
        img = TF.resize(img, self.size, antialias=True)
        return TF.center_crop(img, [self.size, self.size])

    fit = _fit  # uint8 [3,H,W] → uint8 [3,S,S]: what the evaluation tensor cache stores

    @property
    def transform_id(self) -> dict:
        """What the uint8 output of ``fit`` depends on (part of the tensor cache's key)."""
        return {"size": self.size, "fit": "resize-shorter-antialias+center-crop", "v": 1}

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(batch.device), self.std.to(batch.device)
        return (batch.float() / 255.0 - mean) / std

    def eval_batch(self, images: Sequence[torch.Tensor] | torch.Tensor) -> torch.Tensor:
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[-2:] == (self.size, self.size):
            return self._normalise(images)
        return self._normalise(torch.stack([self._fit(im) for im in images]))

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B,3,S,S]`` → normalised float, on the batch's device."""
        return self._normalise(batch)

    def train_batch(self, images: Sequence[torch.Tensor] | torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """``train_crops`` normalised."""
        return self._normalise(self.train_crops(images, gen))

    def train_crops(self, images: Sequence[torch.Tensor] | torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """uint8 ``[B,3,S,S]``: a RandomResizedCrop of each full-size image, drawn from ``gen`` in order."""
        out = []
        for im in images:
            h, w = im.shape[-2:]
            area = h * w
            for _ in range(10):
                scale = 0.9 + 0.1 * torch.rand((), generator=gen).item()
                logr = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand((), generator=gen).item()
                ratio = math.exp(logr)
                cw = int(round(math.sqrt(area * scale * ratio)))
                ch = int(round(math.sqrt(area * scale / ratio)))
                if 0 < cw <= w and 0 < ch <= h:
                    top = int(torch.randint(0, h - ch + 1, (), generator=gen))
                    left = int(torch.randint(0, w - cw + 1, (), generator=gen))
                    break
            else:
                ch, cw = min(h, w), min(h, w)
                top, left = (h - ch) // 2, (w - cw) // 2
            out.append(TF.resized_crop(im, top, left, ch, cw, [self.size, self.size], antialias=True))
        return torch.stack(out)


def subset_indices(n: int, cap: int | None, seed: int) -> torch.Tensor:
    """A seeded subset of ``range(n)`` of size ``cap`` (all, in order, when cap is None or ≥ n)."""
    if cap is None or cap >= n:
        return torch.arange(n)
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:cap].sort().values


def gather(ds: ImageSet, idx: torch.Tensor) -> tuple[list[torch.Tensor] | torch.Tensor, torch.Tensor]:
    """Images and labels of ``idx`` (one tensor slice for in-memory sets)."""
    images = getattr(ds, "images", None)
    if isinstance(images, torch.Tensor):
        return images[idx], ds.labels()[idx]
    items = [ds[int(i)] for i in idx]
    return [im for im, _ in items], torch.tensor([int(y) for _, y in items], dtype=torch.long)


@torch.no_grad()
def encode_images(visual: nn.Module, ds: ImageSet, idx: torch.Tensor, pre: Preprocessor, *,
                  device: torch.device, batch_size: int = 256, autocast: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 image embeddings ``[N, E]`` and labels of the samples ``idx``."""
    was_training = visual.training
    visual.eval()
    feats, labels = [], []
    cache = getattr(ds, "eval_cache", None)  # preprocessed tensors in the engine's store (data/cache_tensors.py)

    def load(i: int):
        sl = idx[i:i + batch_size]
        images, y = cache.batch(ds, sl, pre.fit, pre.transform_id) if cache is not None else gather(ds, sl)
        if device.type == "cuda" and isinstance(images, torch.Tensor):
            images = images.pin_memory()  # uint8 crosses the bus (4x fewer bytes); normalised on the GPU
        return images, y

    try:
        with ThreadPoolExecutor(1) as pool:  # the next batch is read/decoded while the model runs
            nxt = pool.submit(load, 0) if len(idx) else None
            for i in range(0, len(idx), batch_size):
                images, y = nxt.result()
                nxt = pool.submit(load, i + batch_size) if i + batch_size < len(idx) else None
                if isinstance(images, torch.Tensor) and images.ndim == 4:
                    images = images.to(device, non_blocking=True)
                x = pre.eval_batch(images).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    emb = visual(x)
                if isinstance(emb, tuple):
                    emb = emb[0]
                feats.append(F.normalize(emb.float(), dim=-1).cpu())
                labels.append(y)
    finally:
        visual.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@dataclass
class EvalSet:
    """One dataset prepared for evaluation: its info, test split and (optional) probe train split."""

    key: str
    info: DatasetInfo
    test: ImageSet
    test_idx: torch.Tensor
    train: ImageSet | None = None
    train_idx: torch.Tensor | None = None

    @property
    def classnames(self) -> tuple[str, ...]:
        return tuple(self.info.classnames)


def zs_metrics(feats: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, *, ece: bool,
               classnames: Sequence[str] | None = None) -> dict:
    """Zero-shot accuracy / ECE (logits = 100 · cos, as the paper reports them) and the per-image
    correctness vector ``zs_correct``. With ``classnames`` given, a head that cannot tell some classes
    apart yields ``None`` for both numbers and ``zs_note`` saying why (a tie-break is not a measurement)."""
    note = zs_note(weights, classnames) if classnames is not None else None
    logits = ZS_SCALE * feats @ weights.t()
    correct = logits.argmax(1) == labels
    if note is not None:
        return {"zs_acc": None, "zs_ece": None, "zs_note": note, "zs_correct": None}
    return {"zs_acc": accuracy(logits, labels), "zs_ece": expected_calibration_error(logits, labels) if ece else None,
            "zs_note": None, "zs_correct": correct}


def lp_metrics(train_feats, train_labels, test_feats, test_labels, num_classes: int, *, ece: bool,
               seed: int) -> tuple[dict, nn.Linear, dict]:
    """Linear-probe accuracy, its ECE after temperature scaling on the probe's held-out share (None
    when the training split is too small to hold one out), and the per-image ``lp_correct``."""
    head, info = fit_linear_probe(train_feats, train_labels, num_classes, seed=seed)
    with torch.no_grad():
        logits = head(test_feats)
    t = info.get("temperature")
    out = {"lp_acc": accuracy(logits, test_labels),
           "lp_ece": expected_calibration_error(logits / t, test_labels) if ece and t else None,
           "lp_temperature": t, "lp_correct": logits.argmax(1) == test_labels}
    return out, head, info


def zs_acc_or_none(feats: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor,
                   classnames: Sequence[str]) -> float | None:
    """Zero-shot accuracy, or None when the head cannot tell the classes apart (curves, WiSE-FT)."""
    return zs_metrics(feats, labels, weights, ece=False, classnames=classnames)["zs_acc"]


CORRECT_KEYS = ("zs_correct", "lp_correct")  # per-image vectors: kept as tensors, never in the metrics dict


def evaluate_model(model: nn.Module, es: EvalSet, pre: Preprocessor, *, tokenizer, device: torch.device,
                   zero_shot: bool, linear_probe: bool, ece: bool, seed: int, autocast: bool = False,
                   zs_weights: torch.Tensor | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Metrics of ``model`` on one dataset, and the tensors worth keeping: the zero-shot weights and
    the per-image correctness vectors (``zs_correct``, ``lp_correct``; uint8, test-image order) the
    report's paired intervals need."""
    out: dict = {"zs_acc": None, "zs_ece": None, "lp_acc": None, "lp_ece": None, "zs_note": None,
                 "n_test": len(es.test_idx)}
    keep: dict[str, torch.Tensor] = {}
    test_f, test_y = encode_images(model.visual, es.test, es.test_idx, pre, device=device, autocast=autocast)
    if zero_shot:
        if zs_weights is None:
            zs_weights = zero_shot_weights(model, tokenizer, es.classnames, es.info.templates, device=device).cpu()
        out.update(zs_metrics(test_f, test_y, zs_weights, ece=ece, classnames=es.classnames))
        keep["zs_weights"] = zs_weights
    if linear_probe and es.train is not None:
        tr_f, tr_y = encode_images(model.visual, es.train, es.train_idx, pre, device=device, autocast=autocast)
        lp, _head, info = lp_metrics(tr_f, tr_y, test_f, test_y, len(es.classnames), ece=ece, seed=seed)
        out.update(lp)
        out["lp_weight_decay"] = info["weight_decay"]
    for k in CORRECT_KEYS:
        v = out.pop(k, None)
        if v is not None:
            keep[k] = v.to(torch.uint8)
    return out, keep


def before_key(backbone_key: str, fingerprint: str, es: EvalSet, pre: Preprocessor, flags: dict, seed: int) -> str:
    """Content hash of everything the pre-trained model's numbers depend on."""
    import open_clip

    return content_key(
        "before", v=CACHE_VERSION, backbone=backbone_key, weights=fingerprint, dataset=es.key,
        source=es.info.source, classnames=list(es.classnames), templates=list(es.info.templates),
        n_test=len(es.test), test_idx=idx_hash(es.test_idx), pre=pre.cfg, flags=flags,
        # the probe's training images matter only when there is a probe
        n_train=len(es.train) if es.train is not None and flags.get("lp") else 0,
        train_idx=idx_hash(es.train_idx) if flags.get("lp") else None,
        seed=seed, torch=torch.__version__, open_clip=open_clip.__version__,
    )


def idx_hash(idx: torch.Tensor | None) -> str | None:
    import hashlib

    return None if idx is None else hashlib.sha256(idx.numpy().tobytes()).hexdigest()[:16]


def before_metrics(model: nn.Module, es: EvalSet, pre: Preprocessor, *, key: str, cache: ByteCache | None,
                   **kw) -> tuple[dict, dict[str, torch.Tensor], bool]:
    """Cached ``evaluate_model`` of the pre-trained model → (metrics, tensors, cache hit?)."""
    cache = cache if cache is not None else NullCache()
    got = get_tensors(cache, key)  # a damaged entry is dropped and recomputed, never trusted
    if got is not None and isinstance(got[1].get("metrics"), dict):
        return got[1]["metrics"], got[0], True
    metrics, keep = evaluate_model(model, es, pre, **kw)
    remember_before(cache, key, metrics, keep)
    return metrics, keep, False


def remember_before(cache: ByteCache, key: str, metrics: dict, keep: dict[str, torch.Tensor]) -> None:
    """Store what ``before_metrics`` would compute under ``key`` (also used to hand a continual
    sequence's next stage the evaluation its starting weights already had)."""
    cache.set(key, tensors_to_bytes(keep or {"_": torch.zeros(0)}, {"metrics": metrics}))


def lp_init_head(model: nn.Module, es: EvalSet, train_idx: torch.Tensor, pre: Preprocessor, *, key: str,
                 cache: ByteCache | None, device: torch.device, seed: int) -> nn.Linear:
    """The LP-FT starting head: a linear probe of the pre-trained features on the run's training split.

    Cached under ``key`` (the pre-trained side never changes); a damaged entry is refitted."""
    cache = cache if cache is not None else NullCache()
    got = get_tensors(cache, key)
    if got is not None:
        try:
            t, _ = got
            head = nn.Linear(t["weight"].shape[1], t["weight"].shape[0])
            head.load_state_dict(t)
            return head
        except Exception:  # noqa: BLE001 — never trust a damaged entry
            pass
    feats, labels = encode_images(model.visual, es.train, train_idx, pre, device=device)
    head, _ = fit_linear_probe(feats, labels, len(es.classnames), seed=seed)
    cache.set(key, tensors_to_bytes(dict(head.state_dict())))
    return head
