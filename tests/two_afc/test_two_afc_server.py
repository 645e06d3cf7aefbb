"""The participant API on a 2-AFC bundle: payload shape, no ground truth before answering,
the optional running score, practice feedback, and the export's ``model`` column."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_bundle_factory import ADMIN, make_study, truth  # noqa: E402

from causalvis.errors import CausalvisError  # noqa: E402
from causalvis.server.bundle import load_bundle  # noqa: E402

AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def make_client(tmp_path: Path):
    from causalvis.server.app import create_app

    apps = []

    def make(correct_counter: bool) -> tuple[TestClient, Path]:
        study = make_study(tmp_path / f"s{len(apps)}", task="two_afc",
                           correct_counter=correct_counter)  # fmt: skip
        app = create_app(study, f"sqlite:///{study / 'responses.sqlite'}", admin_token=ADMIN)
        client = TestClient(app)
        client.__enter__()
        apps.append((client, app))
        return client, study

    yield make
    for client, app in apps:
        client.__exit__(None, None, None)
        app.state.engine.dispose()


def _start(client: TestClient, external_id: str = "lab-01") -> tuple[str, dict]:
    r = client.post("/api/v1/participants", json={"platform": "local", "external_id": external_id})
    assert r.status_code == 201, r.text
    body = r.json()
    token = body["participant_token"]
    base = f"/api/v1/participants/{token}"
    assert client.post(f"{base}/consent", json={"consent": True}).is_success
    assert client.post(f"{base}/instructions", json={"instruction_time_s": 30.0}).is_success
    return token, body


def _answer(client: TestClient, token: str, trial_id: str, choice: str, **extra):
    """``choice``/``left_option`` as labels, sent as this participant's option ids."""
    from test_server_api import option_id

    if "left_option" in extra:
        extra["left_option"] = option_id(client, token, trial_id, extra["left_option"])
    body = {"trial_id": trial_id, "choice": option_id(client, token, trial_id, choice),
            "confidence": 3, "rt_ms": 900, **extra}  # fmt: skip
    return client.post(f"/api/v1/participants/{token}/responses", json=body)


def _flip(choice: str) -> str:
    return {"a": "b", "b": "a"}[choice]


def test_payload_shape_and_no_ground_truth(make_client):
    client, study = make_client(correct_counter=True)
    rows = truth(study)
    r = client.post("/api/v1/participants", json={"platform": "local", "external_id": "p1"})
    body = r.json()
    assert body["task"] == "two_afc" and body["state"]["task"] == "two_afc"
    assert body["settings"]["correct_counter"] is True
    assert body["condition"] in ("natural", "synthetic")
    for t in body["trials"]:
        assert set(t) == {"trial_id", "kind", "query", "options", "references", "min_references"}
        row = rows[t["trial_id"]]
        assert t["query"] is None and t["kind"] in ("practice", "main")
        srcs = [o["src"] for o in t["options"]]
        assert sorted(srcs) == sorted(["/" + row["option_a_asset"], "/" + row["option_b_asset"]])
        assert t["references"] == ["/" + x for x in row["reference_assets"].split()]
        assert t["min_references"] == ["/" + x for x in row["min_reference_assets"].split()]
        assert len(t["references"]) == len(t["min_references"]) == 9
        # served images are opaque: content-hashed names that say nothing about min/max
        for url in (*srcs, *t["references"], *t["min_references"]):
            assert url.startswith("/assets/") and len(Path(url).stem) == 20
    # a catch trial looks like a main trial; its queries are among the references
    catch = [t for t in body["trials"] if rows[t["trial_id"]]["kind"] == "catch"]
    assert len(catch) == 1 and catch[0]["kind"] == "main"
    refs = set(catch[0]["references"]) | set(catch[0]["min_references"])
    assert {o["src"] for o in catch[0]["options"]} <= refs
    scored = json.dumps(body["trials"])
    for leak in ("correct", "act_", "rel_diff", "lite0", "model"):
        assert leak not in scored, leak
    assert "act_" not in r.text and "rel_diff" not in r.text
    # the page source (HTML, scripts) carries no trial data at all
    page = client.get("/").text
    assert "assets/" not in page and "correct" not in page
    # the served bytes are the files of the bundle
    url = body["trials"][0]["options"][0]["src"]
    assert client.get(url).content == (study / "bundle" / url.lstrip("/")).read_bytes()


