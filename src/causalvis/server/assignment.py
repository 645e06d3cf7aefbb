"""Which session a new participant gets: the one of the plan that most needs responses.

A session is *taken* by every finished participant and by every active one seen within
``abandon_after``; older active participants are marked abandoned and their session is
handed out again. Ties go to the condition, then the image set, with the fewest takers,
so that conditions and image sets fill up evenly. When every session is taken
``planned x server.overassign_factor`` times the study is full.

Within the session, each participant is given their own practice draw
(:func:`draw_practice`): the paper drew 1 obvious + 3 non-obvious practice trials per
participant in a random order, so the practice gate cannot be passed from memory.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session as DbSession

from causalvis.responses.db import Participant
from causalvis.server.bundle import StudyBundle
from causalvis.store.sessions import SessionEntry

# pg_advisory_xact_lock key of session assignment ("cvassign" as a number).
_ASSIGN_LOCK_KEY = 0x6376617373696E67


def lock_assignment(db: DbSession) -> None:
    """Serialise session assignment across server processes (``serve --workers N`` on
    PostgreSQL): a transaction-scoped advisory lock, released at commit or rollback. Within
    one process a thread lock does the same; SQLite runs a single process."""
    if db.get_bind().dialect.name == "postgresql":
        db.execute(select(func.pg_advisory_xact_lock(_ASSIGN_LOCK_KEY)))


def expire_abandoned(db: DbSession, abandon_after: timedelta, now: datetime) -> int:
    """Mark active participants not seen for ``abandon_after`` as abandoned."""
    result = db.execute(
        update(Participant)
        .where(Participant.status == "active", Participant.last_seen_at < now - abandon_after)
        .values(status="abandoned")
    )
    return result.rowcount or 0


def taken_counts(db: DbSession) -> Counter[str]:
    rows = db.execute(
        select(Participant.session_id, func.count())
        .where(Participant.status.in_(("active", "finished")))
        .group_by(Participant.session_id)
    )
    return Counter({sid: n for sid, n in rows})


def session_limit(sess: SessionEntry, factor: float) -> int:
    """How often a session may be taken: its planned participants x the over-assign factor."""
    return max(sess.planned_participants, math.floor(sess.planned_participants * factor + 1e-9))


def capacity(bundle: StudyBundle, factor: float) -> int:
    return sum(session_limit(s, factor) for s in bundle.sessions.values())


def choose_session(
    bundle: StudyBundle, taken: Counter[str], factor: float | None = None
) -> SessionEntry | None:
    """Pure rule: max remaining need, then least-taken condition, image set, plan order.

    With ``factor`` only sessions taken fewer than :func:`session_limit` times are handed
    out (None when the study is full); without it, sessions are handed out past the plan."""
    by_condition: Counter[str] = Counter()
    by_image_set: Counter[object] = Counter()
    for sess in bundle.sessions.values():
        by_condition[sess.condition] += taken[sess.session_id]
        by_image_set[sess.image_set] += taken[sess.session_id]

    def key(item: tuple[int, SessionEntry]) -> tuple[int, int, int, int]:
        order, sess = item
        need = sess.planned_participants - taken[sess.session_id]
        return (-need, by_condition[sess.condition], by_image_set[sess.image_set], order)

    candidates = [(i, s) for i, s in enumerate(bundle.sessions.values())
                  if factor is None or taken[s.session_id] < session_limit(s, factor)]  # fmt: skip
    return min(candidates, key=key)[1] if candidates else None


def draw_practice(sess: SessionEntry, draw: dict[str, int] | None, key: str) -> tuple[str, ...]:
    """This participant's practice trials, in their order: ``n_obvious`` from the session's
    obvious pool and the rest of ``n_total`` from the other practice trials, shuffled.

    ``key`` (study seed, platform, external id) seeds it, so a reload gives the same draw
    and two participants different ones. ``draw`` None (an older plan): every practice
    trial, none obvious. A pool smaller than asked for gives what it has."""
    obvious_set = set(getattr(sess, "practice_obvious", ()))
    obvious = [t for t in sess.practice if t in obvious_set]
    other = [t for t in sess.practice if t not in obvious_set]
    n_total = len(sess.practice) if draw is None else int(draw.get("n_total", len(sess.practice)))
    n_obvious = 0 if draw is None else int(draw.get("n_obvious", 0))
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    k_obvious = min(n_obvious, len(obvious), n_total)
    chosen = rng.sample(obvious, k_obvious) + rng.sample(other, min(n_total - k_obvious,
                                                                   len(other)))  # fmt: skip
    rng.shuffle(chosen)
    return tuple(chosen)
