"""LDIFS Studio engine: fine-tune CLIP backbones and measure concept forgetting.

A pure library (torch, open_clip, torchvision, safetensors); it knows nothing of the web app or the
queue. Heavy imports are lazy so ``import ldifs_engine.spec`` stays cheap.
"""
from __future__ import annotations

import os

# OpenMP threads that spin while waiting make PyTorch 10x slower whenever another process shares the
# cores (the web app, a second job, a test runner). Passive waiting costs little when alone. It only
# takes effect if set before torch is first imported, hence here.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"

_LAZY = {
    "RunSpec": ("spec", "RunSpec"),
    "image_taps": ("backbones", "image_taps"),
    "load_backbone": ("backbones", "load_backbone"),
    "ldifs_distance": ("methods.ldifs", "ldifs_distance"),
    "run": ("launch", "run"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    raise AttributeError(name)


__all__ = list(_LAZY) + ["__version__"]
