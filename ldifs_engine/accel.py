"""GPU-speed settings for training, each off on CPU unless asked for (tests force them on CPU to check
that they do not change the numbers): cudnn autotuning and TF32 matmuls, fused AdamW, channels-last
ResNets, bf16 where the card has it (fp16 + loss scaling where it does not, e.g. a T4), and optional
``torch.compile`` of the image tower.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .backbones import tap_points, tower_kind


def setup_device(device: torch.device) -> None:
    """Process-wide CUDA settings: autotuned convolutions, TF32 for fp32 matmuls."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")


def auto_precision(device: torch.device) -> str:
    """``auto``: bf16 autocast on GPUs that compute in bf16 (Ampere and newer), fp16 with loss scaling on
    older ones (a T4 emulates bf16 slowly), fp32 on CPU."""
    if device.type != "cuda":
        return "fp32"
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # older torch without the keyword
        native = torch.cuda.is_bf16_supported()
    return "bf16" if native else "fp16"


def make_optimizer(params: list[nn.Parameter], *, lr: float, weight_decay: float, fused: bool) -> torch.optim.AdamW:
    """AdamW; ``fused`` runs the update as one kernel per parameter group (CUDA, or CPU in tests)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True if fused else None)


def use_channels_last(visual: nn.Module) -> None:
    """ResNet towers in NHWC: tensor-core convolutions without layout transposes."""
    if tower_kind(visual) == "resnet":
        visual.to(memory_format=torch.channels_last)


def compile_tower(visual: nn.Module, *, layout: str = "official", backend: str | None = None) -> int:
    """``torch.compile`` the modules inside each LDIFS tap point (blocks' attention and MLP, ResNet
    bottlenecks) in place; returns how many. The tap points themselves stay eager, so the forward hooks
    that read the taps keep working and never force a recompile."""
    backend = backend or os.environ.get("LDIFS_COMPILE_BACKEND", "inductor")
    n = 0
    for point in tap_points(visual, layout):
        for child in point.children():
            if any(True for _ in child.parameters()):
                child.compile(backend=backend, dynamic=False)
                n += 1
    return n
