"""Amazon Mechanical Turk on boto3: ExternalQuestion HITs, a repeat-worker block, reviews.

Sandbox unless ``live`` (the requester sandbox spends no money). Credentials come from
boto3's own chain (``AWS_ACCESS_KEY_ID`` / ``AWS_PROFILE`` / ``~/.aws/credentials``); they
are never read, printed or stored here. ``dry_run`` prints every call with its parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from xml.sax.saxutils import escape

from causalvis.errors import CausalvisError

SANDBOX = "https://mturk-requester-sandbox.us-east-1.amazonaws.com"
LIVE = "https://mturk-requester.us-east-1.amazonaws.com"
MAX_ASSIGNMENTS_PER_HIT = 9  # 10 or more assignments double MTurk's fee
MAX_ASSIGNMENTS_PER_SESSION = 3  # a session failed this often is not posted again
# MTurk's system qualifications (IMI's defaults).
LOCALE, HITS_APPROVED, PERCENT_APPROVED = (
    "00000000000000000071", "00000000000000000040", "000000000000000000L0")
QUESTION_NS = ("http://mechanicalturk.amazonaws.com/AWSMechanicalTurkDataSchemas/"
               "2006-07-14/ExternalQuestion.xsd")  # fmt: skip


def external_question(url: str, frame_height: int = 0) -> str:
    """The ExternalQuestion XML (frame height 0: the whole window)."""
    return (f'<ExternalQuestion xmlns="{QUESTION_NS}"><ExternalURL>{escape(url)}</ExternalURL>'
            f"<FrameHeight>{frame_height}</FrameHeight></ExternalQuestion>")


def quality_requirements(block_qualification: str, *, locale: str = "US",
                         min_approved: int = 2000, min_percent: int = 99) -> list[dict]:
    """IMI's defaults, plus the block: workers holding the study's qualification (who took
    part in an earlier HIT) neither see nor accept the new ones."""
    reqs: list[dict[str, Any]] = [
        {"QualificationTypeId": block_qualification, "Comparator": "DoesNotExist",
         "ActionsGuarded": "DiscoverPreviewAndAccept"},
        {"QualificationTypeId": HITS_APPROVED, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [min_approved], "ActionsGuarded": "Accept"},
        {"QualificationTypeId": PERCENT_APPROVED, "Comparator": "GreaterThanOrEqualTo",
         "IntegerValues": [min_percent], "ActionsGuarded": "Accept"},
    ]
    if locale:
        reqs.append({"QualificationTypeId": LOCALE, "Comparator": "EqualTo",
                     "LocaleValues": [{"Country": locale}], "ActionsGuarded": "Accept"})
    return reqs


def hit_params(*, title: str, description: str, url: str, reward_cents: int, minutes: int,
               assignments: int, qualifications: list[dict], lifetime_hours: float = 72.0,
               token: str) -> dict[str, Any]:
    """The parameters of one ``create_hit`` (≤ 9 assignments)."""
    if not 1 <= assignments <= MAX_ASSIGNMENTS_PER_HIT:
        raise ValueError(f"assignments must be 1..{MAX_ASSIGNMENTS_PER_HIT}")
    return {
        "Title": title, "Description": description, "Keywords": "images, neural networks",
        "Reward": f"{reward_cents / 100:.2f}", "MaxAssignments": assignments,
        "AssignmentDurationInSeconds": max(minutes * 3, minutes + 30) * 60,
        "LifetimeInSeconds": int(lifetime_hours * 3600),
        "AutoApprovalDelayInSeconds": 7 * 24 * 3600,
        "Question": external_question(url), "QualificationRequirements": qualifications,
        "UniqueRequestToken": token,
    }  # fmt: skip


def make_boto_client(live: bool) -> Any:
    """A boto3 MTurk client on the sandbox (default) or the live marketplace."""
    import boto3

    return boto3.client("mturk", region_name="us-east-1", endpoint_url=LIVE if live else SANDBOX)


class MTurkClient:
    """Each call goes through :meth:`call`: printed in a dry run, errors as one line."""

    def __init__(self, client: Any = None, *, dry_run: bool = False,
                 echo: Callable[[str], None] = print, live: bool = False) -> None:
        if client is None and not dry_run:
            client = make_boto_client(live)
        self.client, self.dry_run, self.echo, self.live = client, dry_run, echo, live
        self._dry = 0

    def call(self, op: str, dry_result: Any = None, **params: Any) -> Any:
        if self.dry_run:
            where = "live" if self.live else "sandbox"
            self.echo(f"mturk[{where}].{op} " + json.dumps(params, indent=2, sort_keys=True,
                                                           default=str))
            return {} if dry_result is None else dry_result
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self.client, op)(**params)
        except NoCredentialsError as exc:
            raise CausalvisError("no AWS credentials: set AWS_ACCESS_KEY_ID and "
                                 "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from exc
        except ClientError as exc:
            err = exc.response.get("Error", {})
            raise CausalvisError(f"MTurk {op}: {err.get('Code', 'error')}: "
                                 f"{err.get('Message', exc)}") from exc
        except BotoCoreError as exc:
            raise CausalvisError(f"MTurk {op}: {exc}") from exc

    def block_qualification(self, name: str) -> str:
        """The study's repeat-worker qualification, created once (found again by name)."""
        if not self.dry_run:
            found = self.call("list_qualification_types", Query=name, MustBeRequestable=False,
                              MustBeOwnedByCaller=True, MaxResults=100)
            for q in found.get("QualificationTypes", []):
                if q.get("Name") == name:
                    return str(q["QualificationTypeId"])
        made = self.call("create_qualification_type", Name=name, QualificationTypeStatus="Active",
                         Description="took part in this causalvis study already",
                         dry_result={"QualificationType": {"QualificationTypeId": "DRY-RUN-QUAL"}})
        return str(made["QualificationType"]["QualificationTypeId"])

    def create_hit(self, params: dict[str, Any]) -> str:
        self._dry += 1
        out = self.call("create_hit", dry_result={"HIT": {"HITId": f"DRY-RUN-HIT-{self._dry}"}},
                        **params)
        return str(out["HIT"]["HITId"])

    def submitted(self, hit_id: str) -> list[dict[str, Any]]:
        """Every submitted (not yet reviewed) assignment of a HIT, all pages."""
        out, token = [], None
        while True:
            extra = {"NextToken": token} if token else {}
            page = self.call("list_assignments_for_hit", HITId=hit_id, MaxResults=100,
                             AssignmentStatuses=["Submitted"], dry_result={}, **extra)
            out.extend(page.get("Assignments", []))
            token = page.get("NextToken")
            if not token:
                return out

    def expire(self, hit_id: str) -> None:
        """Close a HIT now (an expiry in the past); accepted assignments can still submit."""
        self.call("update_expiration_for_hit", HITId=hit_id, ExpireAt=datetime(2015, 1, 1, tzinfo=UTC))
