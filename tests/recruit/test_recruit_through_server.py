"""The full Prolific cycle with participants who went through the real server (issue 21,
"Done when"): create → publish → participants via the participant API → review → bonus;
exactly those who pass the dashboard's checks are approved, the others rejected with the
failed rule, and re-running review or bonus changes nothing."""

from __future__ import annotations

import typer
from fastapi.testclient import TestClient
from server_bundle_factory import ADMIN, make_study, truth
from typer.testing import CliRunner

from causalvis.cli.recruit import recruit_app
from causalvis.responses.db import default_url
from causalvis.server.app import create_app
from conftest import TOKEN

URL = "https://study.example.org"
# The checks that can be met by a scripted participant (no waiting): catch accuracy,
# one-sidedness; times are not what this test is about.
LENIENT = {"exclusion": {"min_total_time_s": 0.0, "min_instruction_time_s": 0.0,
                         "min_rt_ms": 0.0, "conditions": {}}}


def _run(*args: object, env: dict[str, str]):
    app = typer.Typer()
    app.add_typer(recruit_app, name="recruit")
    return CliRunner().invoke(app, ["recruit", *map(str, args)], env=env)


def _participate(client: TestClient, study, pid: str, submission: str, *, right: bool) -> None:
    """One Prolific participant through the API: consent, instructions, practice (right),
    main and catch trials right (``right``) or every one wrong, finish."""
    exp = client.app.state.experiment
    rows = truth(study)
    r = client.post("/api/v1/participants", json={
        "platform": "prolific", "external_id": pid, "study_id": "study1",
        "session_id": submission})
    assert r.status_code == 201, r.text
    body = r.json()
    api = f"/api/v1/participants/{body['participant_token']}"
    assert client.post(f"{api}/consent", json={"consent": True}).is_success
    assert client.post(f"{api}/instructions", json={"instruction_time_s": 30.0}).is_success
    with exp.sessions() as db:
        from sqlalchemy import select

        from causalvis.responses.db import Participant

        session = db.scalar(select(Participant.session_id).where(
            Participant.token == body["participant_token"]))
    for i, t in enumerate(body["trials"]):
        truth_label = rows[t["trial_id"]]["correct"]
        label = truth_label if (right or t["kind"] == "practice") else "ab"[truth_label == "a"]
        ids = exp.option_ids(session, t["trial_id"])
        left = ids["ab"[i % 2]]  # both sides used: not one-sided
        r = client.post(f"{api}/responses", json={
            "trial_id": t["trial_id"], "choice": ids[label], "left_option": left,
            "confidence": 2, "rt_ms": 1800})
        assert r.is_success, r.text
    assert client.post(f"{api}/finish", json={}).is_success


def test_full_cycle_with_participants_through_the_real_server(tmp_path, fake_prolific):
    fake, base = fake_prolific
    study = make_study(tmp_path / "study", planned=1, config=LENIENT)
    env = {"PROLIFIC_TOKEN": TOKEN, "PROLIFIC_API_URL": base}
    r = _run("prolific", study, "--public-url", URL, "--publish", env=env)
    assert r.exit_code == 0, r.output
    assert fake.studies["study1"]["status"] == "ACTIVE"
    app = create_app(study, default_url(study), admin_token=ADMIN)
    with TestClient(app) as client:
        for n, (pid, right) in enumerate([("good1", True), ("bad1", False), ("good2", True)]):
            fake.submissions[f"sub{n}"] = {"participant_id": pid, "status": "AWAITING REVIEW",
                                           "study_id": "study1"}
            _participate(client, study, pid, f"sub{n}", right=right)
        progress = client.get("/api/v1/admin/progress",
                              headers={"Authorization": f"Bearer {ADMIN}"}).json()
    app.state.engine.dispose()
    # The dashboard's verdict, which the review must follow: only bad1 fails (its catch).
    flags = {p["external_id"]: p["flags"] for p in progress["participant_details"]}
    assert flags == {"good1": [], "bad1": ["catch_accuracy"], "good2": []}
    r = _run("review", study, env=env)
    assert r.exit_code == 0, r.output
    assert [fake.submissions[f"sub{n}"]["status"] for n in range(3)] == [
        "APPROVED", "REJECTED", "APPROVED"]
    (reject,) = [c for c in fake.calls if c[1] == "/api/v1/submissions/sub1/transition/"]
    assert reject[2]["rejection_category"] == "FAILED_CHECK"
    assert "catch accuracy" in reject[2]["message"]
    n_calls = len(fake.calls)
    assert _run("review", study, env=env).exit_code == 0 and len(fake.calls) == n_calls
    assert _run("bonus", study, "--amount", "0.50", env=env).exit_code == 0
    paid = list(fake.paid)
    assert len(paid) == 1 and set(fake.bonuses[paid[0]]["csv_bonuses"].split()) == {
        "good1,0.50", "good2,0.50"}
    assert _run("bonus", study, "--amount", "0.50", env=env).exit_code == 0
    assert fake.paid == paid  # no second pay call
