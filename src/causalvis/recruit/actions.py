"""The recruitment steps, each resumable through the ledger (one function per command).

Every step first writes its row ``pending``, then calls the platform, then marks it
``done``: a re-run skips done rows, so nobody is approved, rejected or paid twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from causalvis.errors import CausalvisError
from causalvis.recruit.ledger import DONE, Ledger
from causalvis.recruit.mturk import (
    MAX_ASSIGNMENTS_PER_HIT,
    MAX_ASSIGNMENTS_PER_SESSION,
    MTurkClient,
    hit_params,
)
from causalvis.recruit.plan import chunks
from causalvis.recruit.prolific import RETURN_REASON, ProlificClient
from causalvis.recruit.review import APPROVE, REJECT, RETURN, Decision, reason_text
from causalvis.store.sessions import SessionPlan

Echo = Callable[[str], None]


@dataclass
class Outcome:
    """What one step did (``skipped``: done before; ``unconfirmed``: pending bonuses)."""

    done: Counter = field(default_factory=Counter)
    skipped: int = 0
    unconfirmed: list[str] = field(default_factory=list)


# -- Prolific ------------------------------------------------------------------------------

def prolific_study_id(ledger: Ledger, run: str) -> str:
    row = ledger.get("prolific", "study", run)
    if row is None or row.remote_id is None:
        raise CausalvisError(f"no Prolific study recorded for run {run!r}: run "
                             "`causalvis recruit prolific STUDY` first")
    return row.remote_id


def previous_studies(ledger: Ledger, run: str) -> list[str]:
    """Earlier runs' Prolific studies: their participants are blocked from this one."""
    return [r.remote_id for r in ledger.all("prolific")
            if r.kind == "study" and r.ref != run and r.remote_id]  # fmt: skip


def create_prolific(client: ProlificClient, ledger: Ledger | None, run: str, body: dict, *,
                    publish: bool) -> str:
    """Create the draft study once per run (a re-run finds it), publish if asked."""
    row = None if ledger is None else ledger.get("prolific", "study", run)
    if row is not None and row.remote_id:
        study_id = row.remote_id
        client.echo(f"Prolific study of run {run!r} exists already: {study_id}")
    else:
        if ledger is not None and not client.dry_run:
            row = ledger.begin("prolific", "study", run, amount=body.get("reward"))
        study_id = str(client.create_study(body)["id"])
        if row is not None:
            ledger.set_remote(row, study_id)
        client.echo(f"created draft Prolific study {study_id}")
    if publish:
        pub = None if ledger is None or client.dry_run else ledger.begin(
            "prolific", "publish", study_id)
        if pub is None or pub.state != DONE:
            client.publish(study_id)
            if pub is not None:
                ledger.finish(pub)
            client.echo(f"published {study_id}")
    return study_id


def review_prolific(client: ProlificClient, ledger: Ledger, decisions: Sequence[Decision],
                    study_id: str) -> Outcome:
    """Approve / reject (with the failed rules) / ask to return each decided submission."""
    out = Outcome()
    for d in decisions:
        if d.action not in (APPROVE, REJECT, RETURN) or not d.submission:
            continue
        if d.study and d.study != study_id:
            continue
        row = ledger.begin("prolific", "review", d.submission, participant=d.external_id,
                           detail=d.action + (": " + ", ".join(d.reasons) if d.reasons else ""))
        if row.state == DONE:
            out.skipped += 1
            continue
        if d.action == APPROVE:
            client.approve(d.submission)
        elif d.action == REJECT:
            client.reject(d.submission, reason_text(d))
        else:
            client.request_return(d.submission, [RETURN_REASON])
        ledger.finish(row)
        out.done[d.action] += 1
    return out


def bonus_prolific(client: ProlificClient, ledger: Ledger, decisions: Sequence[Decision],
                   study_id: str, amount: int) -> Outcome:
    """One bulk bonus for every approved, not yet paid participant; never paid twice.

    A bonus row left ``pending`` (a crash around the pay call) is not paid again: it is
    listed in ``unconfirmed`` for a check on Prolific's dashboard."""
    out = Outcome()
    due: list[tuple[Decision, object]] = []
    for d in decisions:
        review = ledger.get("prolific", "review", d.submission or "")
        if d.action != APPROVE or review is None or review.state != DONE:
            continue
        row = ledger.get("prolific", "bonus", d.submission or "")
        if row is not None:
            if row.state == DONE:
                out.skipped += 1
            else:
                out.unconfirmed.append(d.external_id)
            continue
        due.append((d, ledger.begin("prolific", "bonus", d.submission or "",
                                    participant=d.external_id, amount=amount)))
    if not due:
        return out
    setup = client.setup_bonus(study_id, [(d.external_id, amount) for d, _ in due])
    bonus_id = str(setup["id"])
    for _, row in due:
        ledger.set_remote(row, bonus_id)  # type: ignore[arg-type]
    client.pay_bonus(bonus_id)
    for _, row in due:
        ledger.finish(row)  # type: ignore[arg-type]
    out.done["bonus"] += len(due)
    return out