def test_counter_ack_only_after_answer_and_only_when_enabled(make_client):
    for enabled in (True, False):
        client, study = make_client(correct_counter=enabled)
        rows = truth(study)
        token, body = _start(client, f"p-{enabled}")
        state = client.get(f"/api/v1/participants/{token}").json()
        assert ("n_correct" in state) is enabled and '"correct"' not in json.dumps(state)
        practice = [t for t in body["trials"] if t["kind"] == "practice"]
        for t in practice:
            ack = _answer(client, token, t["trial_id"], rows[t["trial_id"]]["correct"]).json()
            assert ack["correct"] is True  # practice feedback, with or without the counter
        main = [t for t in body["trials"] if t["kind"] == "main"]
        wrong = main[0]["trial_id"]
        acks = [
            _answer(client, token, t["trial_id"],
                    rows[t["trial_id"]]["correct"] if t["trial_id"] != wrong
                    else _flip(rows[t["trial_id"]]["correct"]), left_option="b").json()
            for t in main
        ]  # fmt: skip
        if enabled:
            assert [a["correct"] for a in acks] == [False] + [True] * (len(main) - 1)
            assert [a["n_correct"] for a in acks] == list(range(len(main)))
            # a retried POST is scored as stored; the answer cannot be changed afterwards
            retry = _answer(client, token, wrong, _flip(rows[wrong]["correct"]), left_option="b")
            assert (retry.json()["correct"], retry.json()["n_correct"]) == (False, len(main) - 1)
            changed = _answer(client, token, wrong, rows[wrong]["correct"])
            assert changed.status_code == 409 and "correct" not in changed.text
            after = client.get(f"/api/v1/participants/{token}").json()
            assert after["n_correct"] == len(main) - 1
        else:
            assert all(set(a) == {"ok", "n_answered", "n_trials"} for a in acks)
        finish = client.post(f"/api/v1/participants/{token}/finish", json={})
        assert finish.status_code == 200, finish.text


def test_practice_feedback_and_repeat(make_client):
    client, study = make_client(correct_counter=False)
    rows = truth(study)
    token, body = _start(client)
    practice = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    assert _answer(client, token, practice[0], _flip(rows[practice[0]]["correct"])).json() == {
        "correct": False, "attempt": 1, "practice_passed": False}  # fmt: skip
    assert _answer(client, token, practice[1], rows[practice[1]]["correct"]).json()["correct"]
    state = client.get(f"/api/v1/participants/{token}").json()
    assert state["next"]["stage"] == "practice" and state["practice_attempts"] == 1
    for tid in practice:
        ack = _answer(client, token, tid, rows[tid]["correct"], attempt=2).json()
        assert ack["correct"] is True
    assert ack["practice_passed"] is True
    assert client.get(f"/api/v1/participants/{token}").json()["next"]["stage"] == "main"


def test_export_has_model_column_and_stored_answers(make_client):
    from causalvis.responses.export import COLUMNS

    client, study = make_client(correct_counter=True)
    rows = truth(study)
    token, body = _start(client)
    for t in body["trials"]:
        _answer(client, token, t["trial_id"], rows[t["trial_id"]]["correct"], left_option="a")
    frame = pd.read_csv(io.StringIO(client.get("/api/v1/admin/responses.csv", headers=AUTH).text))
    at = COLUMNS.index("channel") + 1
    assert list(frame.columns) == [*COLUMNS[:at], "model", *COLUMNS[at:]]
    assert (frame.model == "lite0").all() and len(frame) == len(body["trials"])
    assert frame.correct.all() and (frame.left_option == "a").all()


