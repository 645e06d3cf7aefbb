"""The study path end to end: participants answer through the real server API into
SQLite, and ``causalvis analyze STUDY`` reads the database back."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_bundle_factory import ADMIN, make_study, truth  # noqa: E402

from causalvis.cli import main  # noqa: E402


def _run_participant(client, study: Path, external_id: str, policy: str,
                     one_sided: bool) -> str:
    """Consent, instructions, practice, then answer every trial: ``right`` = always
    correct, ``wrong`` = always wrong on main trials (catch trials answered correctly);
    ``one_sided``: the chosen image is always the one shown on the left."""
    rows = truth(study)
    body = client.post("/api/v1/participants",
                       json={"platform": "local", "external_id": external_id}).json()
    token = body["participant_token"]
    assert client.post(f"/api/v1/participants/{token}/consent", json={"consent": True}).is_success
    assert client.post(f"/api/v1/participants/{token}/instructions",
                       json={"instruction_time_s": 42.5}).is_success
    for i, t in enumerate(body["trials"]):
        right = rows[t["trial_id"]]["correct"]
        wrong = "b" if right == "a" else "a"
        choice = wrong if policy == "wrong" and rows[t["trial_id"]]["kind"] == "main" else right
        other = "b" if choice == "a" else "a"
        left = choice if one_sided or i % 2 else other
        ids = {o["src"]: o["id"] for o in t["options"]}  # opaque option ids (issue 17)
        oid = {lab: ids["/" + rows[t["trial_id"]][f"option_{lab}_asset"]] for lab in "ab"}
        r = client.post(f"/api/v1/participants/{token}/responses",
                        json={"trial_id": t["trial_id"], "choice": oid[choice], "confidence": 2,
                              "rt_ms": 1500, "left_option": oid[left]})
        assert r.is_success, r.text
    assert client.post(f"/api/v1/participants/{token}/finish").is_success
    return body["condition"]


def test_analyze_study_reads_the_server_database(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from causalvis.server.app import create_app

    study = make_study(tmp_path / "study", planned=4)
    app = create_app(study, None, admin_token=ADMIN)
    conditions = []
    with TestClient(app) as client:
        for i in range(4):
            policy = "wrong" if i == 1 else "right"
            conditions.append(_run_participant(client, study, f"p{i}", policy, one_sided=i == 0))
    app.state.engine.dispose()
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(study), "--n-boot", "200", "--n-perm", "200",
              "--max-total-time", "100000", "--min-total-time", "0"])
    out = capsys.readouterr()
    assert exit_.value.code == 0, out.err
    s = json.loads((study / "report" / "summary.json").read_text())
    assert s["exclusions"]["n_participants"] == 4
    crit = s["exclusions"]["criteria"]
    # The server records everything the criteria need.
    for name in ("catch_accuracy", "total_time", "instruction_time", "practice_attempts",
                 "one_sided"):
        assert crit[name]["available"], name
    assert crit["instruction_time"]["n_excluded"] == 0
    assert crit["practice_attempts"]["n_excluded"] == 0
    assert crit["catch_accuracy"]["n_excluded"] == 0
    assert crit["one_sided"]["n_excluded"] == 1  # p0 always clicked the left image
    assert s["exclusions"]["n_excluded"] == 1
    # p1 answered every main trial wrongly, p2 and p3 correctly: accuracies are exact.
    total = s["conditions_without_exclusion"]
    assert sum(c["n_participants"] for c in total.values()) == 4
    acc = {c: total[c]["accuracy"] for c in total}
    wrong_cond = conditions[1]
    n_wrong = sum(1 for c in conditions[:] if c == wrong_cond)
    assert acc[wrong_cond] == pytest.approx(1 - 1 / n_wrong)
    assert s["by_layer"] and s["rt"]
    assert (study / "report" / "index.html").is_file()