# -- MTurk ---------------------------------------------------------------------------------

def open_sessions(plan: SessionPlan, decisions: Sequence[Decision]) -> int:
    """Assignments still needed: per session, planned minus accepted (passed or waiting),
    unless it was tried :data:`MAX_ASSIGNMENTS_PER_SESSION` times per planned place."""
    accepted: Counter = Counter()
    tried: Counter = Counter()
    for d in decisions:
        tried[d.session_id] += 1
        if d.action in (APPROVE, "wait"):
            accepted[d.session_id] += 1
    need = 0
    for s in plan.sessions:
        if tried[s.session_id] < MAX_ASSIGNMENTS_PER_SESSION * s.planned_participants:
            need += max(0, s.planned_participants - accepted[s.session_id])
    return need


def post_mturk(client: MTurkClient, ledger: Ledger | None, run: str, needed: int, *,
               qualification: str, base: dict, posted_open: int = 0) -> list[str]:
    """Post HITs of ≤ 9 assignments for ``needed - posted_open`` workers; a HIT is recorded
    under its round before it is created (its UniqueRequestToken makes a retry safe)."""
    todo = needed - posted_open
    hits = []
    n_round = 1 + sum(1 for r in (ledger.all("mturk") if ledger else []) if r.kind == "round")
    if ledger is not None and not client.dry_run and todo > 0:
        ledger.finish(ledger.begin("mturk", "round", f"{run}:{n_round}", amount=todo))
    for i, n in enumerate(chunks(todo, MAX_ASSIGNMENTS_PER_HIT)):
        ref = f"{run}:{n_round}:{i}"
        row = None if ledger is None or client.dry_run else ledger.begin("mturk", "hit", ref,
                                                                          amount=n)
        token = row.token if row is not None else f"dry-run-{ref}"
        hit_id = client.create_hit(hit_params(assignments=n, token=token,
                                              qualifications=base["qualifications"],
                                              **{k: v for k, v in base.items()
                                                 if k != "qualifications"}))  # fmt: skip
        if row is not None:
            ledger.finish(row, hit_id)  # type: ignore[union-attr]
        hits.append(hit_id)
    return hits


def mturk_hits(ledger: Ledger) -> list[str]:
    return [r.remote_id for r in ledger.all("mturk") if r.kind == "hit" and r.remote_id]


def review_mturk(client: MTurkClient, ledger: Ledger, decisions: Sequence[Decision],
                 qualification: str) -> Outcome:
    """Approve / reject each submitted assignment by its participant's decision; every
    worker who took part gets the block qualification (no repeat across HITs)."""
    out = Outcome()
    by_assignment = {d.submission: d for d in decisions if d.submission}
    for hit in mturk_hits(ledger):
        for a in client.submitted(hit):
            worker = str(a["WorkerId"])
            qual = ledger.begin("mturk", "qualify", worker, participant=worker)
            if qual.state != DONE:
                client.call("associate_qualification_with_worker", WorkerId=worker,
                            QualificationTypeId=qualification, IntegerValue=1,
                            SendNotification=False)
                ledger.finish(qual)
            d = by_assignment.get(str(a["AssignmentId"]))
            if d is None or d.action not in (APPROVE, REJECT, RETURN):
                continue  # no data on the server yet, or still running: decide later
            action = APPROVE if d.action == RETURN else d.action  # no consent: MTurk pays
            row = ledger.begin("mturk", "review", d.submission or "", participant=worker,
                               detail=d.action + (": " + ", ".join(d.reasons) if d.reasons else ""))
            if row.state == DONE:
                out.skipped += 1
                continue
            if action == APPROVE:
                client.call("approve_assignment", AssignmentId=d.submission)
            else:
                client.call("reject_assignment", AssignmentId=d.submission,
                            RequesterFeedback=reason_text(d)[:1024])
            ledger.finish(row)
            out.done[action] += 1
    return out


def bonus_mturk(client: MTurkClient, ledger: Ledger, decisions: Sequence[Decision],
                amount: int, reason: str) -> Outcome:
    """``send_bonus`` once per approved assignment; a pending row is re-sent with the same
    ``UniqueRequestToken``, which MTurk refuses to pay twice."""
    out = Outcome()
    for d in decisions:
        review = ledger.get("mturk", "review", d.submission or "")
        if d.action != APPROVE or review is None or review.state != DONE:
            continue
        row = ledger.begin("mturk", "bonus", d.submission or "", participant=d.external_id,
                           amount=amount)
        if row.state == DONE:
            out.skipped += 1
            continue
        retry = row.detail == "sent"  # sent before a crash, never confirmed
        if not client.dry_run:
            ledger.mark_sent(row)
        try:
            client.call("send_bonus", WorkerId=d.external_id, AssignmentId=d.submission,
                        BonusAmount=f"{amount / 100:.2f}", Reason=reason,
                        UniqueRequestToken=row.token)
        except CausalvisError as exc:
            # A retry after a crash: MTurk refuses the repeated token when it paid already.
            if not (retry and "token" in str(exc).lower()):
                raise
        ledger.finish(row)
        out.done["bonus"] += 1
    return out
