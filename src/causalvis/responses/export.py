"""Responses in the canonical columns of docs/study-folder.md (CSV, Parquet, DataFrame).

One row per stored response (practice attempts included, ``kind`` tells them apart),
joined with the private trial table for unit / layer / channel and with the
participant-level measures (total and instruction time, practice attempts, status) of the
exclusion rule set's per-participant table. Built from the database and the study folder's
own files only (``trials.csv`` through :func:`causalvis.store.trials.read_trials`): no
server, no image assets, so an archived study without ``bundle/assets/`` still exports.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from causalvis.errors import CausalvisError
from causalvis.responses.db import Participant, Response, default_url, open_database
from causalvis.responses.exclusion import database_metrics
from causalvis.responses.summary import participant_label, status_label
from causalvis.store.layout import StudyPaths
from causalvis.store.sessions import SessionEntry, read_sessions
from causalvis.store.trials import read_trials

COLUMNS = [
    "participant_id", "platform", "external_id", "session_id", "condition", "image_set",
    "trial_id", "base_trial_id", "kind", "catch", "unit", "layer", "channel", "choice",
    "correct", "confidence", "rt", "left_option", "attempt", "reference_order", "answered_at",
    "total_time_s", "instruction_time_s", "practice_attempts", "status",
]  # fmt: skip
# Plain rows (SQLAlchemy Core), not ORM objects: a 100k-row export builds ~10x faster, and
# the rules read attributes only.
PARTICIPANTS, RESPONSES = Participant.__table__, Response.__table__
_TRIAL_FIELDS = ("base_trial_id", "unit", "layer", "channel", "image_set", "model")
# What the export (and the analysis) needs of trials.csv: never the asset columns.
TRIALS_REQUIRED = ("trial_id", "kind", "correct")


def columns_for(trials: pd.DataFrame) -> list[str]:
    """The canonical columns, plus ``model`` (after ``channel``) in multi-model studies."""
    if "model" not in trials.columns or not (trials["model"] != "").any():
        return list(COLUMNS)
    at = COLUMNS.index("channel") + 1
    return [*COLUMNS[:at], "model", *COLUMNS[at:]]


def _trial_facts(trials: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """trial_id -> the per-trial columns the export copies (NA as None)."""
    facts = {}
    for rec in trials[["trial_id", *_TRIAL_FIELDS]].to_dict("records"):
        row = {k: (None if pd.isna(v) else v) for k, v in rec.items()}
        row["base_trial_id"] = row["base_trial_id"] or row["trial_id"]
        facts[row["trial_id"]] = row
    return facts


def _shown_orders(sessions: Iterable[SessionEntry]) -> dict[tuple[str, str], str]:
    """(session, trial) -> the order its references were shown in: indices into the
    trial's ``reference_assets``, space-separated (2-AFC: ``max | min``)."""
    out = {}
    for sess in sessions:
        for tid in {*sess.reference_order, *sess.min_reference_order}:
            parts = [" ".join(map(str, sess.reference_order.get(tid, ())))]
            if sess.min_reference_order:
                parts.append(" ".join(map(str, sess.min_reference_order.get(tid, ()))))
            out[(sess.session_id, tid)] = " | ".join(parts)
    return out


def build_frame(
    db: DbSession, trials: pd.DataFrame, sessions: Iterable[SessionEntry] = ()
) -> pd.DataFrame:
    """Every response of ``db``; ``trials`` is the typed ``trials.csv``, ``sessions`` the
    plan's sessions (the shown reference orders; without them the column is empty)."""
    participants = {p.id: p for p in db.execute(select(PARTICIPANTS))}
    by_participant: dict[int, list[Response]] = defaultdict(list)
    for r in db.execute(select(RESPONSES).order_by(RESPONSES.c.participant_id, RESPONSES.c.id)):
        by_participant[r.participant_id].append(r)
    return _frame(participants, by_participant, _trial_facts(trials), _shown_orders(sessions),
                  columns_for(trials))  # fmt: skip


