"""A study as recruitment sees it: its config, its session plan, its database + ledger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.recruit.ledger import Ledger
from causalvis.recruit.review import Decision, decide
from causalvis.responses.db import default_url, open_database
from causalvis.store.layout import StudyPaths
from causalvis.store.sessions import SessionPlan, read_sessions


@dataclass
class RecruitStudy:
    root: Path
    config: StudyConfig
    plan: SessionPlan
    db_url: str
    _sessions: object = None

    @classmethod
    def open(cls, root: str | Path, db_url: str | None = None) -> RecruitStudy:
        root = Path(root)
        paths = StudyPaths(root)
        if not paths.config.is_file():
            raise CausalvisError(f"{root}: not a study folder (no {paths.config.name})")
        return cls(root, StudyConfig.load(paths.config), read_sessions(paths.sessions),
                   db_url or default_url(root))

    @property
    def sessions(self):  # type: ignore[no-untyped-def]
        """The database's session factory (opened, and migrated, on first use)."""
        if self._sessions is None:
            _, self._sessions = open_database(self.db_url)
        return self._sessions

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.sessions)

    def decisions(self, platform: str) -> list[Decision]:
        return decide(self.sessions, self.plan, self.config.exclusion, platform)
