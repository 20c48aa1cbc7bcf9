"""Method registry: one module per method; a new regulariser is one file plus one line here."""
from __future__ import annotations

from ..registry import Registry
from .base import CEFamily, Method, TrainState
from .ce import CE
from .flyp import FLYP, clip_contrastive_loss
from .l2sp import L2SP, l2sp_penalty
from .ldifs import LDIFS, ldifs_distance
from .lora import LoRA
from .ls import LabelSmoothing

METHODS: Registry[type[Method]] = Registry("method")
for _cls in (CE, LabelSmoothing, L2SP, LDIFS, FLYP, LoRA):
    METHODS.register(_cls.name, _cls)

__all__ = ["METHODS", "Method", "CEFamily", "TrainState", "ldifs_distance", "l2sp_penalty", "clip_contrastive_loss"]
