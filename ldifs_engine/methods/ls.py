"""Cross-entropy with label smoothing."""
from __future__ import annotations

from dataclasses import dataclass

from ..fields import param
from .base import CEFamily


@dataclass(frozen=True)
class LSParams:
    epsilon: float = param(0.1, "Label smoothing: share of probability spread over the other classes.", min=0.0, max=0.99)


class LabelSmoothing(CEFamily):
    name = "ls"
    title = "Label smoothing"
    description = "Cross-entropy with label smoothing; otherwise as plain fine-tuning."
    Params = LSParams

    def _smoothing(self) -> float:
        return self.params.epsilon
