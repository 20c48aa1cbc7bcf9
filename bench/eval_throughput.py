"""Benchmark: the evaluation path against a bare forward, and a cold against a warm evaluation.

    python bench/eval_throughput.py --arch ViT-B-32 --images 256 --batch 64      # CPU, random weights
    python bench/eval_throughput.py --arch ViT-B-32 --images 4096 --batch 256 --device cuda --precision bf16

Data: a CIFAR-10 test split in torchvision's on-disk layout with random pixels (written to a temp
folder, MD5 check of the fake files skipped), evaluated at the tower's size (224 px for ViT-B-32).
  * cold  — first evaluation: decode, fit to the tower, store in the engine's diskcache store, encode;
  * warm  — the same evaluation again: tensors read from the store (must decode nothing), encode;
  * whole — the warm path plus zero-shot metrics (logits, accuracy, ECE): what an "after" side costs;
  * bare  — ``visual(x)`` alone on the same, already normalised tensors in memory.
Last line (machine-readable): ``whole_over_bare=<x> warm_over_cold=<y> warm_decoded=<n>``.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on shared cores
import logging
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from offline_setup import skip_torchvision_md5, write_fake_sets  # noqa: E402

from ldifs_engine.backbones import _add_builtin_configs, preprocess_cfg  # noqa: E402
from ldifs_engine.cache import DiskStore  # noqa: E402
from ldifs_engine.data import DATASETS, DataContext  # noqa: E402
from ldifs_engine.data.cache_tensors import attach_eval_cache  # noqa: E402
from ldifs_engine.evaluate import Preprocessor, encode_images, zs_metrics  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ldifs-concept-vit")
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None, choices=("fp32", "bf16"))
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    import open_clip

    _add_builtin_configs()
    skip_torchvision_md5()
    device = torch.device(args.device)
    bf16 = (args.precision or ("bf16" if device.type == "cuda" else "fp32")) == "bf16"
    torch.manual_seed(0)
    model = open_clip.create_model(args.arch, pretrained=None).to(device).eval()
    pre = Preprocessor(preprocess_cfg(model))
    with tempfile.TemporaryDirectory() as tmp:
        root = write_fake_sets(Path(tmp) / "datasets", n_train=1, n_test=args.images, sets=("cifar10",))
        ctx = DataContext(root=root)
        info = DATASETS.get("cifar10")
        store = DiskStore(Path(tmp) / "store")
        idx = torch.arange(args.images)
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
        print(f"device: {name}  arch: {args.arch}  image: {pre.size}px  images: {args.images}  batch: {args.batch}  "
              f"bf16: {bf16}")

        def evaluate(whole: bool) -> tuple[float, int]:
            ds = info.load("test", ctx)
            cache = attach_eval_cache(ds, info, "test", ctx, store)
            _sync(device)
            t0 = time.perf_counter()
            feats, labels = encode_images(model.visual, ds, idx, pre, device=device, batch_size=args.batch,
                                          autocast=bf16)
            if whole:
                zs_metrics(feats, labels, torch.nn.functional.normalize(torch.randn(10, feats.shape[1]), dim=-1),
                           ece=True)
            _sync(device)
            return time.perf_counter() - t0, cache.decoded

        cold_s, cold_decoded = evaluate(False)
        warm_s, warm_decoded = evaluate(False)
        whole_s = min(evaluate(True)[0] for _ in range(2))
        # bare: the same tensors, already normalised and in memory
        ds = info.load("test", ctx)
        attach_eval_cache(ds, info, "test", ctx, store)
        batches = [pre.eval_batch(ds.eval_cache.batch(ds, idx[i:i + args.batch], pre.fit, pre.transform_id)[0]
                                  ).to(device) for i in range(0, args.images, args.batch)]

        def bare() -> float:
            _sync(device)
            t0 = time.perf_counter()
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                for x in batches:
                    model.visual(x)
            _sync(device)
            return time.perf_counter() - t0

        bare()  # warm-up
        bare_s = min(bare() for _ in range(2))
        n = args.images
        print(f"cold  (decode + store + encode) {n / cold_s:8.1f} img/s  decoded {cold_decoded}")
        print(f"warm  (store + encode)          {n / warm_s:8.1f} img/s  decoded {warm_decoded}")
        print(f"whole (warm + zero-shot metrics){n / whole_s:8.1f} img/s")
        print(f"bare  (visual(x) on tensors)    {n / bare_s:8.1f} img/s")
        print(f"whole_over_bare={bare_s / whole_s:.3f} warm_over_cold={cold_s / warm_s:.3f} warm_decoded={warm_decoded}")
        store.close()


if __name__ == "__main__":
    main()