def _rewrite(study: Path, trial_id: str, **cells: str) -> None:
    path = study / "trials.csv"
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        fields, table = reader.fieldnames, list(reader)
    for row in table:
        if row["trial_id"] == trial_id:
            row.update(cells)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(table)


def test_bundle_errors_and_old_bundles(tmp_path):
    study = make_study(tmp_path / "a", task="two_afc")
    b = load_bundle(study)
    assert b.task == "two_afc" and all(t.query is None and t.model == "lite0"
                                       for t in b.trials.values())  # fmt: skip
    _rewrite(study, "t0003", min_reference_assets="")
    with pytest.raises(CausalvisError, match=r"trials.csv:4: .*min_reference_assets is empty"):
        load_bundle(study)
    # the task comes from the config when sessions.json does not name it
    study = make_study(tmp_path / "b", task="two_afc")
    plan = json.loads((study / "bundle" / "sessions.json").read_text())
    del plan["task"]
    (study / "bundle" / "sessions.json").write_text(json.dumps(plan))
    assert load_bundle(study).task == "two_afc"
    plan["task"] = "three_afc"
    (study / "bundle" / "sessions.json").write_text(json.dumps(plan))
    with pytest.raises(CausalvisError, match="task 'three_afc'"):
        load_bundle(study)
    # an occlusion bundle without the new columns still loads; its query stays required
    old = load_bundle(make_study(tmp_path / "c"))
    assert old.task == "causal_occlusion"
    assert all(t.min_references == () and t.model == "" for t in old.trials.values())
    study = make_study(tmp_path / "d")
    _rewrite(study, "t0001", query_asset="")
    with pytest.raises(CausalvisError, match="trials.csv:2: asset path ''"):
        load_bundle(study)


def test_real_built_study_is_served(tiny_two_afc_sessions, tmp_path):
    """The study builder's own two_afc bundle (stage sessions on the tiny real study): every
    trial is served with its minimal and maximal references, the served query bytes are the
    bundle's, and scoring follows trials.csv (the maximal query is correct)."""
    import shutil

    from causalvis.server.app import create_app

    root = tmp_path / "study"
    shutil.copytree(tiny_two_afc_sessions[0], root)
    rows = truth(root)
    app = create_app(root, f"sqlite:///{root / 'responses.sqlite'}", admin_token=ADMIN)
    with TestClient(app) as client:
        token, body = _start(client)
        assert body["task"] == "two_afc" and body["settings"]["correct_counter"] is True
        exp = client.app.state.experiment
        with exp.sessions() as db:
            from sqlalchemy import select

            from causalvis.responses.db import Participant

            sid = db.scalar(select(Participant.session_id).where(Participant.token == token))
        session = exp.bundle.sessions[sid]
        for t in body["trials"]:
            row = rows[t["trial_id"]]
            assert t["query"] is None and row["query_asset"] == ""
            # the references of trials.csv, in the order this session shows them
            for key, col, side in (("references", "reference_assets", "max"),
                                   ("min_references", "min_reference_assets", "min")):
                listed = ["/" + x for x in row[col].split()]
                order = session.shown_order(t["trial_id"], len(listed), side)
                assert t[key] == [listed[i] for i in order]
            assert len(t["references"]) == len(t["min_references"]) == 3
            good = "/" + row[f"option_{row['correct']}_asset"]
            assert good in {o["src"] for o in t["options"]}
            assert client.get(good).content == (root / "bundle" / good.lstrip("/")).read_bytes()
        for t in body["trials"]:
            ack = _answer(client, token, t["trial_id"], rows[t["trial_id"]]["correct"]).json()
            assert ack["correct"] is True
        assert ack["n_correct"] == ack["n_trials"]
        frame = pd.read_csv(
            io.StringIO(client.get("/api/v1/admin/responses.csv", headers=AUTH).text)
        )
        assert set(frame.model) == {"lite0"} and frame.correct.all()
    app.state.engine.dispose()
