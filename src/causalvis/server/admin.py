"""Admin token: from ``CAUSALVIS_ADMIN_TOKEN`` or generated once, stored only as a hash.

A generated token is printed once by ``causalvis serve``; the study folder keeps its
SHA-256 in ``.admin-token.sha256`` (mode 0600). Comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from causalvis.store.layout import atomic_write

ENV_VAR = "CAUSALVIS_ADMIN_TOKEN"
HASH_FILE = ".admin-token.sha256"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class AdminToken:
    digest: str
    new_token: str | None = None  # set only when generated on this start: print it once
    source: str = "file"

    def check(self, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(_digest(presented), self.digest)


def resolve_admin_token(study_dir: str | Path, explicit: str | None = None) -> AdminToken:
    """Explicit token > env var > stored hash > a new token (whose hash gets stored)."""
    token = explicit or os.environ.get(ENV_VAR)
    if token:
        return AdminToken(_digest(token), source="env" if explicit is None else "argument")
    path = Path(study_dir) / HASH_FILE
    if path.is_file():
        stored = path.read_text().strip()
        if len(stored) == 64:
            return AdminToken(stored, source="file")
    token = secrets.token_urlsafe(24)
    atomic_write(path, _digest(token) + "\n")
    path.chmod(0o600)
    return AdminToken(_digest(token), new_token=token, source="generated")
