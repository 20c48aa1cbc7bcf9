"""Bounded parsing of spec text (YAML or JSON): one door for every place that reads a spec.

A spec comes from strangers (the web API, a pasted YAML box, a file handed to ``ldifs submit``), so its
size, nesting depth, alias count and *expanded* node count are limited while it is parsed — before a
"billion laughs" alias tree is ever expanded into Python objects — and every message quotes a value in
at most ``QUOTE_MAX`` characters.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .errors import SpecError

MAX_SPEC_BYTES = 128 * 1024  # a real spec is ~2 KB; room for long comments and big WiSE-FT grids
MAX_DEPTH = 32  # a spec nests 4 levels; method params one more
MAX_ALIASES = 64
MAX_NODES = 20_000  # after expanding aliases
QUOTE_MAX = 80


def quote(value: Any, limit: int = QUOTE_MAX) -> str:
    """``repr(value)`` cut to ``limit`` characters (a hostile value must not make a hostile message)."""
    if isinstance(value, (dict, list, tuple, set)) and len(value) > limit:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 — a value whose repr fails is still reported
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_spec_text(text: str | bytes, *, source: str = "spec", fmt: str | None = None) -> Mapping[str, Any]:
    """The top-level mapping of a YAML or JSON spec, parsed within the limits above.

    ``fmt`` is "json", "yaml" or None (JSON when the text starts with ``{``; JSON is YAML too, but the
    JSON parser is faster). Raises ``SpecError`` naming ``source`` for oversize, too deep, too many
    aliases or nodes, invalid syntax, or a top level that is not a mapping.
    """
    if isinstance(text, bytes):
        if len(text) > MAX_SPEC_BYTES:
            raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES // 1024} KiB (a spec is a few KB)")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise SpecError(f"{source}: not UTF-8 text") from None
    if not isinstance(text, str):
        raise SpecError(f"{source}: expected YAML or JSON text, got {type(text).__name__}")
    if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: larger than {MAX_SPEC_BYTES // 1024} KiB (a spec is a few KB)")
    if fmt is None:
        fmt = "json" if text.lstrip().startswith("{") else "yaml"
    data = _load_json(text, source) if fmt == "json" else _load_yaml(text, source)
    if data is None:
        raise SpecError(f"{source}: empty; expected a mapping of fields")
    if not isinstance(data, Mapping):
        raise SpecError(f"{source}: expected a mapping of fields at the top level, got {type(data).__name__}")
    return data


# ---- JSON -------------------------------------------------------------------------------------------
def _json_depth(text: str) -> int:
    """Deepest bracket nesting outside double-quoted strings (checked before ``json.loads`` recurses;
    for YAML an upper bound of the flow nesting, as ``'`` quotes and comments are not skipped)."""
    depth = deepest = 0
    in_str = escaped = False
    for ch in text:
        if in_str:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _load_json(text: str, source: str) -> Any:
    if _json_depth(text) > MAX_DEPTH:
        raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_no_constant)
    except json.JSONDecodeError as e:
        raise SpecError(f"{source}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except ValueError as e:
        raise SpecError(f"{source}: not valid JSON ({quote(str(e))})") from None
    nodes = _count(data)
    if nodes > MAX_NODES:
        raise SpecError(f"{source}: more than {MAX_NODES} values")
    return data


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _count(x: Any) -> int:
    stack, n = [x], 0
    while stack:
        v = stack.pop()
        n += 1
        if isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return n


# ---- YAML -------------------------------------------------------------------------------------------
class _Limit(Exception):
    pass


def _check_events(events: Any) -> None:
    """Walk the parser's events (nothing is built yet) and refuse a document over the limits.

    Sizes are counted as if aliases were expanded: an anchored node's size is remembered, and each
    alias adds it again — so a "billion laughs" tree is refused from a few hundred bytes of events.
    """
    import yaml

    stack: list[list[Any]] = []  # [expanded size so far, anchor] per open collection
    sizes: dict[str, int] = {}
    open_anchors: set[str] = set()
    aliases = 0

    def add(size: int, anchor: str | None) -> None:
        if anchor:
            sizes[anchor] = size
        if stack:
            stack[-1][0] += size
            if stack[-1][0] > MAX_NODES:
                raise _Limit(f"more than {MAX_NODES} values once aliases are expanded")

    for n, ev in enumerate(events):
        if n > 2 * MAX_NODES + 8:
            raise _Limit(f"more than {MAX_NODES} values")
        if isinstance(ev, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            stack.append([1, ev.anchor])
            if ev.anchor:
                open_anchors.add(ev.anchor)
            if len(stack) > MAX_DEPTH:
                raise _Limit(f"nested deeper than {MAX_DEPTH} levels")
        elif isinstance(ev, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            size, anchor = stack.pop()
            open_anchors.discard(anchor)
            add(size, anchor)
        elif isinstance(ev, yaml.ScalarEvent):
            add(1, ev.anchor)
        elif isinstance(ev, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise _Limit(f"more than {MAX_ALIASES} aliases (*name)")
            if ev.anchor in open_anchors:
                raise _Limit("an alias refers to the node that contains it")
            add(sizes.get(ev.anchor, 1), None)  # an undefined alias is the loader's error below


def _load_yaml(text: str, source: str) -> Any:
    # Flow brackets are checked before the scanner sees them: thousands of nested "[" are slow to scan.
    if _json_depth(text) > MAX_DEPTH:
        raise SpecError(f"{source}: nested deeper than {MAX_DEPTH} levels")
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: ~25x faster
    try:
        _check_events(yaml.parse(text, Loader=loader))
        return yaml.load(text, Loader=loader)  # noqa: S506 — a safe loader (C or Python SafeLoader)
    except _Limit as e:
        raise SpecError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SpecError(f"{source}: not valid YAML ({quote(first, 120)[1:-1]})") from None
    except RecursionError:  # belt and braces: the depth limit comes first
        raise SpecError(f"{source}: nested too deeply") from None
