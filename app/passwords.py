"""Password verifiers for ``LDIFS_AUTH_FILE``: salted scrypt, and the old unsalted SHA-256 lines.

A line is ``user:scrypt$<n>$<r>$<p>$<salt, base64>$<hash, base64>`` (what ``ldifs hash-password``
prints). Old ``user:<64 hex>`` (SHA-256) lines are still accepted, with a warning to re-hash them:
an unsalted fast hash is cracked offline in moments if the file leaks.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable

log = logging.getLogger("ldifs.app")

SCRYPT_N, SCRYPT_R, SCRYPT_P, DKLEN = 2**14, 8, 1, 32  # ~16 MB and a few tens of ms per check
_MAX_N = 2**20  # refuse absurd parameters from a file (memory)

Verifier = Callable[[str], bool]


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=DKLEN,
                          maxmem=256 * n * r + 1024 * 1024)


def hash_password(password: str) -> str:
    """The salted scrypt string for an auth-file line (a fresh 16-byte salt each time)."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    b64 = lambda b: base64.b64encode(b).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt)}${b64(digest)}"


def parse_hash(text: str) -> Verifier | None:
    """A verifier for one stored hash, or None when ``text`` is not a hash we know."""
    text = text.strip()
    if text.startswith("scrypt$"):
        parts = text.split("$")
        if len(parts) != 6:
            return None
        try:
            n, r, p = (int(x) for x in parts[1:4])
            salt, expected = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
        except ValueError:
            return None
        if not (2 <= n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16 and len(salt) >= 8
                and len(expected) == DKLEN):
            return None
        return lambda pw: hmac.compare_digest(_scrypt(pw, salt, n, r, p), expected)
    hexd = text.lower()
    if hexd.startswith("sha256:"):
        hexd = hexd[len("sha256:"):]
    if len(hexd) == 64 and all(c in "0123456789abcdef" for c in hexd):
        expected = bytes.fromhex(hexd)
        return lambda pw: hmac.compare_digest(hashlib.sha256(pw.encode("utf-8")).digest(), expected)
    return None


def is_legacy(text: str) -> bool:
    return not text.strip().startswith("scrypt$")


_DUMMY = parse_hash(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${'A' * 24}${'A' * 44}")


def dummy_check(password: str) -> None:
    """Spend what a real check spends, so an unknown user name answers as slowly as a known one."""
    if _DUMMY is not None:
        _DUMMY(password)
