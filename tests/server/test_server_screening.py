"""Issue 17: the device check before participation (screened out: never a slot, a
platform-appropriate answer), declined consent without a code, one tab per participant,
asset headers that are the same for every option, and the study's texts and settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_bundle_factory import ADMIN, make_study, truth
from test_server_api import AUTH, answer, new

from causalvis.errors import CausalvisError
from causalvis.responses.db import Participant, Response, Screening
from causalvis.server.guards import Rate


def _app(study: Path, **kw):
    from causalvis.server.app import create_app

    return create_app(study, admin_token=ADMIN, **kw)


@pytest.fixture
def make_client(tmp_path: Path):
    apps = []

    def make(**kw) -> TestClient:
        app_kw = {k: kw.pop(k) for k in ("create_rate",) if k in kw}
        study = make_study(tmp_path / f"s{len(apps)}", **kw)
        app = _app(study, **app_kw)
        client = TestClient(app)
        client.__enter__()
        apps.append((client, app))
        return client

    yield make
    for client, app in apps:
        client.__exit__(None, None, None)
        app.state.engine.dispose()


def _screen(client, platform: str = "local", reason: str = "small_window", **ids):
    return client.post("/api/v1/screened_out", json={"platform": platform, "reason": reason, **ids})


# -- screened out ---------------------------------------------------------------------------


def test_screened_out_never_holds_a_slot(make_client):
    c = make_client()  # four sessions, one planned participant each, no over-assignment
    for i in range(5):
        r = _screen(c, "prolific", "mobile", external_id=f"PHONE{i}", study_id="S",
                    session_id=f"E{i}")  # fmt: skip
        assert r.status_code == 200, r.text
    assert [new(c, f"lab-{i}").status_code for i in range(5)] == [201] * 4 + [409]
    prog = c.get("/api/v1/admin/progress", headers=AUTH).json()
    assert prog["screened_out"] == 5 and prog["screened_out_reasons"] == {"mobile": 5}
    assert prog["capacity"]["taken"] == 4 and prog["participants"]["total"] == 4
    with c.app.state.experiment.sessions() as db:
        assert db.query(Screening).count() == 5
        assert {s.platform for s in db.query(Screening)} == {"prolific"}  # nothing personal


def test_a_screened_out_participant_gives_the_slot_back(make_client):
    c = make_client()
    ids = {"study_id": "S", "session_id": "E1"}
    first = new(c, "PID1", "prolific", **ids).json()
    for i in range(3):
        assert new(c, f"lab-{i}").status_code == 201
    assert new(c, "lab-late").status_code == 409  # full
    # someone else's id does not release PID1's slot
    _screen(c, "prolific", external_id="PID1", study_id="S", session_id="OTHER")
    assert new(c, "lab-late").status_code == 409
    assert _screen(c, "prolific", "small_window", external_id="PID1", **ids).status_code == 200
    with c.app.state.experiment.sessions() as db:
        assert db.query(Participant).filter_by(external_id="PID1").one().status == "screened_out"
    prog = c.get("/api/v1/admin/progress", headers=AUTH).json()
    assert prog["participants"]["screened_out"] == 1 and prog["capacity"]["taken"] == 3
    assert new(c, "lab-late").status_code == 201  # the freed place went to someone else
    again = new(c, "PID1", "prolific", **ids)  # back on a desktop: resumes
    assert again.status_code == 200
    assert again.json()["participant_token"] == first["participant_token"]


def test_screened_out_answer_per_platform(make_client):
    c = make_client(server={"prolific_screened_out_code": "SCR33N"})
    r = _screen(c, "prolific", "mobile").json()
    assert r["completion_code"] == "SCR33N" and r["redirect_url"].endswith("cc=SCR33N")
    assert r["mturk_return"] is False and "desktop" in r["message"]
    r = _screen(c, "mturk", "browser", external_id="W1", assignment_id="A1").json()
    assert r["mturk_return"] is True and r["completion_code"] is None
    assert "return the HIT" in r["message"]
    r = _screen(c, "local", "small_window").json()
    assert (r["completion_code"], r["redirect_url"], r["mturk_return"]) == (None, None, False)
    assert "experimenter" in r["message"]
    assert _screen(c, "local", "too_tired").status_code == 422
    # without a screened-out code the "study full" code serves; without either: no code
    c2 = make_client(server={"prolific_full_code": "FULL01"})
    assert _screen(c2, "prolific").json()["completion_code"] == "FULL01"
    c3 = make_client()
    r = _screen(c3, "prolific").json()
    assert r["completion_code"] is None and "Prolific" in r["message"]


def test_screened_out_is_rate_limited(make_client):
    c = make_client(create_rate=Rate(2, 60.0))
    assert [_screen(c).status_code for _ in range(3)] == [200, 200, 429]
    assert new(c, "lab-1").status_code == 201  # a bucket of its own


# -- declined consent -----------------------------------------------------------------------


def test_declined_consent_gets_no_code_unless_prolific_has_one(make_client):
    c = make_client(server={"prolific_no_consent_code": ""})
    for platform, extra in (("local", {}), ("prolific", {"study_id": "S", "session_id": "E"}),
                            ("mturk", {"assignment_id": "A9"})):  # fmt: skip
        token = new(c, f"X-{platform}", platform, **extra).json()["participant_token"]
        r = c.post(f"/api/v1/participants/{token}/consent", json={"consent": False}).json()
        assert r["completion_code"] is None and r["redirect_url"] is None, platform
        assert r["mturk_submit"] is None
    # (with a configured no-consent code Prolific gets it: test_consent_declined_prolific)


# -- tabs -----------------------------------------------------------------------------------


def test_the_newest_tab_wins(make_client):
    c = make_client()
    tab1, tab2 = "tab-one-1111", "tab-two-2222"
    first = new(c, "lab-t", tab_id=tab1).json()
    token = first["participant_token"]
    base = f"/api/v1/participants/{token}"
    assert c.post(f"{base}/consent", json={"consent": True, "tab_id": tab1}).is_success
    again = new(c, "lab-t", resume_secret=first["resume_secret"], tab_id=tab2)
    assert again.status_code == 200  # a second tab (or a reload) takes over
    old = [c.post(f"{base}/instructions", json={"instruction_time_s": 30.0, "tab_id": tab1}),
           c.post(f"{base}/consent", json={"consent": True, "tab_id": tab1}),
           answer(c, token, first["trials"][0]["trial_id"], tab_id=tab1),
           c.post(f"{base}/finish", json={"tab_id": tab1})]  # fmt: skip
    for r in old:
        assert r.status_code == 409 and r.json()["open_elsewhere"] is True, r.text
        assert "another tab" in r.json()["detail"]
    assert c.post(f"{base}/instructions",
                  json={"instruction_time_s": 30.0, "tab_id": tab2}).is_success  # fmt: skip
    rows = truth(c.app.state.experiment.bundle.root)
    tid = first["trials"][0]["trial_id"]
    assert answer(c, token, tid, rows[tid]["correct"], tab_id=tab2).is_success
    with c.app.state.experiment.sessions() as db:
        assert db.query(Response).count() == 1  # the old tab's answer was not stored
    assert c.post(f"{base}/instructions", json={"instruction_time_s": 1.0,
                                               "tab_id": "bad tab"}).status_code == 422


# -- assets ---------------------------------------------------------------------------------


def test_asset_headers_are_the_same_for_both_options(make_client):
    c = make_client()
    body = new(c, "lab-a").json()
    trial = next(t for t in body["trials"] if t["kind"] == "main")
    responses = [c.get(o["src"]) for o in trial["options"]]
    for o, r in zip(trial["options"], responses, strict=True):
        assert r.status_code == 200
        assert "last-modified" not in r.headers
        assert r.headers["etag"] == f'"{Path(o["src"]).stem}"'  # the content hash
    names = [sorted(r.headers.keys()) for r in responses]
    assert names[0] == names[1]
    assert [r.headers["content-length"] for r in responses][0] == responses[1].headers[
        "content-length"]  # fmt: skip
    etag = responses[0].headers["etag"]
    cached = c.get(trial["options"][0]["src"], headers={"If-None-Match": etag})
    assert cached.status_code == 304 and "last-modified" not in cached.headers


# -- texts and settings ---------------------------------------------------------------------


def test_welcome_and_config_carry_the_study_texts(make_client):
    c = make_client(config={"experiment": {"min_view_ms": 1500, "min_width": 1000},
                            "texts": {"institution": "Uni X", "ethics": "IRB-7"}})  # fmt: skip
    body = new(c, "lab-x").json()
    st = body["settings"]
    assert st["experiment"] == {"min_view_ms": 1500, "advance": "continue",
                                "continue_after_ms": 350, "gap_ms": 600, "keyboard": False,
                                "min_width": 1000, "min_height": 600}  # fmt: skip
    assert (st["min_width"], st["min_height"]) == (1000, 600)
    texts = st["texts"]
    assert texts["institution"] == "Uni X" and texts["ethics"] == "IRB-7"
    assert texts["consent_paragraphs"] is None  # the front end's default text
    # 3 min instructions + (2 practice + 3 trials) x 12 s = 4 min, rounded up
    assert texts["duration_minutes"] == 4
    assert texts["n_references"] == (0 if body["condition"] == "none" else 9)
    assert texts["patch"] == {"percent": 40, "fill": "mean"}
    assert "colour" in texts["colour_vision_notice"]
    cfg = c.get("/api/v1/config")
    assert cfg.status_code == 200 and "participant_token" not in cfg.text
    cfg = cfg.json()
    assert set(cfg) == {"title", "task", "duration_minutes", "experiment", "texts"}
    assert cfg["experiment"] == st["experiment"] and cfg["duration_minutes"] == 4
    assert cfg["texts"]["n_references"] == {"none": 0, "natural": 9}


def test_consent_file_and_configured_duration(tmp_path):
    study = make_study(tmp_path / "s", config={"texts": {"consent_file": "consent.txt",
                                                         "duration_minutes": 25}})  # fmt: skip
    with pytest.raises(CausalvisError, match=r"texts.consent_file: .*consent.txt does not exist"):
        _app(study)
    (study / "consent.txt").write_text("You are invited\nto take part.\n\n  \nWe store nothing.\n")
    app = _app(study)
    with TestClient(app) as c:
        texts = new(c, "lab-c").json()["settings"]["texts"]
        assert texts["consent_paragraphs"] == ["You are invited to take part.", "We store nothing."]
        assert texts["duration_minutes"] == 25
        assert c.get("/api/v1/config").json()["texts"]["consent_paragraphs"] == \
            texts["consent_paragraphs"]  # fmt: skip
    app.state.engine.dispose()


def test_progress_passes_fast_answer_counts_through(make_client):
    c = make_client()
    body = new(c, "lab-f").json()
    token = body["participant_token"]
    base = f"/api/v1/participants/{token}"
    c.post(f"{base}/consent", json={"consent": True})
    c.post(f"{base}/instructions", json={"instruction_time_s": 30.0})
    rows = truth(c.app.state.experiment.bundle.root)
    for t in body["trials"]:
        answer(c, token, t["trial_id"], rows[t["trial_id"]]["correct"], rt_ms=100)
    person = c.get("/api/v1/admin/progress", headers=AUTH).json()["participant_details"][0]
    # the rule set (responses.exclusion) counts main + catch answers under min_rt_ms and
    # flags them without excluding (max_fast_fraction 1.0); progress passes both through
    assert person["n_fast"] == 3 and "fast_answers" in person["warnings"]
    assert "fast_answers" not in person["flags"]
