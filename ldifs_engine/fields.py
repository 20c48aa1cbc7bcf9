"""Documented dataclass fields: the help text and bounds that the spec validator and the UI read.

Kept apart from ``spec`` so that a method's ``Params`` (in ``methods/``) can declare its fields without
importing the spec module, which itself looks methods up.
"""
from __future__ import annotations

import dataclasses
from typing import Any


def param(default: Any, help: str, **meta: Any) -> Any:
    """A dataclass field carrying its help text and bounds (``min``, ``max``, ``min_excl``, ``choices``,
    ``max_len``, ``max_items``); list defaults become tuples."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: tuple(default), metadata={"help": help, **meta})
    return dataclasses.field(default=default, metadata={"help": help, **meta})


def field_help(cls: type) -> dict[str, dict[str, Any]]:
    """Field name → {type, default, help, bounds} of every documented field: what a UI needs to build an
    input. Nested specs and a method's ``params`` are not documented fields and are left out."""
    out = {}
    for f in dataclasses.fields(cls):
        if "help" not in f.metadata:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        out[f.name] = {"type": str(f.type), "default": default, **dict(f.metadata)}
    return out
