"""Benchmark: the cost of LDIFS over plain CE, and of the naive formulation over ours.

    python bench/ldifs_overhead.py                       # CPU, the built-in small ViT, ~1-2 min
    python bench/ldifs_overhead.py --arch ViT-B-32 --batch 128 --device cuda --precision bf16

Median wall time per training step (forward, backward, AdamW update) of
  * CE          — cross-entropy through the head;
  * LDIFS       — as implemented: taps from the same forward as the logits, frozen reference run
                  without autograd and only up to its last tap;
  * naive LDIFS — as the original code: the trained tower runs a second time for the taps, the
                  reference runs in fp32 with autograd enabled through all blocks.
Last line (machine-readable): ``ldifs_over_ce=<x> naive_over_ldifs=<y>``.
"""
from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads crawl on shared cores
import copy
import logging
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ldifs_engine.backbones import _add_builtin_configs, _capture, frozen_copy, image_taps, tap_points  # noqa: E402
from ldifs_engine.methods import METHODS  # noqa: E402
from ldifs_engine.methods.base import TrainState  # noqa: E402
from ldifs_engine.methods.ldifs import ldifs_distance  # noqa: E402


def naive_loss(st: TrainState, ref_full: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, alpha: float):
    emb = st.model.visual(x)  # pass 1: logits
    task = F.cross_entropy(st.head(F.normalize(emb, dim=-1)), y)
    _, taps = image_taps(st.model.visual, x)  # pass 2: the taps again, with autograd
    with _capture(tap_points(ref_full), stop_after_last=False) as store:
        ref_full(x.float())  # fp32, autograd on, all blocks, ln_post and projection included
    return task, alpha * ldifs_distance(list(store), taps)


def bench(kind: str, st: TrainState, ref_full, x, y, steps: int, warmup: int, device, precision: str) -> tuple[float, float]:
    method = METHODS.get("ce" if kind == "ce" else "ldifs")()
    params = list(st.model.visual.parameters()) + list(st.head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    amp = precision == "bf16"
    times = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            if kind == "naive":
                task, reg = naive_loss(st, ref_full, x, y, 10.0)
            else:
                task, reg = method.loss(st, x, y)
        (task + reg).float().backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return statistics.median(times), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ldifs-concept-vit", help="open_clip architecture (random weights)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precision", default=None, choices=("fp32", "bf16"))
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians over all of them")
    args = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    import open_clip

    _add_builtin_configs()
    device = torch.device(args.device)
    precision = args.precision or ("bf16" if device.type == "cuda" else "fp32")
    torch.manual_seed(0)
    model = open_clip.create_model(args.arch, pretrained=None).to(device)
    size = model.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    embed = model.visual.output_dim
    head = torch.nn.Linear(embed, 10).to(device)
    st = TrainState(model=model, head=head, reference=frozen_copy(model.visual).to(device))
    ref_full = copy.deepcopy(model.visual).float()  # the naive reference: not frozen, fp32
    model.train()
    x = torch.randn(args.batch, 3, size, size, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}  arch: {args.arch}  image: {size}px  batch: {args.batch}  precision: {precision}")
    results: dict[str, list[float]] = {"ce": [], "ldifs": [], "naive": []}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):  # interleave so machine noise hits all three alike
        for kind in results:
            t, peak = bench(kind, st, ref_full, x, y, args.steps, args.warmup, device, precision)
            results[kind].append(t)
            peaks[kind] = max(peaks.get(kind, 0.0), peak) if peak == peak else peak
    med = {k: statistics.median(v) for k, v in results.items()}
    for k, label in (("ce", "CE"), ("ldifs", "LDIFS"), ("naive", "naive LDIFS")):
        mem = f"  peak {peaks[k]:.0f} MiB" if device.type == "cuda" else ""
        print(f"{label:<12} median step {1000 * med[k]:8.1f} ms  ({args.batch / med[k]:7.1f} img/s){mem}")
    mem = f" peak_ldifs_over_ce={peaks['ldifs'] / peaks['ce']:.3f}" if device.type == "cuda" else ""
    print(f"ldifs_over_ce={med['ldifs'] / med['ce']:.3f} naive_over_ldifs={med['naive'] / med['ldifs']:.3f}{mem}")


if __name__ == "__main__":
    main()
