"""Documented dataclass fields: the help text and bounds that the spec validator and the UI read.

Kept apart from ``spec`` so that a method's ``Params`` (in ``methods/``) can declare its fields without
importing the spec module, which itself looks methods up.
"""
from __future__ import annotations

import dataclasses
from typing import Any


ADDED_LATER = "added_later"  # metadata key: the field is left out of the spec hash while it holds its default


def param(default: Any, help: str, *, added_later: bool = False, **meta: Any) -> Any:
    """A dataclass field carrying its help text and bounds (``min``, ``max``, ``min_excl``, ``choices``,
    ``max_len``, ``max_items``); list defaults become tuples.

    ``added_later=True`` for every field added to a spec (or a method's Params) after runs existed: at its
    default it does not enter the spec hash, so runs created before the field can still resume."""
    if added_later:
        meta[ADDED_LATER] = True
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
        out[f.name] = {"type": str(f.type), "default": default,
                       **{k: v for k, v in f.metadata.items() if k != ADDED_LATER}}
    return out


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (``MISSING`` when it has none)."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def drop_later_defaults(obj: Any, d: dict) -> dict:
    """``d`` (``obj`` as a plain dict) without the ``added_later`` fields that hold their default, at any
    depth (nested specs, a method's Params): the canonical form the spec hash is taken of."""
    if not dataclasses.is_dataclass(obj) or not isinstance(d, dict):
        return d
    for f in dataclasses.fields(obj):
        if f.name not in d:
            continue
        value = getattr(obj, f.name)
        if f.metadata.get(ADDED_LATER) and value == field_default(f):
            del d[f.name]
        elif dataclasses.is_dataclass(value):
            drop_later_defaults(value, d[f.name])
    return d
