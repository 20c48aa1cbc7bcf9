"""Preprocessed evaluation tensors cached on disk, so evaluation is not bound by image decoding.

A (dataset split, preprocessing) pair is decoded once, resized (shorter side to S, bicubic, antialiased)
and centre-cropped to ``S x S`` — open_clip's evaluation transform — and stored as uint8 in a
safetensors file (never pickle) named by a content hash of everything that determines it. The hash
inputs are stored in the file's metadata and checked on load; a damaged or mismatching file is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .catalog import DataContext, DatasetInfo, ImageSet
from .splits import hash_order

CACHE_VERSION = 1
SUBDIR = "eval-tensors"
PREPROCESS = "resize-shorter-bicubic-antialias+center-crop"


def resize_center_crop(img: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 ``[3,H,W]`` → uint8 ``[3,size,size]``: shorter side to ``size`` (bicubic), then centre crop."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as F

    out = F.resize(img, [size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return F.center_crop(out, [size, size])


def _data_stamp(info: DatasetInfo, ctx: DataContext) -> str:
    """What changes when the files behind a dataset change (uploads are immutable; the rest by folder mtime)."""
    if info.source == "upload":
        return info.key
    folder = Path(ctx.root) / info.key
    try:
        return f"{info.key}@{folder.stat().st_mtime_ns}"
    except OSError:
        return info.key


def cache_inputs(info: DatasetInfo, split: str, ctx: DataContext, ds: ImageSet, image_size: int,
                 max_samples: int | None) -> dict:
    """Everything the cached tensors depend on (hashed into the file name, stored in its metadata)."""
    labels = ds.labels().to(torch.int64).numpy()
    return {
        "version": CACHE_VERSION,
        "dataset": info.key,
        "source": info.source,
        "split": split,
        "n": len(ds),
        "labels_sha256": hashlib.sha256(labels.tobytes()).hexdigest(),
        "data": _data_stamp(info, ctx),
        "image_size": int(image_size),
        "preprocess": PREPROCESS,
        "max_samples": max_samples,
    }


def cache_key(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def subset_for(n: int, max_samples: int | None) -> np.ndarray:
    """The deterministic evaluation subset (all items when ``max_samples`` is None)."""
    if max_samples is None or max_samples >= n:
        return np.arange(n, dtype=np.int64)
    return np.sort(hash_order(n, seed=0, salt=0xE7A1)[:max_samples])


def cached_eval_tensors(
    info: DatasetInfo,
    split: str,
    ctx: DataContext,
    image_size: int,
    cache_dir: str | os.PathLike,
    *,
    max_samples: int | None = None,
    workers: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Preprocessed uint8 images ``[N,3,S,S]`` and int64 labels ``[N]`` of one split, from cache if present.

    Args:
        info: the dataset (as resolved, so overrides do not matter: images and labels only).
        split: ``"train"`` or ``"test"``.
        ctx: where the datasets live.
        image_size: S, the backbone's input size.
        cache_dir: the cache root; files go under ``<cache_dir>/eval-tensors/``.
        max_samples: keep a deterministic subset of at most this many items.
        workers: decoding threads (default: up to 8).

    Raises:
        DatasetUnavailable: the dataset cannot be loaded.
    """
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1, got {image_size}")
    ds = info.load(split, ctx)
    inputs = cache_inputs(info, split, ctx, ds, image_size, max_samples)
    folder = Path(cache_dir) / SUBDIR
    path = folder / f"{cache_key(inputs)}.safetensors"
    cached = _read(path, inputs)
    if cached is not None:
        return cached
    idx = subset_for(len(ds), max_samples)
    images = torch.empty((len(idx), 3, image_size, image_size), dtype=torch.uint8)
    labels = torch.empty(len(idx), dtype=torch.int64)

    def work(pos: int) -> None:
        img, y = ds[int(idx[pos])]
        images[pos] = resize_center_crop(img, image_size)
        labels[pos] = int(y)

    n_workers = workers or min(8, os.cpu_count() or 1)
    if n_workers <= 1:
        for pos in range(len(idx)):
            work(pos)
    else:
        with ThreadPoolExecutor(n_workers) as pool:
            list(pool.map(work, range(len(idx)), chunksize=64))
    _write(path, images, labels, inputs)
    return images, labels


def _read(path: Path, inputs: dict) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if json.loads(meta.get("inputs", "null")) != inputs:
                return None
            images, labels = f.get_tensor("images"), f.get_tensor("labels")
    except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt, never trusted
        return None
    s = inputs["image_size"]
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, s, s) \
            or labels.dtype != torch.int64 or len(labels) != len(images):
        return None
    return images, labels


def _write(path: Path, images: torch.Tensor, labels: torch.Tensor, inputs: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file({"images": images.contiguous(), "labels": labels.contiguous()}, tmp,
                  metadata={"inputs": json.dumps(inputs, sort_keys=True)})
        os.replace(tmp, path)  # concurrent writers of one key produce identical files; last one wins
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
