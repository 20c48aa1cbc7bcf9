"""The acting user and a job's priority, checked the same way by every service function."""
from __future__ import annotations

from typing import Any

from ldifs_engine.errors import SpecError
from ldifs_engine.specio import quote

PRIORITY_RANGE = (-10, 10)


def check_user(user: str) -> str:
    """The user name as given, or ``SpecError`` (empty, too long, control characters)."""
    if not isinstance(user, str) or not user.strip() or len(user) > 200 or any(ord(c) < 32 for c in user):
        raise SpecError("user: expected a non-empty user name of at most 200 printable characters")
    return user


def check_priority(priority: Any) -> int:
    """A whole number in ``PRIORITY_RANGE`` (higher runs first), or ``SpecError`` saying what is allowed."""
    lo, hi = PRIORITY_RANGE
    if isinstance(priority, bool) or not isinstance(priority, int) or not lo <= priority <= hi:
        raise SpecError(f"priority: {quote(priority)} is not allowed; allowed: a whole number from {lo} to {hi} "
                        "(higher runs first)")
    return priority
