"""Accuracy, expected calibration error and forgetting deltas (pure functions)."""
from __future__ import annotations

from collections.abc import Mapping

import torch


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy as a fraction in [0, 1]."""
    if len(labels) == 0:
        return float("nan")
    return (logits.argmax(1) == labels).float().mean().item()


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE: equal-width bins on the max softmax probability; Σ_b |B|/N · |acc(B) − conf(B)|."""
    probs = logits.float().softmax(1)
    conf, pred = probs.max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    n = len(labels)
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi) if lo > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().sum() / n * (correct[in_bin].mean() - conf[in_bin].mean()).abs()
    return ece.item()


def delta(after: float | None, before: float | None) -> float | None:
    """after − before, or None when either side is missing (a gap, never a zero)."""
    if after is None or before is None:
        return None
    return after - before


def forgetting_summary(datasets: Mapping[str, Mapping], target_head_acc: Mapping[str, float | None]) -> dict:
    """Mean ΔZS / ΔLP over the control datasets, the target gain and the worst control."""
    dzs, dlp = {}, {}
    for key, d in datasets.items():
        if d.get("role") != "control":
            continue
        b, a = d.get("before") or {}, d.get("after") or {}
        z = delta(a.get("zs_acc"), b.get("zs_acc"))
        lp = delta(a.get("lp_acc"), b.get("lp_acc"))
        if z is not None:
            dzs[key] = z
        if lp is not None:
            dlp[key] = lp
    worst = min(dzs.items(), key=lambda kv: kv[1]) if dzs else None
    return {
        "mean_delta_zs_controls": sum(dzs.values()) / len(dzs) if dzs else None,
        "mean_delta_lp_controls": sum(dlp.values()) / len(dlp) if dlp else None,
        "target_gain": delta(target_head_acc.get("after"), target_head_acc.get("before")),
        "worst_control": {"dataset": worst[0], "delta_zs": worst[1]} if worst else None,
        "delta_zs": dzs,
        "delta_lp": dlp,
    }
