"""Facts about one participant read off the database rows (no exclusion rules here:
those are :mod:`causalvis.responses.exclusion`, the one rule set)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from causalvis.responses.db import Participant, Response

# The three states an analysis distinguishes; declining consent counts as abandoned.
STATUSES = ("active", "finished", "abandoned")


def participant_label(p: Participant) -> str:
    return f"p{p.id:05d}"


def total_time_s(p: Participant, now: datetime | None = None) -> float | None:
    """Consent to finish on the server clock (consent to now while still running)."""
    start = p.consented_at or p.created_at
    end = p.finished_at or now
    return None if end is None else (end - start).total_seconds()


def practice_attempts(responses: Iterable[Response]) -> int:
    return max((r.attempt for r in responses if r.kind == "practice"), default=0)


def status_label(p: Participant) -> str:
    """``active``, ``finished`` or ``abandoned`` (declined never produces response rows)."""
    return p.status if p.status in STATUSES else "abandoned"
