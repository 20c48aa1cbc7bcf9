"""L2-SP: pull the image tower's weights towards their pre-trained values."""
from __future__ import annotations

from dataclasses import dataclass

from ..lazy import torch

from ..fields import param
from .base import CEFamily


@dataclass(frozen=True)
class L2SPParams:
    strength: float = param(0.5, "a in a·Σ‖w − w0‖² over image-tower weights (a plain sum, no 1/2).", min=0.0, max=1e6)


def l2sp_penalty(named: list[tuple[str, torch.Tensor]], anchor: dict[str, torch.Tensor]) -> torch.Tensor:
    """Σ over parameters of ‖w − w0‖² (anchors are the pre-trained values)."""
    total = None
    for name, w in named:
        term = (w - anchor[name]).pow(2).sum()
        total = term if total is None else total + term
    return total if total is not None else torch.zeros(())


class L2SP(CEFamily):
    name = "l2sp"
    title = "L2-SP (weight anchor)"
    description = "Cross-entropy + a·Σ‖w − w0‖²: keeps the image tower's weights near the pre-trained ones."
    Params = L2SPParams
    budget_param, budget_range = "strength", (1e-3, 1.0)
    needs_anchor = True

    def regularizer(self, st, images, emb, taps):
        named = [(f"model.visual.{n}", p) for n, p in st.model.visual.named_parameters() if p.requires_grad]
        return self.params.strength * l2sp_penalty(named, st.anchor)
