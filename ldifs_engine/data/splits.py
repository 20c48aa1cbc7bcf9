"""Deterministic, seeded splits that do not depend on a library's RNG stream.

Indices are ordered by a 64-bit hash of ``(seed, salt, index)`` (splitmix64, vectorised in numpy), so
a split is the same on every machine and every numpy/torch version, and the split of the first ``n``
items does not change when more items are appended later.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_order(n: int, seed: int, salt: int = 0) -> np.ndarray:
    """A seeded permutation of ``range(n)`` (int64)."""
    base = _splitmix64(np.array([(seed * 1_000_003 + salt) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    with np.errstate(over="ignore"):
        keys = _splitmix64(np.arange(n, dtype=np.uint64) ^ base)
    return np.argsort(keys, kind="stable").astype(np.int64)


def _holdout_count(n: int, fraction: float) -> int:
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, int(n * fraction + 0.5)))


def seeded_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into ``(train_idx, val_idx)``, each sorted, ``val`` ≈ ``val_fraction`` of ``n``.

    The paper trains on a seeded 90/10 split of the train set (``val_fraction=0.1``). With
    ``val_fraction=0`` the validation part is empty; otherwise it holds at least one item and the train
    part keeps at least one.

    Raises:
        ValueError: ``n`` negative or ``val_fraction`` outside ``[0, 1)``.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    order = hash_order(n, seed)
    k = _holdout_count(n, val_fraction)
    return np.sort(order[k:]), np.sort(order[:k])


def stratified_holdout(labels: Sequence[int] | np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out ``fraction`` of every class: ``(keep_idx, holdout_idx)``, each sorted.

    A class of two or more items gives at least one to each side; a single item stays in ``keep``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    keep: list[np.ndarray] = []
    held: list[np.ndarray] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = members[hash_order(len(members), seed, salt=int(c) + 1)]
        k = _holdout_count(len(members), fraction)
        held.append(order[:k])
        keep.append(order[k:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(keep), cat(held)
