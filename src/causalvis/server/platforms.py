"""Recruitment platforms: what identifies a participant and where they go when done.

Prolific sends ``PROLIFIC_PID`` / ``STUDY_ID`` / ``SESSION_ID`` and expects a redirect to
its completion URL with a code; MTurk (ExternalQuestion) sends ``assignmentId`` /
``hitId`` / ``workerId`` / ``turkSubmitTo`` and expects a form POST to
``<turkSubmitTo>/mturk/externalSubmit``; the local/lab mode uses a typed-in id.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlencode, urlsplit

from causalvis.config import ServerConfig

PLATFORMS = ("local", "prolific", "mturk")
PROLIFIC_COMPLETE = "https://app.prolific.com/submissions/complete"
MTURK_HOSTS = ("www.mturk.com", "workersandbox.mturk.com")
MTURK_PREVIEW_ID = "ASSIGNMENT_ID_NOT_AVAILABLE"

# Outcomes of a participation, each with its own completion code on Prolific.
COMPLETED, FAILED_CHECKS, NO_CONSENT = "completed", "failed_checks", "no_consent"


def mturk_submit_to(value: str | None) -> str | None:
    """Only MTurk's own hosts are accepted as submit targets (no open redirect)."""
    if not value:
        return None
    parts = urlsplit(value)
    if parts.scheme != "https" or parts.hostname not in MTURK_HOSTS:
        raise ValueError("turkSubmitTo must be https://www.mturk.com or the worker sandbox")
    return f"https://{parts.hostname}"


def participant_code(secret: str, token: str, outcome: str) -> str:
    """A per-participant code for platforms without configured codes (local, MTurk)."""
    digest = hmac.new(secret.encode(), f"{token}:{outcome}".encode(), hashlib.sha256)
    return "CV-" + digest.hexdigest()[:10].upper()


def completion(
    platform: str,
    outcome: str,
    cfg: ServerConfig,
    *,
    secret: str,
    token: str,
    assignment_id: str | None = None,
    submit_to: str | None = None,
) -> dict:
    """``{"completion_code", "redirect_url", "mturk_submit"}`` for a finished participation.

    Declined consent earns no code (there is nothing to submit) unless Prolific has a
    no-consent code, which returns the person to Prolific."""
    code: str | None = participant_code(secret, token, outcome)
    if outcome == NO_CONSENT:
        code = None
    redirect: str | None = None
    submit: dict | None = None
    if platform == "prolific":
        configured = {
            COMPLETED: cfg.prolific_completion_code,
            FAILED_CHECKS: cfg.prolific_failed_checks_code or cfg.prolific_completion_code,
            NO_CONSENT: cfg.prolific_no_consent_code,
        }[outcome]
        if configured:
            code = configured
            redirect = f"{PROLIFIC_COMPLETE}?{urlencode({'cc': code})}"
    elif platform == "mturk" and submit_to and assignment_id and outcome != NO_CONSENT:
        submit = {
            "action": f"{submit_to}/mturk/externalSubmit",
            "fields": {"assignmentId": assignment_id, "completion_code": code},
        }
    return {"completion_code": code, "redirect_url": redirect, "mturk_submit": submit}


def full_completion(platform: str, cfg: ServerConfig) -> dict:
    """Where a participant goes when the study is full: Prolific's screened-out code
    (``server.prolific_full_code``) when configured; elsewhere nothing (return the HIT)."""
    code = cfg.prolific_full_code if platform == "prolific" else ""
    if not code:
        return {"completion_code": None, "redirect_url": None}
    return {"completion_code": code, "redirect_url": f"{PROLIFIC_COMPLETE}?{urlencode({'cc': code})}"}


SCREEN_REASONS = {
    "small_window": "This study needs a larger browser window than this one",
    "mobile": "This study needs a desktop or laptop computer",
    "browser": "This study does not work in this browser",
}


def screened_out_reply(platform: str, reason: str, cfg: ServerConfig) -> dict:
    """What a visitor turned away by the device check is told, per platform: Prolific's
    screened-out code (``server.prolific_screened_out_code``, else ``prolific_full_code``)
    and its redirect, MTurk "return the HIT", the lab a message only."""
    why = SCREEN_REASONS.get(reason, "This study cannot run on this device")
    code = (cfg.prolific_screened_out_code or cfg.prolific_full_code) if platform == "prolific" \
        else ""  # fmt: skip
    redirect = f"{PROLIFIC_COMPLETE}?{urlencode({'cc': code})}" if code else None
    if platform == "prolific":
        then = ("please use the code below to return to Prolific" if code else
                "please return the study on Prolific (press 'Stop without completing')")
    elif platform == "mturk":
        then = "please return the HIT (you will not be paid for it, and nothing is held against you)"
    else:
        then = "please ask the experimenter"
    return {"completion_code": code or None, "redirect_url": redirect,
            "mturk_return": platform == "mturk", "message": f"{why}; {then}."}  # fmt: skip


def participant_urls(base: str) -> dict[str, str]:
    """The links to paste into each platform (and the lab link)."""
    base = base.rstrip("/")
    return {
        "local": f"{base}/",
        "prolific": f"{base}/?PROLIFIC_PID={{{{%PROLIFIC_PID%}}}}&STUDY_ID={{{{%STUDY_ID%}}}}"
        f"&SESSION_ID={{{{%SESSION_ID%}}}}",
        "mturk": f"{base}/?platform=mturk",
    }
