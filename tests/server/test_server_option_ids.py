"""Issue 17: what the browser receives says nothing about the answer (opaque option ids in
a balanced order, no labels, equal byte sizes), ids map back to labels, and practice is
drawn per participant."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_bundle_factory import ADMIN, make_study, truth
from test_server_api import NO_OPTION, answer, new, option_id

from causalvis.responses.db import Participant, Response
from causalvis.server.assignment import draw_practice


@pytest.fixture
def pooled(tmp_path: Path):
    """A client on the newer plan: practice pools, a practice draw, example trials."""
    from causalvis.server.app import create_app

    study = make_study(tmp_path / "s", pools=True)
    app = create_app(study, admin_token=ADMIN)
    with TestClient(app) as c:
        yield c, study
    app.state.engine.dispose()


def _ready(client, token: str) -> None:
    base = f"/api/v1/participants/{token}"
    assert client.post(f"{base}/consent", json={"consent": True}).is_success
    assert client.post(f"{base}/instructions", json={"instruction_time_s": 30.0}).is_success


def _strategies(client, token: str, trial: dict) -> dict[str, str]:
    """The option id each metadata strategy picks (none of them may know the answer)."""
    opts = trial["options"]
    sizes = {o["id"]: len(client.get(o["src"]).content) for o in opts}
    return {
        "first_listed": opts[0]["id"],
        "id_sorts_first": min(o["id"] for o in opts),
        "label_a": option_id(client, token, trial["trial_id"], "a"),
        "larger_asset": max(opts, key=lambda o: sizes[o["id"]])["id"],  # ties: first listed
        "smaller_asset": min(opts, key=lambda o: sizes[o["id"]])["id"],
    }


@pytest.mark.parametrize("task", ["causal_occlusion", "two_afc"])
def test_no_metadata_strategy_beats_chance_in_any_session(tmp_path, task):
    from causalvis.server.app import create_app

    study = make_study(tmp_path / "s", task=task, **({"pools": True} if task != "two_afc" else {}))
    rows = truth(study)
    app = create_app(study, admin_token=ADMIN)
    with TestClient(app) as c:
        n_sessions = len(app.state.experiment.bundle.sessions)
        seen = set()
        for i in range(n_sessions):  # one participant per session (planned = 1)
            body = new(c, f"bot-{i}").json()
            token = body["participant_token"]
            scored = [t for t in body["trials"] if t["kind"] == "main"]
            seen.add(tuple(t["trial_id"] for t in scored))
            counts = dict.fromkeys(("first_listed", "id_sorts_first", "label_a",
                                    "larger_asset", "smaller_asset"), 0)  # fmt: skip
            for t in scored:
                row = rows[t["trial_id"]]
                right = next(o["id"] for o in t["options"]
                             if o["src"] == "/" + row[f"option_{row['correct']}_asset"])
                sizes = {len(c.get(o["src"]).content) for o in t["options"]}
                assert len(sizes) == 1, t["trial_id"]  # equal byte lengths: no size cue
                for name, pick in _strategies(c, token, t).items():
                    counts[name] += pick == right
            for name, n_right in counts.items():
                assert abs(n_right - len(scored) / 2) <= 1, (i, name, counts)
        assert len(seen) == n_sessions  # every session was looked at
    app.state.engine.dispose()


def test_welcome_has_no_labels_and_ids_are_stable(pooled):
    client, study = pooled
    r = new(client, "lab-1", tab_id="tab-aaaaaaaa")
    text = r.text
    assert '"a"' not in text and '"b"' not in text  # no label anywhere, not even as a key
    body = r.json()
    for t in body["trials"] + [body["example"]]:
        assert isinstance(t["options"], list) and len(t["options"]) == 2
        assert all(set(o) == {"id", "src"} for o in t["options"])
        ids = [o["id"] for o in t["options"]]
        assert ids == sorted(ids) and all(len(x) == 16 and x[0] == "o" for x in ids)
    again = new(client, "lab-1", resume_secret=body["resume_secret"]).json()
    assert again["trials"] == body["trials"]  # a reload gets the same ids and draw


def test_ids_map_to_labels_and_foreign_ids_are_422(pooled):
    client, study = pooled
    rows = truth(study)
    body = new(client, "lab-2").json()
    token = body["participant_token"]
    _ready(client, token)
    practice = [t for t in body["trials"] if t["kind"] == "practice"]
    for t in practice:
        assert answer(client, token, t["trial_id"], rows[t["trial_id"]]["correct"]).is_success
    main = [t for t in body["trials"] if t["kind"] == "main"]
    tid, other = main[0]["trial_id"], main[1]["trial_id"]
    foreign = [NO_OPTION, option_id(client, token, other, "a"), body["example"]["options"][0]["id"]]
    for bad in foreign:
        r = answer(client, token, tid, bad)
        assert r.status_code == 422 and "not an option" in r.json()["detail"], bad
        r = answer(client, token, tid, "b", left_option=bad)
        assert r.status_code == 422 and "left_option" in r.json()["detail"]
    for bad in ("a", "b", "o" + "g" * 15, "O" + "0" * 15):  # labels or malformed: schema 422
        raw = {"trial_id": tid, "choice": bad, "confidence": 2, "rt_ms": 1500}
        assert client.post(f"/api/v1/participants/{token}/responses", json=raw).status_code == 422
    shown_first = main[0]["options"][0]["id"]
    chosen = main[0]["options"][1]["id"]
    assert answer(client, token, tid, chosen, left_option=shown_first).status_code == 200
    with client.app.state.experiment.sessions() as db:
        stored = db.query(Response).filter(Response.kind != "practice").one()
    labels = {v: k for k, v in client.app.state.experiment.option_ids(
        db.query(Participant).one().session_id, tid).items()}  # fmt: skip
    assert (stored.choice, stored.left_option) == (labels[chosen], labels[shown_first])
    assert stored.choice in ("a", "b") and stored.correct == (stored.choice == rows[tid]["correct"])


def test_practice_is_drawn_per_participant(pooled):
    client, study = pooled
    rows = truth(study)
    exp = client.app.state.experiment
    bundle = exp.bundle
    sess = next(iter(bundle.sessions.values()))
    assert len(sess.practice) == 4 and len(sess.practice_obvious) == 2
    draws = {pid: draw_practice(sess, bundle.practice_draw, f"0:local:{pid}")
             for pid in ("P-0001", "P-0003")}  # fmt: skip
    assert draws["P-0001"] != draws["P-0003"]  # two fixed participants: different practice
    for d in draws.values():
        assert len(d) == 2 and len(set(d) & set(sess.practice_obvious)) == 1
    assert draw_practice(sess, bundle.practice_draw, "0:local:P-0001") == draws["P-0001"]
    many = {draw_practice(sess, bundle.practice_draw, f"0:local:x{i}") for i in range(40)}
    assert len(many) >= 4  # orders and picks vary between participants
    # through the API: the welcome's practice is this participant's draw, first
    body = new(client, "P-0001").json()
    token = body["participant_token"]
    with exp.sessions() as db:
        p = db.query(Participant).one()
    drawn = [t["trial_id"] for t in body["trials"] if t["kind"] == "practice"]
    assert drawn == list(exp.practice_for(p))
    assert [t["kind"] for t in body["trials"][:2]] == ["practice", "practice"]
    assert all(t["kind"] == "main" for t in body["trials"][2:])
    _ready(client, token)
    own = bundle.sessions[p.session_id]
    not_drawn = next(t for t in own.practice if t not in drawn)
    r = answer(client, token, not_drawn, rows[not_drawn]["correct"])
    assert r.status_code == 409 and "not one of this participant's practice" in r.json()["detail"]
    # passed = every DRAWN trial right in the last attempt
    acks = [answer(client, token, t, rows[t]["correct"]).json() for t in drawn]
    assert [a["correct"] for a in acks] == [True, True] and acks[-1]["practice_passed"] is True
    assert client.get(f"/api/v1/participants/{token}").json()["next"]["stage"] == "main"


def test_worked_example_is_a_trial_used_nowhere_else(pooled):
    client, study = pooled
    rows = truth(study)
    exp = client.app.state.experiment
    body = new(client, "lab-3").json()
    ex = body["example"]
    assert ex["kind"] == "example" and rows[ex["trial_id"]]["kind"] == "example"
    right = next(o["id"] for o in ex["options"]
                 if o["src"] == "/" + rows[ex["trial_id"]][f"option_{rows[ex['trial_id']]['correct']}_asset"])  # noqa: E501
    assert ex["correct"] == right
    used = {t for s in exp.bundle.sessions.values() for t in (*s.trials, *s.practice)}
    assert ex["trial_id"] not in used
    shown = {u for t in body["trials"] for u in (t["query"], *(o["src"] for o in t["options"]))}
    assert not shown & {ex["query"], *(o["src"] for o in ex["options"])}
    assert '"correct"' not in json.dumps(body["trials"])