def iter_frames(
    db: DbSession, trials: pd.DataFrame, sessions: Iterable[SessionEntry] = (),
    *, chunk: int = 1000,
) -> Iterator[pd.DataFrame]:
    """:func:`build_frame` in pieces of ``chunk`` participants (keyset pagination on the
    participant id), so that a streamed export never holds every row in memory; the
    pieces concatenated are :func:`build_frame`'s frame. Always yields at least one."""
    facts, orders, columns = _trial_facts(trials), _shown_orders(sessions), columns_for(trials)
    last, first = 0, True
    while True:
        page = list(db.execute(select(PARTICIPANTS).where(PARTICIPANTS.c.id > last)
                               .order_by(PARTICIPANTS.c.id).limit(chunk)))  # fmt: skip
        if not page:
            if first:
                yield _frame({}, {}, facts, orders, columns)
            return
        last = page[-1].id
        participants = {p.id: p for p in page}
        by_participant: dict[int, list[Response]] = defaultdict(list)
        query = (select(RESPONSES)
                 .where(RESPONSES.c.participant_id.between(page[0].id, last))
                 .order_by(RESPONSES.c.participant_id, RESPONSES.c.id))  # fmt: skip
        for r in db.execute(query):
            by_participant[r.participant_id].append(r)
        if by_participant or first:
            first = False
            yield _frame(participants, by_participant, facts, orders, columns)


def _frame(participants: dict, by_participant: dict, facts: dict, orders: dict,
           columns: list[str]) -> pd.DataFrame:  # fmt: skip
    metrics = database_metrics([participants[pid] for pid in by_participant], by_participant)
    per = metrics[["total_time_s", "practice_attempts"]].to_dict("index")
    rows = []
    for pid, responses in by_participant.items():
        p = participants[pid]
        label = participant_label(p)
        m = per[label]
        total = None if pd.isna(m["total_time_s"]) else float(m["total_time_s"])
        for r in responses:
            t = facts.get(r.trial_id)
            answered = r.answered_at or r.received_at
            rows.append({
                "participant_id": label,
                "platform": p.platform,
                "external_id": p.external_id,
                "session_id": r.session_id,
                "condition": p.condition,
                "image_set": p.image_set if t is None or t["image_set"] is None
                else t["image_set"],
                "trial_id": r.trial_id,
                "base_trial_id": t["base_trial_id"] if t else r.trial_id,
                "kind": r.kind,
                "catch": r.kind == "catch",
                "unit": t["unit"] if t else "",
                "layer": t["layer"] if t else "",
                "channel": t["channel"] if t else None,
                "model": t["model"] if t else "",
                "choice": r.choice,
                "correct": bool(r.correct),
                "confidence": r.confidence,
                "rt": r.rt_ms,
                "left_option": r.left_option,
                "attempt": r.attempt,
                "reference_order": orders.get((r.session_id, r.trial_id), ""),
                "answered_at": answered.isoformat(timespec="milliseconds") + "Z",
                "total_time_s": total,
                "instruction_time_s": p.instruction_time_s,
                "practice_attempts": int(m["practice_attempts"]),
                "status": status_label(p),
            })  # fmt: skip
    frame = pd.DataFrame(rows, columns=columns)
    frame["channel"] = frame["channel"].astype("Int64")
    frame["image_set"] = frame["image_set"].astype("Int64")
    return frame


def frame_to_csv(frame: pd.DataFrame, header: bool = True) -> str:
    return frame.to_csv(index=False, header=header)


def frame_to_parquet(frame: pd.DataFrame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def responses_frame(
    db_url: str | None, study_dir: str | Path, *, trials: pd.DataFrame | None = None
) -> pd.DataFrame:
    """All responses of a study's database as a DataFrame with the canonical columns.

    ``db_url`` None means the study's default ``responses.sqlite``; ``trials`` the study's
    ``trials.csv`` as :func:`~causalvis.store.trials.read_trials` returns it, when the
    caller has read it already.
    """
    paths = StudyPaths(Path(study_dir))
    if not paths.root.is_dir():
        raise CausalvisError(f"study folder {paths.root} does not exist")
    if db_url is None and not paths.database.is_file():
        raise CausalvisError(
            f"no responses database at {paths.database} "
            "(run `causalvis serve` first, or pass --db URL)"
        )
    if trials is None:
        trials = read_trials(paths.trials, required=TRIALS_REQUIRED)
    sessions = read_sessions(paths.sessions).sessions if paths.sessions.is_file() else ()
    engine, factory = open_database(db_url or default_url(study_dir))
    try:
        with factory() as db:
            return build_frame(db, trials, sessions)
    finally:
        engine.dispose()
