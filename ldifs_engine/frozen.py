"""The frozen reference tower of LDIFS and L2-SP (``backbones.frozen_copy`` builds it).

Apart from ``backbones`` because a class deriving from ``nn.Module`` needs torch when it is defined,
and ``backbones`` must stay importable without torch (its catalog is read by the service layer).
"""
from __future__ import annotations

import copy

import torch
from torch import nn


class FrozenReference(nn.Module):
    """A frozen copy of an image tower: no grad, always eval (``train()`` cannot flip it)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.tower = copy.deepcopy(visual)
        for p in self.tower.parameters():
            p.requires_grad_(False)
        self.tower.eval()

    def train(self, mode: bool = True) -> "FrozenReference":  # noqa: ARG002 — frozen on purpose
        super().train(False)
        self.tower.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.tower(images)
