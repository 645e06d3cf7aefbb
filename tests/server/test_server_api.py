"""Every endpoint of the participant and admin API, on SQLite and (if configured) PostgreSQL."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from server_bundle_factory import ADMIN, make_study, truth

from causalvis.errors import CausalvisError

AUTH = {"Authorization": f"Bearer {ADMIN}"}
NO_OPTION = "o" + "0" * 15  # a well-formed option id of no trial


def option_id(client, token: str, trial_id: str, label: str | None) -> str | None:
    """The opaque id the server gave option ``label`` of ``trial_id`` for this participant
    (the browser never learns labels; the tests read them from trials.csv). Anything but
    a label passes through; an unknown participant or trial gets a well-formed dummy."""
    from sqlalchemy import select

    from causalvis.responses.db import Participant

    if label not in ("a", "b"):
        return label
    exp = client.app.state.experiment
    with exp.sessions() as db:
        p = db.scalar(select(Participant).where(Participant.token == token))
    if p is None or p.session_id not in exp.bundle.sessions or trial_id not in exp.bundle.trials:
        return NO_OPTION
    return exp.option_ids(p.session_id, trial_id)[label]


def new(client, external_id: str = "lab-01", platform: str = "local", **extra):
    return client.post(
        "/api/v1/participants", json={"platform": platform, "external_id": external_id, **extra}
    )


def answer(client, token: str, trial_id: str, choice: str = "a", **extra):
    """Answer with a label (``a``/``b``, mapped to its option id, also for ``left_option``)
    or with an option id as is."""
    if "left_option" in extra:
        extra["left_option"] = option_id(client, token, trial_id, extra["left_option"])
    body = {"trial_id": trial_id, "choice": option_id(client, token, trial_id, choice),
            "confidence": 2, "rt_ms": 1234, **extra}  # fmt: skip
    return client.post(f"/api/v1/participants/{token}/responses", json=body)


def start(client, study: Path, external_id: str = "lab-01", **kw) -> tuple[str, dict]:
    """Create, consent, read instructions and pass practice in one attempt."""
    r = new(client, external_id, **kw)
    assert r.status_code == 201, r.text
    body = r.json()
    return advance(client, study, body["participant_token"], body), body


def advance(client, study: Path, token: str, body: dict) -> str:
    """Consent, read instructions and pass practice in one attempt."""
    assert client.post(f"/api/v1/participants/{token}/consent", json={"consent": True}).is_success
    r = client.post(
        f"/api/v1/participants/{token}/instructions",
        json={"instruction_time_s": 42.5, "window_width": 1280, "window_height": 800},
    )
    assert r.status_code == 200, r.text
    rows = truth(study)
    for t in body["trials"]:
        if t["kind"] == "practice":
            ok = answer(client, token, t["trial_id"], rows[t["trial_id"]]["correct"])
            assert ok.json()["correct"] is True
    return token


def test_create_assigns_session_and_hides_truth(client, study):
    r = new(client)
    assert r.status_code == 201
    body = r.json()
    assert set(body) >= {"participant_token", "condition", "trials", "state", "example"}
    assert body["condition"] in ("none", "natural")
    rows = truth(study)
    kinds = [rows[t["trial_id"]]["kind"] for t in body["trials"]]
    assert kinds[:2] == ["practice", "practice"]
    assert sorted(kinds[2:]) == ["catch", "main", "main"]
    for t in body["trials"]:
        assert t["kind"] in ("practice", "main")  # catch trials are not singled out
        assert set(t) == {"trial_id", "kind", "query", "options", "references"}
        row = rows[t["trial_id"]]
        assert t["query"] == "/" + row["query_asset"]
        # issue 17: a list of opaque ids in id order, no labels
        assert [o["id"] for o in t["options"]] == sorted(o["id"] for o in t["options"])
        assert {o["src"] for o in t["options"]} == {"/" + row["option_a_asset"],
                                                    "/" + row["option_b_asset"]}  # fmt: skip
        refs = row["reference_assets"].split()
        assert t["references"] == ["/" + x for x in refs]
        assert (len(refs) == 0) == (body["condition"] == "none")
    text = r.text
    assert "correct" not in json.dumps(body["trials"]) and "act_" not in text
    assert body["state"]["next"]["stage"] == "consent"
    # the worked example is a practice trial here, so its answer may be shown (as an id)
    ex = body["example"]
    token = body["participant_token"]
    assert ex["correct"] == option_id(client, token, ex["trial_id"], rows[ex["trial_id"]]["correct"])


def test_balanced_assignment_and_resume_and_409(client, study):
    conds, sessions, bodies = [], [], []
    for i in range(4):
        body = new(client, f"p{i}").json()
        bodies.append(body)
        conds.append(body["condition"])
        sessions.append(body["trials"][2]["trial_id"])
    assert sorted(conds) == ["natural", "natural", "none", "none"]
    assert len(set(sessions)) == 4  # four different sessions
    first = bodies[0]
    # a lab id resumes only with the secret its browser got at creation
    again = new(client, "p0", resume_secret=first["resume_secret"])
    assert again.status_code == 200 and "resume_secret" not in again.json()
    assert again.json()["participant_token"] == first["participant_token"]
    assert again.json()["participant_token"] != bodies[1]["participant_token"]
    for stolen in ({}, {"resume_secret": bodies[1]["resume_secret"]}):
        r = new(client, "p0", **stolen)
        assert r.status_code == 409 and "already in use" in r.json()["detail"]
        assert "participant_token" not in r.text
    token = advance(client, study, first["participant_token"], first)
    for t in first["trials"][2:]:
        assert answer(client, token, t["trial_id"]).status_code == 200
    assert client.post(f"/api/v1/participants/{token}/finish", json={}).status_code == 200
    r = new(client, "p0", resume_secret=first["resume_secret"])
    assert r.status_code == 409 and r.json()["detail"] == "this participant has already taken part"


def test_abandoned_sessions_are_handed_out_again(tmp_path):
    from fastapi.testclient import TestClient
    from server_bundle_factory import make_study
    from sqlalchemy import update

    from causalvis.responses.db import Participant, utcnow
    from causalvis.server.app import create_app

    study = make_study(tmp_path / "s", abandon_after_minutes=5)
    app = create_app(study, admin_token=ADMIN)
    with TestClient(app) as c:
        tokens = [new(c, f"x{i}").json()["participant_token"] for i in range(4)]
        exp = app.state.experiment
        with exp.sessions() as db:
            old = utcnow().replace(year=2020)
            db.execute(
                update(Participant).where(Participant.token == tokens[1]).values(last_seen_at=old)
            )
            db.commit()
            gone = db.query(Participant).filter_by(token=tokens[1]).one().session_id
        fresh = new(c, "x-new").json()
        with exp.sessions() as db:
            got = db.query(Participant).filter_by(token=fresh["participant_token"]).one()
            assert got.session_id == gone
            assert db.query(Participant).filter_by(token=tokens[1]).one().status == "abandoned"
        # the abandoned participant may come back and continue
        assert c.get(f"/api/v1/participants/{tokens[1]}").json()["status"] == "active"
    app.state.engine.dispose()


def test_responses_validated_idempotent_and_stored(client, study):
    token, body = start(client, study)
    main = [t for t in body["trials"] if t["kind"] == "main"]
    tid = main[0]["trial_id"]
    bad = [
        {"trial_id": tid, "choice": "c", "confidence": 2, "rt_ms": 100},
        {"trial_id": tid, "choice": "a", "confidence": 0, "rt_ms": 100},
        {"trial_id": tid, "choice": "a", "confidence": 4, "rt_ms": 100},
        {"trial_id": tid, "choice": "a", "confidence": 2, "rt_ms": 0},
        {"trial_id": tid, "choice": "a", "confidence": 2, "rt_ms": 10**9},
        {"trial_id": tid, "choice": "a", "confidence": 2},
        {"trial_id": tid, "choice": "a", "confidence": 2, "rt_ms": 5, "secret": 1},
        {"trial_id": tid, "choice": "a", "confidence": 2, "rt_ms": 5, "attempt": 2},
    ]
    for payload in bad:
        r = client.post(f"/api/v1/participants/{token}/responses", json=payload)
        assert 400 <= r.status_code < 500, payload
    assert answer(client, token, "no-such-trial").status_code == 404
    foreign = next(t for t in truth(study) if t not in {x["trial_id"] for x in body["trials"]})
    assert answer(client, token, foreign).status_code == 404
    assert answer(client, "bad-token", tid).status_code == 404
    assert client.get(f"/api/v1/participants/{token}").json()["answered"] == []

    r1 = answer(client, token, tid, "b", left_option="b", shown_at=1_790_000_000_000)
    assert r1.status_code == 200 and "correct" not in r1.json()
    assert r1.json() == {"ok": True, "n_answered": 1, "n_trials": 3}
    r2 = answer(client, token, tid, "b", left_option="b")  # retried POST
    assert r2.status_code == 200 and r2.json() == r1.json()
    assert answer(client, token, tid, "a").status_code == 409  # a different answer
    state = client.get(f"/api/v1/participants/{token}").json()
    assert state["answered"] == [tid]
    assert state["next"] == {"stage": "main", "trial_id": main[1]["trial_id"]}
    with client.app.state.experiment.sessions() as db:
        from causalvis.responses.db import Response

        rows = db.query(Response).all()
    mains = [r for r in rows if r.kind != "practice"]
    assert len(mains) == 1
    row = mains[0]
    assert (row.trial_id, row.choice, row.confidence, row.rt_ms, row.left_option) == (
        tid, "b", 2, 1234, "b"
    )  # fmt: skip
    assert row.correct == (truth(study)[tid]["correct"] == "b")
    assert row.shown_at is not None and row.shown_at.year == 2026


def test_practice_feedback_and_attempts(client, study):
    body = new(client).json()
    token = body["participant_token"]
    practice = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    assert answer(client, token, practice[0]).status_code == 409  # no answers before consent
    client.post(f"/api/v1/participants/{token}/consent", json={"consent": True})
    client.post(f"/api/v1/participants/{token}/instructions", json={"instruction_time_s": 30})
    rows = truth(study)
    practice = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    wrong = {"a": "b", "b": "a"}
    # attempt 1: first wrong, second right -> not passed
    r = answer(client, token, practice[0], wrong[rows[practice[0]]["correct"]])
    assert r.json() == {"correct": False, "attempt": 1, "practice_passed": False}
    r = answer(client, token, practice[1], rows[practice[1]]["correct"])
    assert r.json()["correct"] is True and r.json()["practice_passed"] is False
    state = client.get(f"/api/v1/participants/{token}").json()
    assert state["next"]["stage"] == "practice" and state["practice_attempts"] == 1
    assert answer(client, token, practice[0], attempt=3).status_code == 422  # skipping
    for tid in practice:
        r = answer(client, token, tid, rows[tid]["correct"], attempt=2)
    assert r.json() == {"correct": True, "attempt": 2, "practice_passed": True}
    state = client.get(f"/api/v1/participants/{token}").json()
    assert state["next"]["stage"] == "main" and state["practice_attempts"] == 2
    assert answer(client, token, practice[0], attempt=3).status_code == 409


def test_consent_declined_prolific(client):
    body = new(client, "PROLIFIC123", "prolific", study_id="S1", session_id="SS1").json()
    token = body["participant_token"]
    r = client.post(f"/api/v1/participants/{token}/consent", json={"consent": False})
    assert r.json()["completion_code"] == "N0CONSENT"
    assert r.json()["redirect_url"] == "https://app.prolific.com/submissions/complete?cc=N0CONSENT"
    assert answer(client, token, body["trials"][0]["trial_id"]).status_code == 409
    assert new(client, "PROLIFIC123", "prolific").status_code == 409
    assert client.post(f"/api/v1/participants/{token}/instructions",
                       json={"instruction_time_s": 3}).status_code == 409  # fmt: skip


@pytest.mark.parametrize("catch_right, code", [(True, "C0MPLETE"), (False, "FA1LED")])
def test_finish_prolific_codes(client, study, catch_right, code):
    token, body = start(client, study, "PID1", platform="prolific")
    rows = truth(study)
    mains = [t["trial_id"] for t in body["trials"] if t["kind"] == "main"]
    assert client.post(f"/api/v1/participants/{token}/finish").status_code == 409  # too early
    for tid in mains:
        ok = rows[tid]["correct"]
        pick = ok if rows[tid]["kind"] != "catch" or catch_right else {"a": "b", "b": "a"}[ok]
        assert answer(client, token, tid, pick).status_code == 200
    assert client.get(f"/api/v1/participants/{token}").json()["next"]["stage"] == ("feedback")
    r = client.post(f"/api/v1/participants/{token}/finish", json={"feedback": "fine, thanks"})
    assert r.status_code == 200
    assert r.json()["completion_code"] == code
    assert r.json()["redirect_url"].endswith(f"cc={code}")
    again = client.post(f"/api/v1/participants/{token}/finish", json={})
    assert again.json()["completion_code"] == code  # idempotent
    assert answer(client, token, mains[0]).status_code == 409
    state = client.get(f"/api/v1/participants/{token}").json()
    assert state["next"]["stage"] == "finished" and state["status"] == "finished"


def test_mturk_preview_submit_and_local_code(client, study):
    preview = new(client, "W1", "mturk", assignment_id="ASSIGNMENT_ID_NOT_AVAILABLE")
    assert preview.status_code == 400
    evil = new(client, "W1", "mturk", assignment_id="A1", turk_submit_to="https://evil.example")
    assert evil.status_code == 422
    token, body = start(client, study, "W1", platform="mturk", assignment_id="A1", hit_id="H1",
                        turk_submit_to="https://workersandbox.mturk.com")  # fmt: skip
    for t in body["trials"][2:]:
        answer(client, token, t["trial_id"])
    r = client.post(f"/api/v1/participants/{token}/finish").json()
    assert r["redirect_url"] is None
    assert r["mturk_submit"]["action"] == "https://workersandbox.mturk.com/mturk/externalSubmit"
    assert r["mturk_submit"]["fields"]["assignmentId"] == "A1"
    assert r["completion_code"].startswith("CV-")
    tok2, body2 = start(client, study, "lab-7")
    for t in body2["trials"][2:]:
        answer(client, tok2, t["trial_id"])
    local = client.post(f"/api/v1/participants/{tok2}/finish").json()
    assert local["redirect_url"] is None and local["mturk_submit"] is None
    assert (
        local["completion_code"].startswith("CV-")
        and local["completion_code"] != r["completion_code"]
    )


def test_payload_validation_on_create(client):
    assert new(client, "", "local").status_code == 422
    assert new(client, "a b", "local").status_code == 422
    assert new(client, "x", "facebook").status_code == 422
    assert client.post("/api/v1/participants", json={"platform": "local"}).status_code == 422


def test_admin_requires_token(client):
    for path in ("/api/v1/admin/progress", "/api/v1/admin/responses.csv",
                 "/api/v1/admin/responses.parquet"):  # fmt: skip
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get(path, headers={"Authorization": ADMIN}).status_code == 401
        assert client.get(path, headers=AUTH).status_code == 200


def test_admin_progress_and_exports(client, study):
    token, body = start(client, study, "done-1")
    rows = truth(study)
    for t in body["trials"][2:]:  # always the correct option, always shown on the left
        ok = rows[t["trial_id"]]["correct"]
        answer(client, token, t["trial_id"], ok, left_option=ok)
    client.post(f"/api/v1/participants/{token}/finish", json={"feedback": "ok"})
    new(client, "still-going")
    prog = client.get("/api/v1/admin/progress", headers=AUTH).json()
    assert prog["participants"] == {"active": 1, "finished": 1, "abandoned": 0, "declined": 0,
                                    "screened_out": 0, "total": 2}  # fmt: skip
    assert prog["screened_out"] == 0
    cond = next(c for c in prog["conditions"] if c["finished"] == 1)
    assert cond["accuracy"] == 1.0 and cond["n_main"] == 2
    assert sum(s["need"] for s in prog["sessions"]) == 2
    done = next(p for p in prog["participant_details"] if p["external_id"] == "done-1")
    assert done["catch_accuracy"] == 1.0 and done["practice_attempts"] == 1
    assert "total_time" in done["flags"]  # finished in well under 90 s
    assert "one_sided" in done["flags"]  # always the left option
    assert "instruction_time" not in done["flags"]

    csv_r = client.get("/api/v1/admin/responses.csv", headers=AUTH)
    assert csv_r.headers["content-type"].startswith("text/csv")
    frame = pd.read_csv(io.StringIO(csv_r.text))
    from causalvis.responses.export import COLUMNS

    assert list(frame.columns) == COLUMNS
    assert len(frame) == 5  # 2 practice + 2 main + 1 catch
    main = frame[frame.kind != "practice"]
    assert set(main.trial_id) == {t["trial_id"] for t in body["trials"][2:]}
    assert main.correct.all() and (main["catch"] == (main.kind == "catch")).all()
    assert (main.rt == 1234).all() and (main.left_option == main.choice).all()
    assert (frame.instruction_time_s == 42.5).all() and (frame.status == "finished").all()
    for _, r in main.iterrows():
        assert r.layer == rows[r.trial_id]["layer"] and r.unit == rows[r.trial_id]["unit"]
    pq = client.get("/api/v1/admin/responses.parquet", headers=AUTH)
    pframe = pd.read_parquet(io.BytesIO(pq.content))
    assert list(pframe.columns) == COLUMNS and len(pframe) == 5


def test_responses_frame_library_function(client, study, db_url):
    token, body = start(client, study)
    answer(client, token, body["trials"][2]["trial_id"])
    from causalvis.responses.export import responses_frame

    frame = responses_frame(db_url if db_url.startswith("postgres") else None, study)
    with pytest.raises(CausalvisError, match="no responses database"):
        responses_frame(None, make_study(study.parent / "empty"))
    assert len(frame) == 3 and frame.iloc[-1].trial_id == body["trials"][2]["trial_id"]
    assert frame.practice_attempts.tolist() == [1, 1, 1]


def test_assets_served_private_files_not(client, study):
    body = new(client).json()
    url = body["trials"][0]["query"]
    r = client.get(url)
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    for path in ("/assets/../trials.csv", "/assets/..%2Ftrials.csv", "/assets/%2e%2e/study.toml",
                 "/assets/../bundle/sessions.json", "/trials.csv", "/bundle/sessions.json",
                 "/static/../../trials.csv", "/assets/", "/assets/.hidden",
                 "/static/..%2F..%2Fpackage.json"):  # fmt: skip
        assert client.get(path).status_code == 404, path
    assert client.get("/admin").status_code == 200
    assert client.get("/healthz").json()["ok"] is True


def test_alembic_schema_is_at_head(client, db_url):
    from sqlalchemy import inspect, text

    engine = client.app.state.engine
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0005"
        if db_url == "sqlite" or db_url.startswith("sqlite"):
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    assert {"participants", "responses"} <= set(inspect(engine).get_table_names())


def test_participants_of_an_earlier_build(client, study):
    from sqlalchemy import update

    from causalvis.responses.db import Participant
    from causalvis.server.run import banner

    token = new(client, "old-1").json()["participant_token"]
    with client.app.state.experiment.sessions() as db:
        db.execute(update(Participant).values(session_id="s-gone"))
        db.commit()
    assert client.get(f"/api/v1/participants/{token}").status_code == 410
    assert new(client, "old-1").status_code == 410
    assert answer(client, token, "t0001").status_code == 410
    prog = client.get("/api/v1/admin/progress", headers=AUTH)
    assert prog.status_code == 200 and prog.json()["participants"]["total"] == 1
    assert "1 participants of sessions not in this plan" in "\n".join(banner(client.app, "x"))
