"""MTurk through botocore's Stubber: HITs posted once, review by the checks, one bonus."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import ANY, Stubber
from people import add

from causalvis.errors import CausalvisError
from causalvis.recruit import actions
from causalvis.recruit.mturk import MTurkClient, quality_requirements
from causalvis.recruit.study import RecruitStudy


def _stubbed():
    client = boto3.client("mturk", region_name="us-east-1", aws_access_key_id="x",
                          aws_secret_access_key="y",
                          endpoint_url="https://mturk-requester-sandbox.us-east-1.amazonaws.com")
    return client, Stubber(client)


def test_post_review_bonus_cycle_is_idempotent(study):
    s = RecruitStudy.open(study)
    boto, stub = _stubbed()
    mt = MTurkClient(boto, echo=lambda _: None)
    needed = actions.open_sessions(s.plan, s.decisions("mturk"))
    assert needed == 4
    base = {"title": "t", "description": "d", "url": "https://x/?platform=mturk",
            "reward_cents": 100, "minutes": 4, "qualifications": quality_requirements("Q1")}
    stub.add_response("create_hit", {"HIT": {"HITId": "H1"}},
                      {**{k: ANY for k in ("Title", "Description", "Keywords", "Reward",
                                           "AssignmentDurationInSeconds", "LifetimeInSeconds",
                                           "AutoApprovalDelayInSeconds", "Question",
                                           "QualificationRequirements", "UniqueRequestToken")},
                       "MaxAssignments": 4})
    with stub:
        assert actions.post_mturk(mt, s.ledger, "1", needed, qualification="Q1", base=base) == ["H1"]
    add(study, 0, platform="mturk", external="W1", study_id="H1", submission="A1")
    add(study, 1, platform="mturk", external="W2", study_id="H1", submission="A2", passes=False)
    decisions = s.decisions("mturk")
    # the failed session is open again; the passed one is not
    assert actions.open_sessions(s.plan, decisions) == 3
    subs = {"Assignments": [{"AssignmentId": "A1", "WorkerId": "W1", "HITId": "H1"},
                            {"AssignmentId": "A2", "WorkerId": "W2", "HITId": "H1"}]}
    stub.add_response("list_assignments_for_hit", subs,
                      {"HITId": "H1", "MaxResults": 100, "AssignmentStatuses": ["Submitted"]})
    for w in ("W1", "W2"):
        stub.add_response("associate_qualification_with_worker", {},
                          {"WorkerId": w, "QualificationTypeId": "Q1", "IntegerValue": 1,
                           "SendNotification": False})
        if w == "W1":
            stub.add_response("approve_assignment", {}, {"AssignmentId": "A1"})
    stub.add_response("reject_assignment", {}, {"AssignmentId": "A2", "RequesterFeedback": ANY})
    with stub:
        out = actions.review_mturk(mt, s.ledger, decisions, "Q1")
    stub.assert_no_pending_responses()
    assert dict(out.done) == {"approve": 1, "reject": 1}
    # a re-run: MTurk still lists them (fake), but nothing is approved, rejected or qualified
    stub.add_response("list_assignments_for_hit", subs, {"HITId": "H1", "MaxResults": 100,
                                                         "AssignmentStatuses": ["Submitted"]})
    with stub:
        out = actions.review_mturk(mt, s.ledger, decisions, "Q1")
    assert out.skipped == 2 and not out.done
    token = s.ledger.get("mturk", "review", "A1")
    stub.add_response("send_bonus", {}, {"WorkerId": "W1", "AssignmentId": "A1",
                                         "BonusAmount": "0.75", "Reason": "thanks",
                                         "UniqueRequestToken": ANY})
    with stub:
        assert actions.bonus_mturk(mt, s.ledger, decisions, 75, "thanks").done["bonus"] == 1
        again = actions.bonus_mturk(mt, s.ledger, decisions, 75, "thanks")  # no stub: no call
    assert again.skipped == 1 and token is not None
    stub.assert_no_pending_responses()


def test_dry_run_prints_every_call(study):
    from test_prolific import _run

    r = _run("mturk", study, "--public-url", "https://study.example.org", "--dry-run")
    assert r.exit_code == 0, r.output
    assert "mturk[sandbox].create_qualification_type" in r.output
    assert r.output.count("mturk[sandbox].create_hit") == 1
    assert '"MaxAssignments": 4' in r.output and "ExternalQuestion" in r.output
    assert "https://study.example.org/?platform=mturk" in r.output
    assert '"Comparator": "DoesNotExist"' in r.output and '"00000000000000000040"' in r.output
    assert not (study / "responses.sqlite").exists()


def test_bonus_retried_after_a_crash_with_its_token_is_not_paid_twice(study):
    s = RecruitStudy.open(study)
    add(study, 0, platform="mturk", external="W1", study_id="H1", submission="A1")
    decisions = s.decisions("mturk")
    s.ledger.finish(s.ledger.begin("mturk", "review", "A1"))
    row = s.ledger.begin("mturk", "bonus", "A1", amount=50)
    s.ledger.mark_sent(row)  # crashed after sending, before recording 'done'
    boto, stub = _stubbed()
    stub.add_client_error("send_bonus", "RequestError",
                          "The UniqueRequestToken has already been used")
    with stub:
        out = actions.bonus_mturk(MTurkClient(boto), s.ledger, decisions, 50, "thanks")
    assert out.done["bonus"] == 1 and s.ledger.get("mturk", "bonus", "A1").state == "done"
    # a fresh bonus whose call fails is an error, not silently recorded
    add(study, 1, platform="mturk", external="W2", study_id="H1", submission="A2")
    s.ledger.finish(s.ledger.begin("mturk", "review", "A2"))
    stub.add_client_error("send_bonus", "ServiceUnavailable", "try later")
    with stub, pytest.raises(CausalvisError, match="ServiceUnavailable"):
        actions.bonus_mturk(MTurkClient(boto), s.ledger, s.decisions("mturk"), 50, "thanks")
    assert s.ledger.get("mturk", "bonus", "A2").state == "pending"
