"""Facts about one participant read off the database rows (no exclusion rules here:
those are :mod:`causalvis.responses.exclusion`, the one rule set)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from causalvis.responses.db import Participant, Response

# The states an analysis distinguishes; declining consent counts as abandoned. A participant
# turned away by the device check is ``screened_out``: never active, never abandoned, and
# never part of the sample the exclusions are counted on.
STATUSES = ("active", "finished", "abandoned", "screened_out")


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
    """``active``, ``finished``, ``abandoned`` or ``screened_out`` (declined never produces
    response rows, and counts as abandoned)."""
    return p.status if p.status in STATUSES else "abandoned"
