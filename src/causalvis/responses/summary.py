"""Per-participant summaries and exclusion flags, shared by the dashboard and the export.

The flags follow the protocol's exclusion criteria (``[exclusion]`` in study.toml): catch
accuracy, total time window, instruction time, practice attempts, always the same side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from causalvis.config import ExclusionConfig
from causalvis.responses.db import Participant, Response


@dataclass
class ParticipantSummary:
    participant_id: str
    total_time_s: float | None
    practice_attempts: int
    n_main: int = 0
    n_main_correct: int = 0
    n_catch: int = 0
    n_catch_correct: int = 0
    left_choices: int = 0
    sided: int = 0
    flags: list[str] = field(default_factory=list)

    @property
    def main_accuracy(self) -> float | None:
        return self.n_main_correct / self.n_main if self.n_main else None

    @property
    def catch_accuracy(self) -> float | None:
        return self.n_catch_correct / self.n_catch if self.n_catch else None


def participant_label(p: Participant) -> str:
    return f"p{p.id:05d}"


def total_time_s(p: Participant, now: datetime | None = None) -> float | None:
    """Consent to finish on the server clock (consent to now while still running)."""
    start = p.consented_at or p.created_at
    end = p.finished_at or now
    return None if end is None else (end - start).total_seconds()


def summarize(
    p: Participant, responses: list[Response], rules: ExclusionConfig, now: datetime | None = None
) -> ParticipantSummary:
    practice_attempts = max((r.attempt for r in responses if r.kind == "practice"), default=0)
    s = ParticipantSummary(participant_label(p), total_time_s(p, now), practice_attempts)
    for r in responses:
        if r.kind == "main":
            s.n_main += 1
            s.n_main_correct += int(r.correct)
        elif r.kind == "catch":
            s.n_catch += 1
            s.n_catch_correct += int(r.correct)
        if r.kind != "practice" and r.left_option in ("a", "b"):
            s.sided += 1
            s.left_choices += int(r.choice == r.left_option)
    if s.catch_accuracy is not None and s.catch_accuracy < rules.min_catch_accuracy:
        s.flags.append("catch_accuracy")
    if (
        p.finished_at is not None
        and s.total_time_s is not None
        and not (rules.min_total_time_s <= s.total_time_s <= rules.max_total_time_s)
    ):
        s.flags.append("total_time")
    if p.instruction_time_s is not None and p.instruction_time_s < rules.min_instruction_time_s:
        s.flags.append("instruction_time")
    if practice_attempts > rules.max_practice_attempts:
        s.flags.append("practice_attempts")
    if s.sided >= 2:
        same = max(s.left_choices, s.sided - s.left_choices) / s.sided
        limit = rules.max_same_side_fraction
        if same > limit or (limit >= 1.0 and same == 1.0):
            s.flags.append("same_side")
    return s
