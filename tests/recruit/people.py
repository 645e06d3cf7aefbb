"""Participants written straight into a study's database, as the server records them."""

from __future__ import annotations

from datetime import datetime, timedelta

from causalvis.responses.db import Participant, Response, default_url, open_database
from causalvis.store.layout import StudyPaths
from causalvis.store.sessions import read_sessions

T0 = datetime(2026, 12, 1, 10, 0, 0)


def add(study, n: int, *, platform: str, external: str, study_id: str | None, submission: str,
        passes: bool = True, status: str = "finished", consent: bool = True) -> None:
    """Participant ``n`` in session ``n`` of the plan; ``passes=False``: every catch wrong."""
    plan = read_sessions(StudyPaths(study).sessions)
    s = plan.sessions[n % len(plan.sessions)]
    _, sessions = open_database(default_url(study))
    with sessions() as db:
        p = Participant(token=f"tok{n}-{platform}", platform=platform, external_id=external,
                        platform_study_id=study_id, platform_session_id=submission,
                        session_id=s.session_id, condition=s.condition, image_set=s.image_set,
                        status=status if consent else "declined", consent=consent,
                        instruction_time_s=40.0 if consent else None,
                        created_at=T0, consented_at=T0 if consent else None,
                        finished_at=T0 + timedelta(seconds=300) if status == "finished" else None,
                        outcome=None if consent else "no_consent")
        db.add(p)
        db.flush()
        if consent:
            rows = [(t, "practice") for t in s.practice] + [
                (t, "catch" if i == 0 else "main") for i, t in enumerate(s.trials)]
            for i, (trial, kind) in enumerate(rows):
                db.add(Response(participant_id=p.id, session_id=s.session_id, trial_id=trial,
                                kind=kind, attempt=1, choice="ab"[i % 2], confidence=2,
                                rt_ms=2500, left_option="a",
                                correct=passes or kind != "catch"))
        db.commit()
