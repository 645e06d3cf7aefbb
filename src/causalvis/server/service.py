"""The experiment's server-side logic, independent of HTTP: create/resume participants,
store responses (idempotently, immediately), finish, and report progress.

Ground truth stays here: main and catch answers are scored and stored; only practice
answers report ``correct`` (the participant gets feedback), and, with
``server.correct_counter``, main and catch answers too, once stored (a running score).

The browser never sees the labels ``a``/``b``: every option has an opaque id
(:meth:`Experiment.option_ids`), listed in id order; answers name ids and are mapped back
to labels here, so the database and the analysis keep ``a``/``b``. Within a session the
correct option is listed first in half of the scored trials (within one), so neither the
label, the id nor the order says which option is right.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import random
import re
import secrets
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
from sqlalchemy import distinct, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker

from causalvis.responses.db import Participant, Response, Screening, utcnow
from causalvis.responses.exclusion import database_metrics, evaluate
from causalvis.responses.summary import participant_label, total_time_s
from causalvis.server.assignment import (
    capacity,
    choose_session,
    draw_practice,
    expire_abandoned,
    lock_assignment,
    taken_counts,
)
from causalvis.server.bundle import StudyBundle, Trial
from causalvis.server.platforms import (
    COMPLETED,
    FAILED_CHECKS,
    MTURK_PREVIEW_ID,
    NO_CONSENT,
    completion,
    full_completion,
    mturk_submit_to,
    screened_out_reply,
)
from causalvis.server.schemas import (
    ConsentIn,
    FinishIn,
    InstructionsIn,
    NewParticipant,
    ResponseIn,
    ScreenedOutIn,
)

# The [experiment] settings the browser gets (the answer step and the smallest window).
EXPERIMENT_KEYS = ("min_view_ms", "advance", "continue_after_ms", "gap_ms", "keyboard",
                   "min_width", "min_height")  # fmt: skip
INSTRUCTIONS_MINUTES = 3  # consent + instruction pages, for the duration estimate
OPEN_ELSEWHERE = "the study is open in another tab or window; continue there"
# Participant tokens are secrets.token_urlsafe(24): 192 random bits, 32 URL-safe characters.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,64}")


class ApiError(Exception):
    def __init__(self, status: int, detail: str, extra: dict | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra or {}  # more fields of the JSON answer besides ``detail``


REPEAT = "this participant has already taken part"
SCORED = ("main", "catch")
STUDY_FULL = "study full: every planned session is taken; thank you for your interest"


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _other_attempt(p: Participant, body: NewParticipant) -> str | None:
    """Why a known platform id may not take over participant ``p`` (None: the same attempt).

    Prolific: the same PID, STUDY_ID and SESSION_ID; MTurk: the same workerId and
    assignmentId (a new assignment is a repeat, as psiTurk keys it); a lab id: the resume
    secret handed out at creation, which the browser keeps."""
    if body.platform == "prolific":
        same = (body.study_id, body.session_id) == (p.platform_study_id, p.platform_session_id)
        return None if same else (
            f"{REPEAT} (this Prolific ID started the study in another Prolific session)")
    if body.platform == "mturk":
        same = body.assignment_id == p.platform_session_id
        return None if same else f"{REPEAT} (this worker already has another assignment)"
    given = body.resume_secret
    if given and p.resume_secret_hash and hmac.compare_digest(_sha256(given),
                                                              p.resume_secret_hash):
        return None
    return (f"participant id {p.external_id!r} is already in use; it continues only in the "
            "browser where it started (ask the experimenter for a new id)")


def _from_epoch_ms(value: int | None) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value / 1000, UTC).replace(tzinfo=None)


@dataclass
class Experiment:
    bundle: StudyBundle
    sessions: sessionmaker
    secret: str
    asset_prefix: str = "/assets/"
    overassign_factor: float | None = None  # None: ``server.overassign_factor`` of the study
    # Admin reads (progress, exports): sessions that never take the writers' lock
    # (responses.db.open_reader); None = the writers' sessions.
    readers: sessionmaker | None = None

    def __post_init__(self) -> None:
        self._assign_lock = threading.Lock()
        if self.readers is None:
            self.readers = self.sessions
        self._factor = self.overassign_factor or self.bundle.config.server.overassign_factor
        self.refused_full = 0  # new participants refused since start: the study was full
        self._practice_sessions = {s.session_id for s in self.bundle.sessions.values()
                                   if s.practice}  # fmt: skip
        self._id_key = hmac.new(self.secret.encode(), b"option-ids", hashlib.sha256).digest()
        self._ids: dict[tuple[str, str], dict[str, str]] = {}
        self._correct_first = {sid: self._balanced_order(s) for sid, s in
                               self.bundle.sessions.items()}  # fmt: skip
        self._n_references: dict[str, int] = {}
        for t in self.bundle.trials.values():
            if t.kind in SCORED:
                n = self._n_references.get(t.condition, 0)
                self._n_references[t.condition] = max(n, len(t.references))

    # -- option ids --------------------------------------------------------------------
    def _hex(self, *parts: str) -> str:
        return hmac.new(self._id_key, ":".join(parts).encode(), hashlib.sha256).hexdigest()

    def _balanced_order(self, sess) -> dict[str, bool]:  # type: ignore[no-untyped-def]
        """Scored trial -> is the correct option listed first: true for half of them
        (within one), which ones drawn per session from the secret."""
        scored = list(sess.trials)
        rng = random.Random(self._hex("order", sess.session_id))
        k = len(scored) // 2 + (len(scored) % 2 and rng.random() < 0.5)
        flags = [True] * k + [False] * (len(scored) - k)
        rng.shuffle(flags)
        return dict(zip(scored, flags, strict=True))

    def option_ids(self, session_id: str, trial_id: str) -> dict[str, str]:
        """label -> opaque option id of one trial as shown in one session (stable across
        reloads and restarts with the same admin token). The id that sorts first goes to
        the correct option as :meth:`_balanced_order` says (other trials: a coin from the
        secret), so the list order is uncorrelated with the answer."""
        key = (session_id, trial_id)
        ids = self._ids.get(key)
        if ids is None:
            trial = self.bundle.trials[trial_id]
            first, second = sorted("o" + self._hex("id", session_id, trial_id, side)[:15]
                                   for side in ("0", "1"))  # fmt: skip
            correct_first = self._correct_first.get(session_id, {}).get(trial_id)
            if correct_first is None:
                correct_first = int(self._hex("first", session_id, trial_id)[0], 16) % 2 == 0
            other = "b" if trial.correct == "a" else "a"
            ids = ({trial.correct: first, other: second} if correct_first
                   else {other: first, trial.correct: second})  # fmt: skip
            self._ids[key] = ids
        return ids

    def _label(self, session_id: str, trial_id: str, option_id: str | None,
               field: str) -> str | None:  # fmt: skip
        if option_id is None:
            return None
        for label, oid in self.option_ids(session_id, trial_id).items():
            if hmac.compare_digest(oid, option_id):
                return label
        raise ApiError(422, f"{field}: {option_id!r} is not an option of trial {trial_id!r}")

    def practice_for(self, p: Participant) -> tuple[str, ...]:
        """This participant's drawn practice trials in their order (deterministic)."""
        key = f"{self.bundle.config.seed}:{p.platform}:{p.external_id}"
        return draw_practice(self.bundle.sessions[p.session_id], self.bundle.practice_draw, key)

    # -- helpers -----------------------------------------------------------------------
    def _asset(self, name: str) -> str:
        return self.asset_prefix + name

    def trial_payload(self, trial: Trial, session_id: str) -> dict:
        """What the browser gets: URLs and opaque option ids only, the options in id order.
        Catch trials are sent as ``main`` so that the page source does not single them out.
        2-AFC trials have no single query (the options are the queries) and carry the
        minimal references besides the maximal ones."""
        ids = self.option_ids(session_id, trial.trial_id)
        src = {"a": trial.option_a, "b": trial.option_b}
        options = sorted(({"id": ids[label], "src": self._asset(src[label])} for label in src),
                         key=lambda o: o["id"])  # fmt: skip
        kind = trial.kind if trial.kind in ("practice", "example") else "main"
        sess = self.bundle.sessions.get(session_id)

        def shown(refs: tuple[str, ...], side: str) -> list[str]:
            """The references in the order the session's plan shows them (shuffled per
            session at build time, recorded in sessions.json)."""
            order = range(len(refs)) if sess is None else sess.shown_order(
                trial.trial_id, len(refs), side)
            return [self._asset(refs[i]) for i in order]

        payload = {
            "trial_id": trial.trial_id,
            "kind": kind,
            "query": None if trial.query is None else self._asset(trial.query),
            "options": options,
            "references": shown(trial.references, "max"),
        }
        if self.bundle.task == "two_afc":
            payload["min_references"] = shown(trial.min_references, "min")
        return payload

    def _participant(self, db: DbSession, token: str) -> Participant:
        if not _TOKEN.fullmatch(token):  # never hand odd bytes (NUL, 1 MB) to the database
            raise ApiError(404, "unknown participant token")
        p = db.scalar(select(Participant).where(Participant.token == token))
        if p is None:
            raise ApiError(404, "unknown participant token")
        if p.session_id not in self.bundle.sessions:
            raise ApiError(410, "this participation belongs to an earlier build of the study")
        return p

    def _responses(self, db: DbSession, p: Participant) -> list[Response]:
        query = select(Response).where(Response.participant_id == p.id).order_by(Response.id)
        return list(db.scalars(query))

    def _practice_state(self, p: Participant, responses: list[Response]) -> tuple[int, bool]:
        """(attempts, passed): passed = every drawn practice trial right in the last attempt."""
        practice = self.practice_for(p)
        if not practice:
            return 0, True
        attempts = max((r.attempt for r in responses if r.kind == "practice"), default=0)
        last = {r.trial_id: r.correct for r in responses
                if r.kind == "practice" and r.attempt == attempts}  # fmt: skip
        passed = attempts > 0 and all(last.get(t) for t in practice)
        return attempts, passed

    def state(self, p: Participant, responses: list[Response]) -> dict:
        sess = self.bundle.sessions[p.session_id]
        answered = {r.trial_id for r in responses if r.kind != "practice"}
        attempts, passed = self._practice_state(p, responses)
        pending = [t for t in sess.trials if t not in answered]
        if p.status == "declined":
            stage = "declined"
        elif p.finished_at is not None:
            stage = "finished"
        elif p.consent is None:
            stage = "consent"
        elif p.instruction_time_s is None:
            stage = "instructions"
        elif not passed:
            stage = "practice"
        elif pending:
            stage = "main"
        else:
            stage = "feedback"
        out = {
            "task": self.bundle.task,
            "status": p.status,
            "condition": p.condition,
            "consent": p.consent,
            "practice_attempts": attempts,
            "practice_passed": passed,
            "answered": [t for t in sess.trials if t in answered],
            "n_trials": len(sess.trials),
            "next": {"stage": stage, "trial_id": pending[0] if stage == "main" else None},
        }
        if self.bundle.config.server.correct_counter:  # the running score after a reload
            out["n_correct"] = sum(1 for r in responses if r.kind != "practice" and r.correct)
        return out

    # -- texts and settings ---------------------------------------------------------------
    def experiment_settings(self) -> dict:
        cfg = self.bundle.config.experiment
        return {k: getattr(cfg, k) for k in EXPERIMENT_KEYS}

    def duration_minutes(self, session_id: str | None = None) -> float:
        """``texts.duration_minutes``, or estimated: instructions + (practice + trials) x
        ``experiment.seconds_per_trial``, rounded up (the longest session when None)."""
        configured = self.bundle.config.texts.duration_minutes
        if configured > 0:
            return configured
        sessions = ([self.bundle.sessions[session_id]] if session_id
                    else list(self.bundle.sessions.values()))  # fmt: skip
        draw = self.bundle.practice_draw
        n = max(len(s.trials) + (len(s.practice) if draw is None
                                 else min(draw.get("n_total", 0), len(s.practice)))
                for s in sessions)  # fmt: skip
        spt = self.bundle.config.experiment.seconds_per_trial
        return math.ceil(INSTRUCTIONS_MINUTES + n * spt / 60)

    def texts(self, condition: str | None = None, session_id: str | None = None) -> dict:
        """The participant-facing texts of the study (``[texts]`` + generated counts);
        ``n_references`` is this condition's count, or every condition's without one."""
        t = self.bundle.config.texts
        occ = self.bundle.config.occlusion
        n_refs: int | dict[str, int] = (
            self._n_references.get(condition, 0) if condition is not None
            else {c: self._n_references.get(c, 0) for c in self.bundle.conditions})  # fmt: skip
        paragraphs = self.bundle.consent_paragraphs
        return {
            "title": t.title, "institution": t.institution, "contact": t.contact,
            "ethics": t.ethics,
            "consent_paragraphs": None if paragraphs is None else list(paragraphs),
            "instructions_note": t.instructions_note,
            "colour_vision_notice": t.colour_vision_notice,
            "duration_minutes": self.duration_minutes(session_id),
            "n_references": n_refs,
            "patch": {"percent": round(occ.patch_fraction * 100), "fill": occ.fill},
        }  # fmt: skip

    def public_config(self) -> dict:
        """``GET /api/v1/config``: what screens before a participant exists show."""
        return {"title": self.bundle.config.texts.title, "task": self.bundle.task,
                "duration_minutes": self.duration_minutes(),
                "experiment": self.experiment_settings(), "texts": self.texts()}  # fmt: skip

    def _welcome(self, p: Participant, responses: list[Response]) -> dict:
        sess = self.bundle.sessions[p.session_id]
        trials = [self.trial_payload(self.bundle.trials[t], p.session_id)
                  for t in self.practice_for(p) + sess.trials]  # fmt: skip
        example = None
        ex_id = self.bundle.examples.get(p.condition)
        if ex_id is not None:
            ex = self.bundle.trials[ex_id]
            example = self.trial_payload(ex, p.session_id)
            # Revealing the answer is only safe for a trial this participant is not scored on.
            scored = ex_id in sess.trials
            example["correct"] = None if scored else self.option_ids(p.session_id, ex_id)[ex.correct]
        experiment = self.experiment_settings()
        return {
            "participant_token": p.token,
            "task": self.bundle.task,
            "condition": p.condition,
            "trials": trials,
            "example": example,
            "settings": {
                "show_feedback_question": self.bundle.config.server.show_feedback_question,
                "correct_counter": self.bundle.config.server.correct_counter,
                "min_width": experiment["min_width"],
                "min_height": experiment["min_height"],
                "platform": p.platform,
                "experiment": experiment,
                "texts": self.texts(p.condition, p.session_id),
            },
            "state": self.state(p, responses),
        }

    # -- participants ------------------------------------------------------------------
    def create_participant(self, body: NewParticipant) -> tuple[int, dict]:
        preview = body.assignment_id in (None, MTURK_PREVIEW_ID)
        if body.platform == "mturk" and preview:
            raise ApiError(400, "MTurk preview: accept the HIT before starting")
        try:
            submit_to = mturk_submit_to(body.turk_submit_to)
        except ValueError as exc:
            raise ApiError(422, str(exc)) from exc
        now = utcnow()
        abandon = timedelta(minutes=self.bundle.config.server.abandon_after_minutes)
        with self._assign_lock, self.sessions() as db:
            lock_assignment(db)
            p = db.scalar(
                select(Participant).where(
                    Participant.platform == body.platform,
                    Participant.external_id == body.external_id,
                )
            )
            if p is not None:
                if p.session_id not in self.bundle.sessions:
                    raise ApiError(
                        410, "this participation belongs to an earlier build of the study"
                    )
                if p.finished_at is not None or p.status == "declined":
                    raise ApiError(409, REPEAT)
                refusal = _other_attempt(p, body)
                if refusal:
                    raise ApiError(409, refusal)
                p.status, p.last_seen_at = "active", now
                p.tab_id = body.tab_id or p.tab_id  # the newest tab wins
                db.commit()
                return 200, self._welcome(p, self._responses(db, p))
            expire_abandoned(db, abandon, now)
            sess = choose_session(self.bundle, taken_counts(db), self._factor)
            if sess is None:
                self.refused_full += 1
                extra = {"study_full": True} | full_completion(body.platform,
                                                               self.bundle.config.server)
                raise ApiError(409, STUDY_FULL, extra)
            # The browser may bring its own (made and kept before the first POST, so that a
            # retried creation whose 201 was lost resumes); else one is made here.
            resume_secret = body.resume_secret or secrets.token_urlsafe(18)
            p = Participant(
                token=secrets.token_urlsafe(24),
                resume_secret_hash=_sha256(resume_secret),
                platform=body.platform,
                external_id=body.external_id,
                platform_study_id=body.study_id,
                platform_session_id=body.assignment_id or body.session_id,
                mturk_submit_to=submit_to,
                session_id=sess.session_id,
                condition=sess.condition,
                image_set=sess.image_set,
                status="active",
                created_at=now,
                last_seen_at=now,
                tab_id=body.tab_id,
            )
            db.add(p)
            try:
                db.commit()
            except IntegrityError as exc:  # the same id raced in from another process
                db.rollback()
                raise ApiError(409, "this participant id is already registered") from exc
            return 201, self._welcome(p, []) | {"resume_secret": resume_secret}

    def screened_out(self, body: ScreenedOutIn) -> dict:
        """A visitor the device check turned away: counted (platform, reason only), never
        given a session; a participant who already holds one (same identity rules as a
        resume) gives it back at once. The answer says what to do on their platform."""
        with self._assign_lock, self.sessions() as db:
            lock_assignment(db)
            db.add(Screening(platform=body.platform, reason=body.reason, created_at=utcnow()))
            if body.external_id is not None:
                p = db.scalar(select(Participant).where(
                    Participant.platform == body.platform,
                    Participant.external_id == body.external_id))  # fmt: skip
                known = NewParticipant(platform=body.platform, external_id=body.external_id,
                                       study_id=body.study_id, session_id=body.session_id,
                                       assignment_id=body.assignment_id,
                                       resume_secret=body.resume_secret)  # fmt: skip
                if (p is not None and p.finished_at is None and p.status in ("active", "abandoned")
                        and _other_attempt(p, known) is None):  # fmt: skip
                    p.status, p.last_seen_at = "screened_out", utcnow()
            db.commit()
        return screened_out_reply(body.platform, body.reason, self.bundle.config.server)

    def get_state(self, token: str) -> dict:
        with self.sessions() as db:
            p = self._participant(db, token)
            if p.status == "abandoned":
                p.status = "active"
            if p.status == "active":
                p.last_seen_at = utcnow()
            db.commit()
            return self.state(p, self._responses(db, p))

    def set_consent(self, token: str, body: ConsentIn) -> dict:
        with self.sessions() as db:
            p = self._participant(db, token)
            self._check_tab(p, body.tab_id)
            if p.finished_at is not None:
                raise ApiError(409, "already finished")
            if p.consent is not None and p.consent != body.consent:
                raise ApiError(409, "consent was already recorded")
            p.consent = body.consent
            p.last_seen_at = utcnow()
            result: dict = {"consent": body.consent}
            if body.consent:
                p.consented_at = p.consented_at or utcnow()
            else:
                p.status, p.outcome = "declined", NO_CONSENT
                result.update(self._completion(p))
                p.completion_code = result["completion_code"]
            db.commit()
            return result

    def set_instructions(self, token: str, body: InstructionsIn) -> dict:
        with self.sessions() as db:
            p = self._active(db, token)
            self._check_tab(p, body.tab_id)
            if p.consent is not True:
                raise ApiError(409, "consent first")
            if p.instruction_time_s is not None:  # a retry or a reload: the first one counts
                return {"ok": True}
            p.instruction_time_s = body.instruction_time_s
            p.window_width, p.window_height = body.window_width, body.window_height
            p.user_agent = body.user_agent
            p.last_seen_at = utcnow()
            db.commit()
            return {"ok": True}

    @staticmethod
    def _check_tab(p: Participant, tab_id: str | None) -> None:
        """Answers from a tab older than the newest one that opened this participant are
        refused (two tabs would otherwise each drop the other's answers)."""
        if tab_id is not None and p.tab_id is not None and tab_id != p.tab_id:
            raise ApiError(409, OPEN_ELSEWHERE, {"open_elsewhere": True})

    def _active(self, db: DbSession, token: str) -> Participant:
        p = self._participant(db, token)
        if p.status == "declined":
            raise ApiError(409, "participation was declined")
        if p.finished_at is not None:
            raise ApiError(409, "already finished")
        if p.status == "abandoned":
            p.status = "active"
        return p

    # -- the flow ----------------------------------------------------------------------
    def _require_step(self, db: DbSession, p: Participant, kind: str) -> None:
        """The flow consented -> instructed -> practice passed -> main, enforced per answer:
        a 409 names the missing step and nothing is stored. Sessions without practice (an
        empty ``practice`` list) skip that step."""
        if p.consent is not True:
            raise ApiError(409, "consent first")
        if p.instruction_time_s is None:
            raise ApiError(409, "instructions first: POST /instructions before any answer")
        if kind == "practice" or not self.practice_for(p):
            return
        rows = db.scalars(select(Response).where(Response.participant_id == p.id,
                                                 Response.kind == "practice"))  # fmt: skip
        if not self._practice_state(p, list(rows))[1]:
            raise ApiError(409, "practice first: every practice answer of one attempt must be "
                                "correct before the main trials")  # fmt: skip

    def missing_steps(self, p: Participant, responses: list[Response]) -> list[str]:
        """What stands between this participant and a completion code, in flow order."""
        st = self.state(p, responses)
        missing = []
        if p.consent is not True:
            missing.append("consent")
        if p.instruction_time_s is None:
            missing.append("instructions")
        if not st["practice_passed"]:
            missing.append("practice")
        n_missing = st["n_trials"] - len(st["answered"])
        if n_missing:
            missing.append(f"{n_missing} trials are not answered yet")
        return missing

    # -- responses ---------------------------------------------------------------------
    def record_response(self, token: str, body: ResponseIn) -> dict:
        with self.sessions() as db:
            p = self._active(db, token)
            self._check_tab(p, body.tab_id)
            if p.consent is not True:
                raise ApiError(409, "consent first")
            sess = self.bundle.sessions[p.session_id]
            trial = self.bundle.trials.get(body.trial_id)
            in_session = body.trial_id in sess.trials or body.trial_id in sess.practice
            if trial is None or not in_session:
                raise ApiError(404, f"trial {body.trial_id!r} is not part of this session")
            if trial.kind == "practice" and body.trial_id not in self.practice_for(p):
                raise ApiError(409, f"practice trial {body.trial_id!r} is not one of this "
                                    "participant's practice trials")  # fmt: skip
            choice = self._label(p.session_id, trial.trial_id, body.choice, "choice")
            left = self._label(p.session_id, trial.trial_id, body.left_option, "left_option")
            if trial.kind != "practice" and body.attempt != 1:
                raise ApiError(422, "attempt must be 1 for main trials")
            self._require_step(db, p, trial.kind)
            # Main trials: insert first, a unique violation means a retry (one query less on
            # the hot path). Practice checks its state first, so look the retry up before.
            existing = None
            if trial.kind == "practice":
                existing = db.scalar(
                    select(Response).where(
                        Response.participant_id == p.id,
                        Response.trial_id == body.trial_id,
                        Response.attempt == body.attempt,
                    )
                )
            if existing is not None:  # a retried POST: answer as the first time
                if (existing.choice, existing.confidence) != (choice, body.confidence):
                    raise ApiError(409, "this trial was already answered differently")
                return self._ack(db, p, trial, existing)
            if trial.kind == "practice":
                attempts, passed = self._practice_state(p, self._responses(db, p))
                if passed:
                    raise ApiError(409, "practice already passed")
                if body.attempt not in (attempts, attempts + 1) or body.attempt < 1:
                    raise ApiError(422, f"practice attempt must be {max(attempts, 1)} or next")
            now = utcnow()
            row = Response(
                participant_id=p.id,
                session_id=p.session_id,
                trial_id=trial.trial_id,
                kind=trial.kind,
                attempt=body.attempt,
                choice=choice,
                confidence=body.confidence,
                rt_ms=body.rt_ms,
                left_option=left,
                correct=choice == trial.correct,
                shown_at=_from_epoch_ms(body.shown_at),
                answered_at=_from_epoch_ms(body.answered_at),
                received_at=now,
            )
            db.add(row)
            p.last_seen_at = now
            try:
                db.commit()
            except IntegrityError:  # a retry, or the same POST twice at once: keep the first
                db.rollback()
                row = db.scalar(
                    select(Response).where(
                        Response.participant_id == p.id,
                        Response.trial_id == body.trial_id,
                        Response.attempt == body.attempt,
                    )
                )
                if row is None:
                    raise
                if (row.choice, row.confidence) != (choice, body.confidence):
                    raise ApiError(409, "this trial was already answered differently") from None
            return self._ack(db, p, trial, row)

    def _ack(self, db: DbSession, p: Participant, trial: Trial, row: Response) -> dict:
        if trial.kind == "practice":
            attempts, passed = self._practice_state(p, self._responses(db, p))
            return {"correct": bool(row.correct), "attempt": row.attempt, "practice_passed": passed}
        sess = self.bundle.sessions[p.session_id]
        n = db.scalar(
            select(func.count(distinct(Response.trial_id))).where(
                Response.participant_id == p.id, Response.kind != "practice"
            )
        )
        ack = {"ok": True, "n_answered": int(n or 0), "n_trials": len(sess.trials)}
        if self.bundle.config.server.correct_counter:
            # The row is committed before this runs: the answer can no longer change.
            n_correct = db.scalar(
                select(func.count()).where(
                    Response.participant_id == p.id,
                    Response.kind != "practice",
                    Response.correct.is_(True),
                )
            )
            ack |= {"correct": bool(row.correct), "n_correct": int(n_correct or 0)}
        return ack

    # -- finishing -------------------------------------------------------------------
    def _completion(self, p: Participant) -> dict:
        return completion(
            p.platform,
            p.outcome or COMPLETED,
            self.bundle.config.server,
            secret=self.secret,
            token=p.token,
            assignment_id=p.platform_session_id,
            submit_to=p.mturk_submit_to,
        )

    def finish(self, token: str, body: FinishIn) -> dict:
        with self.sessions() as db:
            p = self._participant(db, token)
            if p.status == "declined":
                raise ApiError(409, "participation was declined")
            if p.finished_at is None:
                self._check_tab(p, body.tab_id)
                responses = self._responses(db, p)
                missing = self.missing_steps(p, responses)
                if missing:
                    raise ApiError(409, "cannot finish yet, missing: " + ", ".join(missing))
                # The completion code follows the rule set's catch criterion only.
                checks = evaluate(database_metrics([p], {p.id: responses}, self._practice_sessions),
                                  self.bundle.config.exclusion)
                failed = "catch_accuracy" in checks.flags[participant_label(p)]
                p.outcome = FAILED_CHECKS if failed else COMPLETED
                p.feedback = body.feedback or None
                p.finished_at = p.last_seen_at = utcnow()
                p.status = "finished"
                p.completion_code = self._completion(p)["completion_code"]
                db.commit()
            result = self._completion(p)
            result["completion_code"] = p.completion_code
            return result

    # -- admin -----------------------------------------------------------------------
    def foreign_participants(self) -> int:
        """Participants whose session is not in this plan (another or an older build)."""
        with self.sessions() as db:
            known = list(self.bundle.sessions)
            query = select(func.count()).where(Participant.session_id.not_in(known))
            return int(db.scalar(query.select_from(Participant)) or 0)

    def progress(self) -> dict:
        now = utcnow()
        abandon = timedelta(minutes=self.bundle.config.server.abandon_after_minutes)
        with self.sessions() as db:  # the one write: a single UPDATE
            expire_abandoned(db, abandon, now)
            db.commit()
        with self.readers() as db:  # the reads hold no lock that participants wait for
            # plain rows (Core): ~10x faster than ORM objects at 100k responses
            participants = list(db.execute(select(Participant.__table__)
                                           .order_by(Participant.__table__.c.id)))  # fmt: skip
            screened = dict(db.execute(select(Screening.reason, func.count())
                                       .group_by(Screening.reason)).all())  # fmt: skip
            by_p: dict[int, list[Response]] = defaultdict(list)
            for r in db.execute(select(Response.__table__)):
                by_p[r.participant_id].append(r)
        metrics = database_metrics(participants, by_p, self._practice_sessions)
        result = evaluate(metrics, self.bundle.config.exclusion)
        flags = result.flags
        warnings: dict[str, list[str]] = getattr(result, "warnings", {}) or {}
        per = result.per_participant  # the rule set's metrics, ``n_fast`` among them
        n_fast = per["n_fast"] if "n_fast" in getattr(per, "columns", ()) else pd.Series(dtype=float)
        sess_rows = {
            s.session_id: {"session_id": s.session_id, "condition": s.condition,
                           "image_set": s.image_set, "planned": s.planned_participants,
                           "finished": 0, "active": 0, "abandoned": 0}
            for s in self.bundle.sessions.values()
        }  # fmt: skip
        conds: dict[str, dict] = {
            c: {"condition": c, "planned": 0, "finished": 0, "active": 0, "excluded": 0,
                "n_main": 0, "n_main_correct": 0}
            for c in self.bundle.conditions
        }  # fmt: skip
        for s in self.bundle.sessions.values():
            conds.setdefault(s.condition, {"condition": s.condition, "planned": 0, "finished": 0,
                                           "active": 0, "excluded": 0, "n_main": 0,
                                           "n_main_correct": 0})  # fmt: skip
            conds[s.condition]["planned"] += s.planned_participants
        per_label = metrics.to_dict("index")
        people = []
        totals: dict[str, int] = defaultdict(int)
        for p in participants:
            totals[p.status] += 1
            label = participant_label(p)
            m = per_label[label]
            n_main, n_main_correct = int(m["n_main"]), int(m["n_main_correct"])
            if p.session_id in sess_rows and p.status in ("finished", "active", "abandoned"):
                sess_rows[p.session_id][p.status] += 1
            c = conds.get(p.condition)
            if c is not None:
                if p.status in ("finished", "active"):
                    c[p.status] += 1
                if flags[label] and p.status == "finished":
                    c["excluded"] += 1
                c["n_main"] += n_main
                c["n_main_correct"] += n_main_correct
            plan = self.bundle.sessions.get(p.session_id)
            n_trials = len(plan.trials) if plan else None
            people.append({
                "participant_id": label, "platform": p.platform,
                "external_id": p.external_id, "session_id": p.session_id,
                "condition": p.condition, "status": p.status,
                "n_answered": n_main + int(m["n_catch"]), "n_trials": n_trials,
                "main_accuracy": n_main_correct / n_main if n_main else None,
                "catch_accuracy": None if pd.isna(m["catch_accuracy"])
                else float(m["catch_accuracy"]),
                "practice_attempts": int(m["practice_attempts"]),
                "instruction_time_s": p.instruction_time_s, "total_time_s": total_time_s(p, now),
                "flags": flags[label], "warnings": warnings.get(label, []),
                "n_fast": int(n_fast[label]) if label in n_fast.index
                and not pd.isna(n_fast[label]) else None,
                "feedback": p.feedback,
            })  # fmt: skip
        for c in conds.values():
            c["accuracy"] = c["n_main_correct"] / c["n_main"] if c["n_main"] else None
        for row in sess_rows.values():
            row["need"] = max(0, row["planned"] - row["finished"] - row["active"])
        planned = sum(s.planned_participants for s in self.bundle.sessions.values())
        places = capacity(self.bundle, self._factor)
        taken = sum(r["finished"] + r["active"] for r in sess_rows.values())
        return {
            "study": self.bundle.name,
            "generated_at": now.isoformat(timespec="seconds") + "Z",
            "participants": {k: totals.get(k, 0) for k in
                             ("active", "finished", "abandoned", "declined",
                              "screened_out")} | {"total": len(participants)},
            # visitors turned away by the device check (most before becoming participants)
            "screened_out": int(sum(screened.values())),
            "screened_out_reasons": {str(k): int(v) for k, v in screened.items()},
            "conditions": list(conds.values()),
            "sessions": list(sess_rows.values()),
            "capacity": {"planned": planned, "overassign_factor": self._factor,
                         "places": places, "taken": taken, "full": taken >= places,
                         "refused_full": self.refused_full},
            "participant_details": people,
        }  # fmt: skip


__all__ = ["ApiError", "Experiment", "participant_label"]
