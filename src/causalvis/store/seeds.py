"""Seeds and ids derived from names, never from process state or the answer.

Every executor (local, Ray, SLURM) computes the same seed for the same work item, and an
opaque id reveals nothing about what it names (no condition, no correct option).
"""

from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> int:
    """A seed derived from names, not from process state (same on every executor)."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def opaque_id(prefix: str, *parts: object, length: int = 12) -> str:
    """An id that reveals nothing about what it names (no condition, no answer)."""
    text = "|".join(str(p) for p in parts)
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:length]
