"""Validated request bodies of the participant API (anything else is a 422)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ID = r"^[A-Za-z0-9_.:@-]+$"
# An opaque option id (``server.service.option_ids``): says nothing about the label.
OPTION_ID = r"^o[0-9a-f]{15}$"
_TAB = r"^[A-Za-z0-9_-]{8,64}$"  # made by the page per load (random)
EPOCH_MS_MIN = 1_577_836_800_000  # 2020-01-01: earlier client clocks are wrong
EPOCH_MS_MAX = 4_102_444_800_000  # 2100-01-01


class _Body(BaseModel):
    # strict: "2" is not a confidence and true is not a width; NaN/inf are not times.
    model_config = ConfigDict(
        extra="forbid", str_strip_whitespace=True, strict=True, allow_inf_nan=False
    )

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_chars(cls, value: object) -> object:
        # NUL cannot be stored by PostgreSQL and no legitimate text contains C0 controls.
        if isinstance(value, str) and any(ord(c) < 32 and c not in "\t\n\r" for c in value):
            raise ValueError("control characters are not allowed")
        return value


class NewParticipant(_Body):
    platform: Literal["local", "prolific", "mturk"]
    external_id: str = Field(min_length=1, max_length=128, pattern=_ID)
    study_id: str | None = Field(None, max_length=128, pattern=_ID)
    session_id: str | None = Field(None, max_length=128, pattern=_ID)
    assignment_id: str | None = Field(None, max_length=128, pattern=_ID)
    hit_id: str | None = Field(None, max_length=128, pattern=_ID)
    turk_submit_to: str | None = Field(None, max_length=256)
    # Made by the browser (or returned at creation) and kept in localStorage: required to
    # resume a lab id.
    resume_secret: str | None = Field(None, min_length=16, max_length=64, pattern=_ID)
    # This page load; the newest tab of a participant wins, older ones get 409.
    tab_id: str | None = Field(None, pattern=_TAB)


class _TabBody(_Body):
    tab_id: str | None = Field(None, pattern=_TAB)


class ResponseIn(_TabBody):
    trial_id: str = Field(min_length=1, max_length=64, pattern=_ID)
    choice: str = Field(pattern=OPTION_ID)  # the chosen option's id
    confidence: int = Field(ge=1, le=3)
    rt_ms: int = Field(ge=1, le=3_600_000)
    left_option: str | None = Field(None, pattern=OPTION_ID)  # the id shown left / on top
    attempt: int = Field(1, ge=1, le=100)
    shown_at: int | None = Field(None, ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX)
    answered_at: int | None = Field(None, ge=EPOCH_MS_MIN, le=EPOCH_MS_MAX)


class ConsentIn(_TabBody):
    consent: bool


class InstructionsIn(_TabBody):
    instruction_time_s: float = Field(ge=0, le=24 * 3600)
    window_width: int | None = Field(None, ge=0, le=100_000)
    window_height: int | None = Field(None, ge=0, le=100_000)
    user_agent: str | None = Field(None, max_length=512)


class FinishIn(_TabBody):
    feedback: str | None = Field(None, max_length=5000)


class ScreenedOutIn(_Body):
    """A visitor turned away by the device check (before or instead of participating)."""

    platform: Literal["local", "prolific", "mturk"]
    reason: Literal["small_window", "mobile", "browser"]
    external_id: str | None = Field(None, min_length=1, max_length=128, pattern=_ID)
    study_id: str | None = Field(None, max_length=128, pattern=_ID)
    session_id: str | None = Field(None, max_length=128, pattern=_ID)
    assignment_id: str | None = Field(None, max_length=128, pattern=_ID)
    resume_secret: str | None = Field(None, min_length=16, max_length=64, pattern=_ID)
    tab_id: str | None = Field(None, pattern=_TAB)
