"""Stand-ins for the tensor libraries that import them on first use.

The catalogs (backbones, datasets, methods) and the spec validator are read by the service layer —
``ldifs jobs``, ``ldifs submit``, the web process — which must not pay torch's seconds and hundreds of
megabytes just to list names and check a spec. The modules that define those catalogs also hold the
tensor code that uses them, so they import ``torch`` from here: nothing is loaded until a function
actually touches ``torch.<something>``, which only happens in the engine child.

Rule for modules importing these: no tensor call at module level (a default value, a class base, a
constant); put it in a function, a ``default_factory`` or a cached helper. ``tests/tasks/test_imports.py``
fails the day one slips in.
"""
from __future__ import annotations

import importlib
import types
from typing import Any


class LazyModule(types.ModuleType):
    """A module object that imports the real module named ``name`` when an attribute is first read."""

    def __init__(self, name: str):
        super().__init__(name)
        self.__dict__["_real"] = None

    def _load(self) -> types.ModuleType:
        real = self.__dict__["_real"]
        if real is None:
            real = self.__dict__["_real"] = importlib.import_module(self.__name__)
        return real

    def __getattr__(self, attr: str) -> Any:  # only called for names not set on the stand-in itself
        return getattr(self._load(), attr)

    def __repr__(self) -> str:
        state = "loaded" if self.__dict__["_real"] is not None else "not loaded yet"
        return f"<lazy module {self.__name__!r} ({state})>"


torch: Any = LazyModule("torch")
nn: Any = LazyModule("torch.nn")
F: Any = LazyModule("torch.nn.functional")
np: Any = LazyModule("numpy")

__all__ = ["F", "LazyModule", "nn", "np", "torch"]
