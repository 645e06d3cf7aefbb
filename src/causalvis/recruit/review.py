"""Review decisions from the one exclusion rule set (:mod:`causalvis.responses.exclusion`).

The decision for each participant of a platform is the dashboard's: the same
:func:`database_metrics` over the same rows, the same :func:`evaluate` with the study's
``[exclusion]`` config. Passed every check → approve; failed any → reject, with the rule
texts of the failed criteria as the reason; declined consent → return (no fault, no
pay); still active → wait; turned away by the device check → return.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import select

from causalvis.config import ExclusionConfig
from causalvis.responses.db import Participant, Response
from causalvis.responses.exclusion import database_metrics, evaluate
from causalvis.responses.summary import participant_label
from causalvis.store.sessions import SessionPlan

APPROVE, REJECT, RETURN, WAIT = "approve", "reject", "return", "wait"


@dataclass(frozen=True)
class Decision:
    label: str  # p00001, as on the dashboard
    external_id: str  # PROLIFIC_PID / workerId
    submission: str | None  # Prolific SESSION_ID (the submission id) / MTurk assignmentId
    study: str | None  # Prolific STUDY_ID / MTurk hitId
    session_id: str  # the plan's session
    action: str
    reasons: tuple[str, ...] = ()  # the failed criteria's names
    rules: tuple[str, ...] = ()  # their rule texts (what a participant is told)
    status: str = ""  # the server's participant status (abandoned ones are topped up)


def decide(sessions, plan: SessionPlan, cfg: ExclusionConfig, platform: str) -> list[Decision]:  # type: ignore[no-untyped-def]
    """One decision per participant of ``platform`` in the database, in id order."""
    with sessions() as db:
        people = list(db.scalars(select(Participant).where(Participant.platform == platform)
                                 .order_by(Participant.id)))  # fmt: skip
        by_p: dict[int, list[Response]] = defaultdict(list)
        ids = [p.id for p in people]
        if ids:
            for r in db.scalars(select(Response).where(Response.participant_id.in_(ids))):
                by_p[r.participant_id].append(r)
    if not people:
        return []
    practice = {s.session_id for s in plan.sessions if s.practice}
    result = evaluate(database_metrics(people, by_p, practice), cfg)
    out = []
    for p in people:
        label = participant_label(p)
        failed = tuple(result.flags.get(label, ()))
        if p.status == "active":
            action = WAIT
        elif (p.status == "declined" or p.outcome == "no_consent" or p.consent is False
              or label in result.screened_out):
            action, failed = RETURN, ()
        elif failed:
            action = REJECT
        else:
            action = APPROVE
        rules = tuple(str(result.criteria[c]["rule"]) for c in failed)
        out.append(Decision(label, p.external_id, p.platform_session_id, p.platform_study_id,
                            p.session_id, action, failed, rules, p.status))  # fmt: skip
    return out


def reason_text(d: Decision) -> str:
    """The message for a rejection (Prolific wants ≥ 100 characters)."""
    text = ("Thank you for taking part. Your submission did not pass the study's quality "
            "checks, which were set before data collection: " + "; ".join(d.rules) + ".")
    return text if len(text) >= 100 else text + " " + "." * (100 - len(text))
