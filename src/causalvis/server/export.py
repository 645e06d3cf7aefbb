"""Responses in the canonical columns of docs/study-folder.md (CSV, Parquet, DataFrame).

One row per stored response (practice attempts included, ``kind`` tells them apart),
joined with the private trial table for unit / layer / channel and with the
participant-level measures (total and instruction time, practice attempts, status).
"""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from causalvis.errors import CausalvisError
from causalvis.responses.db import Participant, Response, default_url, open_database
from causalvis.responses.summary import participant_label, summarize
from causalvis.server.bundle import StudyBundle, load_bundle
from causalvis.store.layout import StudyPaths

COLUMNS = [
    "participant_id", "platform", "external_id", "session_id", "condition", "image_set",
    "trial_id", "base_trial_id", "kind", "catch", "unit", "layer", "channel", "choice",
    "correct", "confidence", "rt", "left_option", "attempt", "answered_at",
    "total_time_s", "instruction_time_s", "practice_attempts", "status",
]  # fmt: skip


def columns_for(bundle: StudyBundle) -> list[str]:
    """The canonical columns, plus ``model`` (after ``channel``) in multi-model studies."""
    if not any(t.model for t in bundle.trials.values()):
        return list(COLUMNS)
    at = COLUMNS.index("channel") + 1
    return [*COLUMNS[:at], "model", *COLUMNS[at:]]


def _status(p: Participant) -> str:
    # Declined consent never produces response rows; report the three canonical states.
    return p.status if p.status in ("active", "finished", "abandoned") else "abandoned"


def build_frame(db: DbSession, bundle: StudyBundle) -> pd.DataFrame:
    participants = {p.id: p for p in db.scalars(select(Participant))}
    by_participant: dict[int, list[Response]] = defaultdict(list)
    for r in db.scalars(select(Response).order_by(Response.participant_id, Response.id)):
        by_participant[r.participant_id].append(r)
    rows = []
    for pid, responses in by_participant.items():
        p = participants[pid]
        s = summarize(p, responses, bundle.config.exclusion)
        for r in responses:
            t = bundle.trials.get(r.trial_id)
            answered = r.answered_at or r.received_at
            rows.append({
                "participant_id": participant_label(p),
                "platform": p.platform,
                "external_id": p.external_id,
                "session_id": r.session_id,
                "condition": p.condition,
                "image_set": p.image_set if t is None or t.image_set is None else t.image_set,
                "trial_id": r.trial_id,
                "base_trial_id": t.base_trial_id if t else r.trial_id,
                "kind": r.kind,
                "catch": r.kind == "catch",
                "unit": t.unit if t else "",
                "layer": t.layer if t else "",
                "channel": t.channel if t else None,
                "model": t.model if t else "",
                "choice": r.choice,
                "correct": bool(r.correct),
                "confidence": r.confidence,
                "rt": r.rt_ms,
                "left_option": r.left_option,
                "attempt": r.attempt,
                "answered_at": answered.isoformat(timespec="milliseconds") + "Z",
                "total_time_s": s.total_time_s if p.finished_at else None,
                "instruction_time_s": p.instruction_time_s,
                "practice_attempts": s.practice_attempts,
                "status": _status(p),
            })  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns_for(bundle))
    frame["channel"] = frame["channel"].astype("Int64")
    frame["image_set"] = frame["image_set"].astype("Int64")
    return frame


def frame_to_csv(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def responses_frame(db_url: str | None, study_dir: str | Path) -> pd.DataFrame:
    """All responses of a study's database as a DataFrame with the canonical columns.

    ``db_url`` None means the study's default ``responses.sqlite``.
    """
    bundle = load_bundle(study_dir)
    if db_url is None and not StudyPaths(Path(study_dir)).database.is_file():
        raise CausalvisError(
            f"no responses database at {StudyPaths(Path(study_dir)).database} "
            "(run `causalvis serve` first, or pass --db URL)"
        )
    engine, factory = open_database(db_url or default_url(study_dir))
    try:
        with factory() as db:
            return build_frame(db, bundle)
    finally:
        engine.dispose()
