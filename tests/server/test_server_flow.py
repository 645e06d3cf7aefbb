"""Issue 23 hardening: the flow enforced, identities that cannot be taken over, plan capacity."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_bundle_factory import ADMIN, make_study, truth
from test_server_api import AUTH, answer, new

from causalvis.responses.db import Participant, Response


def _app(study: Path):
    from causalvis.server.app import create_app

    return create_app(study, admin_token=ADMIN)


def _post(client, token: str, step: str, body: dict | None = None):
    return client.post(f"/api/v1/participants/{token}/{step}", json=body or {})


def _stored(client) -> tuple[int, int]:
    """(response rows, participants with instructions recorded)."""
    with client.app.state.experiment.sessions() as db:
        n_rows = db.query(Response).count()
        n_instr = db.query(Participant).filter(Participant.instruction_time_s.isnot(None)).count()
    return n_rows, n_instr


def test_no_completion_code_without_every_step(client, study):
    rows = truth(study)
    body = new(client, "bot-1").json()
    token = body["participant_token"]
    practice = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    mains = [t["trial_id"] for t in body["trials"] if t["kind"] == "main"]
    instr = {"instruction_time_s": 30.0}

    def refused(r, words: str) -> None:
        assert r.status_code == 409 and words in r.json()["detail"], r.text
        assert "completion_code" not in r.json()

    # before consent: nothing is accepted
    refused(_post(client, token, "instructions", instr), "consent first")
    refused(answer(client, token, practice[0]), "consent first")
    refused(answer(client, token, mains[0]), "consent first")
    refused(_post(client, token, "finish"), "consent")
    assert _post(client, token, "consent", {"consent": True}).status_code == 200
    # consented, no instructions: no practice, no main answers, no finish
    refused(answer(client, token, practice[0], rows[practice[0]]["correct"]), "instructions first")
    refused(answer(client, token, mains[0]), "instructions first")
    refused(_post(client, token, "finish"), "instructions")
    assert _stored(client) == (0, 0)
    assert _post(client, token, "instructions", instr).status_code == 200
    # instructed, practice not passed: main answers and finish refused
    refused(answer(client, token, mains[0]), "practice first")
    wrong = {"a": "b", "b": "a"}
    assert answer(client, token, practice[0], wrong[rows[practice[0]]["correct"]]).is_success
    assert answer(client, token, practice[1], rows[practice[1]]["correct"]).is_success
    refused(answer(client, token, mains[0]), "practice first")
    refused(_post(client, token, "finish"), "practice")
    assert _stored(client) == (2, 1)  # the two practice answers only
    for tid in practice:
        assert answer(client, token, tid, rows[tid]["correct"], attempt=2).is_success
    # practice passed: main answers go in; finish waits for every one of them
    assert answer(client, token, mains[0]).status_code == 200
    refused(_post(client, token, "finish"), "trials are not answered yet")
    for tid in mains[1:]:
        assert answer(client, token, tid).status_code == 200
    done = _post(client, token, "finish")
    assert done.status_code == 200 and done.json()["completion_code"].startswith("CV-")


def test_instructions_are_recorded_once(client, study):
    token, _ = _started(client)
    assert _post(client, token, "instructions", {"instruction_time_s": 31.0}).is_success
    assert _post(client, token, "instructions", {"instruction_time_s": 999.0}).is_success
    with client.app.state.experiment.sessions() as db:
        assert db.query(Participant).one().instruction_time_s == 31.0


def _started(client, external_id: str = "lab-x", **kw) -> tuple[str, dict]:
    body = new(client, external_id, **kw).json()
    _post(client, body["participant_token"], "consent", {"consent": True})
    return body["participant_token"], body


def test_sessions_without_practice_skip_that_step(tmp_path):
    study = make_study(tmp_path / "s")
    plan_path = study / "bundle" / "sessions.json"
    plan = json.loads(plan_path.read_text())
    for s in plan["sessions"]:
        s["practice"] = []  # as the paper's `none` condition: no practice
    plan_path.write_text(json.dumps(plan))
    app = _app(study)
    with TestClient(app) as c:
        token, body = _started(c)
        mains = [t["trial_id"] for t in body["trials"]]
        assert all(t["kind"] == "main" for t in body["trials"])
        r = answer(c, token, mains[0])
        assert r.status_code == 409 and "instructions first" in r.json()["detail"]
        _post(c, token, "instructions", {"instruction_time_s": 30.0})
        assert c.get(f"/api/v1/participants/{token}").json()["next"]["stage"] == "main"
        for tid in mains:
            assert answer(c, token, tid).status_code == 200
        assert _post(c, token, "finish").status_code == 200
        prog = c.get("/api/v1/admin/progress", headers=AUTH).json()
        assert "missing_steps" not in prog["participant_details"][0]["flags"]
    app.state.engine.dispose()


def test_exclusion_flags_missing_steps():
    """Rows stored before the flow was enforced (or written around it) are flagged."""
    from datetime import datetime

    from causalvis.responses.exclusion import database_metrics, evaluate

    t0 = datetime(2026, 1, 1)

    def person(pid: int, instr: float | None, session: str) -> Participant:
        return Participant(id=pid, token=f"t{pid}", platform="local", external_id=f"x{pid}",
                           session_id=session, condition="none", status="finished",
                           consent=True, instruction_time_s=instr, created_at=t0,
                           consented_at=t0, last_seen_at=t0, finished_at=t0)  # fmt: skip

    def row(pid: int, kind: str, trial: str) -> Response:
        return Response(participant_id=pid, session_id="s", trial_id=trial, kind=kind,
                        attempt=1, choice="a", confidence=2, rt_ms=900, left_option="a",
                        correct=True)  # fmt: skip

    people = [person(1, 30.0, "s1"), person(2, None, "s1"), person(3, 30.0, "s1"),
              person(4, 30.0, "s2"), person(5, None, "s2")]  # fmt: skip
    rows = {1: [row(1, "practice", "p1"), row(1, "main", "m1")], 2: [row(2, "main", "m1")],
            3: [row(3, "main", "m1")], 4: [row(4, "main", "m2")], 5: []}  # fmt: skip
    res = evaluate(database_metrics(people, rows, practice_sessions={"s1"}))
    crit = res.criteria["missing_steps"]
    # 2: no instructions; 3: no practice in a session with practice; 4: no practice needed;
    # 5: never reached the trials (not this criterion's business)
    assert crit["available"] and crit["participants"] == ["p00002", "p00003"]
    assert "missing_steps" in res.flags["p00002"] and "missing_steps" not in res.flags["p00004"]


# -- identities -----------------------------------------------------------------------------


def test_prolific_resumes_only_the_same_session(client):
    ids = {"study_id": "ST1", "session_id": "SE1"}
    first = new(client, "PID9", "prolific", **ids).json()
    again = new(client, "PID9", "prolific", **ids)
    assert again.status_code == 200
    assert again.json()["participant_token"] == first["participant_token"]
    for other in ({"study_id": "ST1", "session_id": "SE2"}, {"study_id": "ST2", "session_id": "SE1"},
                  {}):  # fmt: skip
        r = new(client, "PID9", "prolific", **other)
        assert r.status_code == 409 and "already taken part" in r.json()["detail"], other
        assert first["participant_token"] not in r.text


def test_mturk_new_assignment_is_a_repeat(client):
    first = new(client, "W7", "mturk", assignment_id="A1").json()
    again = new(client, "W7", "mturk", assignment_id="A1")
    assert again.json()["participant_token"] == first["participant_token"]
    r = new(client, "W7", "mturk", assignment_id="A2")
    assert r.status_code == 409 and "another assignment" in r.json()["detail"]
    assert first["participant_token"] not in r.text


def test_lab_id_needs_the_resume_secret(client):
    first = new(client, "P017").json()
    secret = first["resume_secret"]
    assert len(secret) >= 16
    r = new(client, "P017")
    assert r.status_code == 409 and "already in use" in r.json()["detail"]
    assert first["participant_token"] not in r.text
    assert new(client, "P017", resume_secret="x" * 24).status_code == 409
    ok = new(client, "P017", resume_secret=secret)
    assert ok.status_code == 200 and ok.json()["participant_token"] == first["participant_token"]
    with client.app.state.experiment.sessions() as db:
        stored = db.query(Participant).one().resume_secret_hash
    assert stored and secret not in stored  # only its hash is kept


# -- plan capacity --------------------------------------------------------------------------


def test_study_full_is_refused_with_the_screened_out_code(tmp_path):
    study = make_study(tmp_path / "s", planned=2, server={"prolific_full_code": "FULL01"})
    app = _app(study)
    with TestClient(app) as c:
        places = 4 * 2  # four sessions of two planned participants each
        for i in range(places):
            assert new(c, f"PID{i}", "prolific", study_id="S", session_id=f"E{i}").status_code == 201
        r = new(c, "PID-late", "prolific", study_id="S", session_id="E-late")
        assert r.status_code == 409
        assert r.json()["study_full"] is True and "study full" in r.json()["detail"]
        assert r.json()["completion_code"] == "FULL01"
        assert r.json()["redirect_url"].endswith("cc=FULL01")
        lab = new(c, "lab-late")
        assert lab.status_code == 409 and lab.json()["completion_code"] is None
        cap = c.get("/api/v1/admin/progress", headers=AUTH).json()["capacity"]
        assert cap == {"planned": 8, "overassign_factor": 1.0, "places": 8, "taken": 8,
                       "full": True, "refused_full": 2}  # fmt: skip
        with app.state.experiment.sessions() as db:
            assert db.query(Participant).count() == places  # nothing stored for the refused
    app.state.engine.dispose()


def test_overassign_factor_hands_out_balanced_extra_places(tmp_path):
    study = make_study(tmp_path / "s", planned=2, server={"overassign_factor": 1.5})
    app = _app(study)
    with TestClient(app) as c:
        sessions = []
        for i in range(12):  # 4 sessions x floor(2 x 1.5) = 12 places
            r = new(c, f"lab{i}")
            assert r.status_code == 201, (i, r.text)
            sessions.append(r.json()["trials"][2]["trial_id"])
        assert sorted(sessions.count(s) for s in set(sessions)) == [3, 3, 3, 3]
        assert sessions[8:].count(sessions[8]) == 1  # the extra places go round, balanced
        assert new(c, "lab-13").json()["study_full"] is True
        cap = c.get("/api/v1/admin/progress", headers=AUTH).json()["capacity"]
        assert (cap["planned"], cap["places"], cap["full"]) == (8, 12, True)
    app.state.engine.dispose()


def test_overassign_factor_is_validated():
    from pydantic import ValidationError

    from causalvis.config import ServerConfig

    with pytest.raises(ValidationError):
        ServerConfig(overassign_factor=0.5)


def test_a_0001_database_upgrades_to_0002(tmp_path):
    """A database created before the resume secret keeps its participants."""
    from sqlalchemy import text

    from causalvis.responses.db import make_engine

    study = make_study(tmp_path / "s")
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    from alembic import command
    from alembic.config import Config

    from causalvis.responses.db import MIGRATIONS

    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.execute(text(
            "INSERT INTO participants (token, platform, external_id, session_id, condition, "
            "status, created_at, last_seen_at) VALUES ('t' || hex(randomblob(12)), 'local', "
            "'old-1', 's0000', 'none', 'active', '2026-01-01', '2026-01-01')"))  # fmt: skip
    engine.dispose()
    from causalvis.server.app import create_app

    app = create_app(study, url, admin_token=ADMIN)
    with TestClient(app) as c:
        # created without a secret: its id cannot be taken over
        assert new(c, "old-1").status_code in (409, 410)
        assert c.get("/api/v1/admin/progress", headers=AUTH).json()["participants"]["total"] == 1
    app.state.engine.dispose()



def test_a_retried_creation_with_the_browsers_secret_resumes(client):
    """The page makes its secret before the first POST: a retry whose 201 was lost resumes."""
    body = {"platform": "local", "external_id": "lab-r", "resume_secret": "b" * 32}
    first = client.post("/api/v1/participants", json=body)
    again = client.post("/api/v1/participants", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["resume_secret"] == "b" * 32
    assert again.json()["participant_token"] == first.json()["participant_token"]
    short = {"platform": "local", "external_id": "lab-s", "resume_secret": "short"}
    assert client.post("/api/v1/participants", json=short).status_code == 422


def test_create_app_can_override_the_overassign_factor(tmp_path):
    """For a simulated pilot (``causalvis demo``) that runs more participants than planned."""
    from causalvis.server.app import create_app

    study = make_study(tmp_path / "s")
    app = create_app(study, admin_token=ADMIN, overassign_factor=2.0)
    with TestClient(app) as c:
        assert [new(c, f"sim{i}").status_code for i in range(9)] == [201] * 8 + [409]
    app.state.engine.dispose()
