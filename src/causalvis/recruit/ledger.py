"""The ledger of recruitment actions (table ``recruit_actions``, migration 0004).

Every approve / reject / return / bonus / HIT posting is written here *before* the call
goes out (state ``pending``) and marked ``done`` after it succeeded, keyed by
(platform, kind, ref). A re-run skips what is done; an action left ``pending`` by a crash is
retried only where the platform makes a retry safe (MTurk's ``UniqueRequestToken``, an
idempotent Prolific transition). Prolific's bonus payment is not idempotent, so a pending
bonus is never paid again automatically: it is reported for a check on the dashboard.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from causalvis.responses.db import utcnow

PENDING, DONE = "pending", "done"


class _LedgerBase(DeclarativeBase):
    pass


class RecruitAction(_LedgerBase):
    __tablename__ = "recruit_actions"
    __table_args__ = (UniqueConstraint("platform", "kind", "ref", name="uq_recruit_action"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))  # approve reject return bonus hit qualify
    ref: Mapped[str] = mapped_column(String(128))  # submission / assignment / HIT round id
    participant: Mapped[str | None] = mapped_column(String(128), nullable=True)
    amount: Mapped[int | None] = mapped_column(Integer, nullable=True)  # minor units
    token: Mapped[str] = mapped_column(String(64))  # UniqueRequestToken / our idempotency key
    remote_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[str] = mapped_column(String(16), default=PENDING)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


def request_token(platform: str, kind: str, ref: str) -> str:
    """A stable token for one action (MTurk keeps it for 24 h and refuses a repeat)."""
    return hashlib.sha256(f"{platform}:{kind}:{ref}".encode()).hexdigest()[:40]


class Ledger:
    """Read and write ``recruit_actions`` through one SQLAlchemy session factory."""

    def __init__(self, sessions) -> None:  # type: ignore[no-untyped-def]
        self.sessions = sessions

    def get(self, platform: str, kind: str, ref: str) -> RecruitAction | None:
        with self.sessions() as db:
            return self._get(db, platform, kind, ref)

    @staticmethod
    def _get(db: Session, platform: str, kind: str, ref: str) -> RecruitAction | None:
        return db.scalar(select(RecruitAction).where(
            RecruitAction.platform == platform, RecruitAction.kind == kind,
            RecruitAction.ref == ref))  # fmt: skip

    def begin(self, platform: str, kind: str, ref: str, *, participant: str | None = None,
              amount: int | None = None, detail: str | None = None) -> RecruitAction:
        """The action's row, created ``pending`` if new (an existing row is returned as is)."""
        with self.sessions() as db:
            row = self._get(db, platform, kind, ref)
            if row is None:
                row = RecruitAction(platform=platform, kind=kind, ref=ref,
                                    participant=participant, amount=amount, detail=detail,
                                    token=request_token(platform, kind, ref), state=PENDING)  # fmt: skip
                db.add(row)
                db.commit()
            return row

    def finish(self, row: RecruitAction, remote_id: str | None = None) -> None:
        with self.sessions() as db:
            stored = db.get(RecruitAction, row.id)
            assert stored is not None
            stored.state, stored.done_at = DONE, utcnow()
            if remote_id is not None:
                stored.remote_id = remote_id
            db.commit()

    def mark_sent(self, row: RecruitAction) -> None:
        """The call is about to go out (a pending row without this was never sent)."""
        with self.sessions() as db:
            stored = db.get(RecruitAction, row.id)
            assert stored is not None
            stored.detail = "sent"
            db.commit()

    def set_remote(self, row: RecruitAction, remote_id: str) -> None:
        """Remember an intermediate id (Prolific's bonus id) before the paying call."""
        with self.sessions() as db:
            stored = db.get(RecruitAction, row.id)
            assert stored is not None
            stored.remote_id = remote_id
            db.commit()
        row.remote_id = remote_id

    def all(self, platform: str | None = None) -> list[RecruitAction]:
        with self.sessions() as db:
            query = select(RecruitAction).order_by(RecruitAction.id)
            if platform:
                query = query.where(RecruitAction.platform == platform)
            return list(db.scalars(query))
