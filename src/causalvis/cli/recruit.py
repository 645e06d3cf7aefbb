"""``causalvis recruit``: Prolific studies and MTurk HITs created, reviewed and paid.

Register with ``app.add_typer(recruit_app, name="recruit")``. Money is spent only on
Prolific without ``--dry-run`` and on MTurk with ``--live``; ``--dry-run`` prints every
request instead of sending it.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from causalvis.errors import CausalvisError

recruit_app = typer.Typer(
    name="recruit", no_args_is_help=True, add_completion=False,
    help="Create, review and pay Prolific studies and MTurk HITs for a study.",
)  # fmt: skip

STUDY = typer.Argument(..., help="study folder (built with `causalvis build`)")
DB = typer.Option(None, "--db", help="database URL (default: STUDY's sqlite)")
DRY = typer.Option(False, "--dry-run", help="print every request instead of sending it")
RUN = typer.Option("1", "--run", help="name of this recruitment run (a new run = a new study; "
                   "earlier runs' participants are blocked)")
PLATFORM = typer.Option("prolific", "--platform", help="prolific or mturk")
LIVE = typer.Option(False, "--live", help="MTurk: the real marketplace (spends money); "
                    "default: the requester sandbox")


def _money(value: float, flag: str) -> int:
    if value < 0:
        raise CausalvisError(f"{flag} {value}: must be >= 0")
    return round(value * 100)


def _open(study: Path, db: str | None):  # type: ignore[no-untyped-def]
    from causalvis.recruit.study import RecruitStudy

    return RecruitStudy.open(study, db)


def _platform(value: str) -> str:
    if value not in ("prolific", "mturk"):
        raise CausalvisError(f"--platform {value!r}: use prolific or mturk")
    return value


def _prolific_client(dry_run: bool):  # type: ignore[no-untyped-def]
    from causalvis.recruit.prolific import API, ProlificClient

    return ProlificClient(base_url=os.environ.get("PROLIFIC_API_URL", API), dry_run=dry_run,
                          echo=typer.echo)


def _mturk_client(dry_run: bool, live: bool):  # type: ignore[no-untyped-def]
    from causalvis.recruit.mturk import MTurkClient

    return MTurkClient(dry_run=dry_run, live=live, echo=typer.echo)


def _qual_name(s) -> str:  # type: ignore[no-untyped-def]
    return f"causalvis-{s.config.name}-took-part"


def _report(what: str, out) -> None:  # type: ignore[no-untyped-def]
    done = ", ".join(f"{k} {v}" for k, v in sorted(out.done.items())) or "nothing new"
    typer.echo(f"{what}: {done}; {out.skipped} done before")
    if out.unconfirmed:
        typer.echo(f"not paid again (a bonus was started but not confirmed; check the "
                   f"platform's dashboard): {', '.join(out.unconfirmed)}")


@recruit_app.command("prolific")
def prolific_command(
    study: Path = STUDY, public_url: str = typer.Option(..., "--public-url",
                                                        help="https address of `serve`"),
    pay_per_hour: float = typer.Option(9.0, "--pay-per-hour", help="in major units (GBP/USD)"),
    currency: str = typer.Option("GBP", "--currency", help="GBP or USD"),
    publish: bool = typer.Option(False, "--publish", help="publish the draft at once"),
    run: str = RUN, db: str | None = DB, dry_run: bool = DRY,
) -> None:
    """Create the draft Prolific study (places, reward, codes, filters from the study)."""
    from causalvis.recruit.actions import create_prolific, previous_studies
    from causalvis.recruit.plan import recruit_plan
    from causalvis.recruit.prolific import study_body

    s = _open(study, db)
    ledger = None if dry_run and not Path(s.db_url.removeprefix("sqlite:///")).exists() \
        and s.db_url.startswith("sqlite") else s.ledger
    plan = recruit_plan(s.config, s.plan, hourly=_money(pay_per_hour, "--pay-per-hour"),
                        currency=currency)
    typer.echo(f"{plan.places} places, ~{plan.minutes} min, reward {plan.reward / 100:.2f} "
               f"{currency} ({plan.hourly / 100:.2f} {currency}/h)")
    body = study_body(s.config, plan, public_url,
                      previous_studies=previous_studies(ledger, run) if ledger else ())
    client = _prolific_client(dry_run)
    try:
        create_prolific(client, ledger, run, body, publish=publish)
    finally:
        client.close()


@recruit_app.command("mturk")
def mturk_command(
    study: Path = STUDY, public_url: str = typer.Option(..., "--public-url",
                                                        help="https address of `serve`"),
    pay_per_hour: float = typer.Option(12.0, "--pay-per-hour", help="USD"),
    locale: str = typer.Option("US", "--locale", help="worker country ('' = any)"),
    min_approved: int = typer.Option(2000, "--min-approved", help="approved HITs at least"),
    min_percent: int = typer.Option(99, "--min-percent", help="approval rate at least (%)"),
    run: str = RUN, db: str | None = DB, dry_run: bool = DRY, live: bool = LIVE,
) -> None:
    """Post ExternalQuestion HITs (≤ 9 assignments each) until every session is taken."""
    from causalvis.recruit.actions import mturk_hits, open_sessions, post_mturk
    from causalvis.recruit.mturk import quality_requirements
    from causalvis.recruit.plan import recruit_plan
    from causalvis.recruit.prolific import study_url

    s = _open(study, db)
    plan = recruit_plan(s.config, s.plan, hourly=_money(pay_per_hour, "--pay-per-hour"),
                        currency="USD", check=False)
    url = study_url(public_url).split("?")[0] + "?platform=mturk"
    fresh = dry_run and s.db_url.startswith("sqlite") \
        and not Path(s.db_url.removeprefix("sqlite:///")).exists()
    decisions = [] if fresh else s.decisions("mturk")
    needed = open_sessions(s.plan, decisions)
    client = _mturk_client(dry_run, live)
    ledger = None if fresh else s.ledger
    open_now = 0
    if ledger is not None and not dry_run:
        for hit in mturk_hits(ledger):
            h = client.call("get_hit", HITId=hit)["HIT"]
            open_now += int(h.get("NumberOfAssignmentsAvailable", 0)) + int(
                h.get("NumberOfAssignmentsPending", 0))
    qual = client.block_qualification(_qual_name(s))
    base = {"title": s.config.texts.title, "url": url, "reward_cents": plan.reward,
            "minutes": plan.minutes, "qualifications": quality_requirements(
                qual, locale=locale, min_approved=min_approved, min_percent=min_percent),
            "description": f"Compare images (about {plan.minutes} minutes, desktop only)."}
    typer.echo(f"{needed} assignments needed ({open_now} open), reward "
               f"{plan.reward / 100:.2f} USD, ~{plan.minutes} min, "
               f"{'LIVE' if live else 'sandbox'}")
    hits = post_mturk(client, ledger, run, needed, qualification=qual, base=base,
                      posted_open=open_now)
    typer.echo(f"posted {len(hits)} HIT(s)")


@recruit_app.command("status")
def status_command(study: Path = STUDY, platform: str = PLATFORM, run: str = RUN,
                   top_up: bool = typer.Option(False, "--top-up", help="Prolific: add places "
                                               "for abandoned sessions"),
                   db: str | None = DB, dry_run: bool = DRY) -> None:
    """Submissions and decisions (the dashboard's checks); optionally top up places."""
    from collections import Counter

    from causalvis.recruit.actions import prolific_study_id
    from causalvis.recruit.plan import top_up_places

    s = _open(study, db)
    decisions = s.decisions(_platform(platform))
    counts = Counter(d.action for d in decisions)
    typer.echo(f"{platform}: {len(decisions)} participants in the database: " +
               (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))
    for d in decisions:
        typer.echo(f"  {d.label} {d.external_id} {d.action}"
                   + (f" ({'; '.join(d.rules)})" if d.rules else ""))
    if platform == "prolific":
        client = _prolific_client(dry_run)
        study_id = prolific_study_id(s.ledger, run)
        subs = client.submissions(study_id)
        typer.echo(f"Prolific study {study_id}: {len(subs)} submissions: " + ", ".join(
            f"{k} {v}" for k, v in sorted(Counter(x.get('status') for x in subs).items())))
        extra = top_up_places([d.status for d in decisions])
        if top_up and extra:
            places = s.plan.n_participants_needed + extra
            client.set_places(study_id, places)
            typer.echo(f"places set to {places} ({extra} abandoned)")


@recruit_app.command("review")
def review_command(study: Path = STUDY, platform: str = PLATFORM, run: str = RUN,
                   db: str | None = DB, dry_run: bool = DRY, live: bool = LIVE) -> None:
    """Approve who passed the checks, reject the others with the failed rule (once)."""
    from causalvis.recruit.actions import prolific_study_id, review_mturk, review_prolific

    s = _open(study, db)
    decisions = s.decisions(_platform(platform))
    if platform == "prolific":
        client = _prolific_client(dry_run)
        out = review_prolific(client, _DryLedger(s.ledger) if dry_run else s.ledger, decisions,
                              prolific_study_id(s.ledger, run))
    else:
        client = _mturk_client(dry_run, live)
        out = review_mturk(client, _DryLedger(s.ledger) if dry_run else s.ledger, decisions,
                           client.block_qualification(_qual_name(s)))
    _report("review", out)


@recruit_app.command("bonus")
def bonus_command(study: Path = STUDY, amount: float = typer.Option(..., "--amount",
                                                                    help="per approved "
                                                                    "participant (major units)"),
                  platform: str = PLATFORM, run: str = RUN,
                  reason: str = typer.Option("Thank you for your careful work.", "--reason"),
                  db: str | None = DB, dry_run: bool = DRY, live: bool = LIVE) -> None:
    """Pay each approved participant a bonus once (recorded; a re-run pays nobody twice)."""
    from causalvis.recruit.actions import bonus_mturk, bonus_prolific, prolific_study_id

    cents = _money(amount, "--amount")
    if cents == 0:
        raise CausalvisError("--amount must be > 0")
    s = _open(study, db)
    decisions = s.decisions(_platform(platform))
    ledger = _DryLedger(s.ledger) if dry_run else s.ledger
    if platform == "prolific":
        out = bonus_prolific(_prolific_client(dry_run), ledger, decisions,
                             prolific_study_id(s.ledger, run), cents)
    else:
        out = bonus_mturk(_mturk_client(dry_run, live), ledger, decisions, cents, reason)
    _report("bonus", out)


@recruit_app.command("cancel")
def cancel_command(study: Path = STUDY, platform: str = PLATFORM, run: str = RUN,
                   db: str | None = DB, dry_run: bool = DRY, live: bool = LIVE) -> None:
    """Stop the Prolific study / expire every open HIT of the study."""
    from causalvis.recruit.actions import mturk_hits, prolific_study_id

    s = _open(study, db)
    if _platform(platform) == "prolific":
        _prolific_client(dry_run).stop(prolific_study_id(s.ledger, run))
        typer.echo("Prolific study stopped")
        return
    client = _mturk_client(dry_run, live)
    hits = mturk_hits(s.ledger)
    for hit in hits:
        client.expire(hit)
    typer.echo(f"expired {len(hits)} HIT(s)")


@recruit_app.command("monitor")
def monitor_command(study: Path = STUDY, db: str | None = DB, live: bool = LIVE) -> None:
    """Open HITs, their assignments, the money spent and the account balance (MTurk)."""
    from causalvis.recruit.actions import mturk_hits

    s = _open(study, db)
    client = _mturk_client(False, live)
    for hit in mturk_hits(s.ledger):
        h = client.call("get_hit", HITId=hit)["HIT"]
        typer.echo(f"{hit} {h.get('HITStatus')}: {h.get('NumberOfAssignmentsAvailable', 0)} "
                   f"available, {h.get('NumberOfAssignmentsPending', 0)} pending, "
                   f"{h.get('NumberOfAssignmentsCompleted', 0)} completed")
    paid = sum(r.amount or 0 for r in s.ledger.all("mturk") if r.kind == "bonus"
               and r.state == "done")  # fmt: skip
    balance = client.call("get_account_balance").get("AvailableBalance", "?")
    typer.echo(f"bonuses paid: {paid / 100:.2f} USD; balance: {balance} USD")


class _DryLedger:
    """A dry run reads the ledger but writes nothing (every action looks new)."""

    def __init__(self, ledger) -> None:  # type: ignore[no-untyped-def]
        self._ledger = ledger

    def get(self, *key: str):  # type: ignore[no-untyped-def]
        return self._ledger.get(*key)

    def all(self, platform: str | None = None):  # type: ignore[no-untyped-def]
        return self._ledger.all(platform)

    def begin(self, platform: str, kind: str, ref: str, **_: object):  # type: ignore[no-untyped-def]
        from causalvis.recruit.ledger import RecruitAction, request_token

        row = self._ledger.get(platform, kind, ref)
        return row or RecruitAction(id=0, platform=platform, kind=kind, ref=ref, state="pending",
                                    token=request_token(platform, kind, ref))

    def mark_sent(self, *_: object) -> None:
        pass

    def finish(self, *_: object, **__: object) -> None:
        pass

    def set_remote(self, row, remote_id: str) -> None:  # type: ignore[no-untyped-def]
        row.remote_id = remote_id
