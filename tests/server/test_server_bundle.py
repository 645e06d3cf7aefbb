"""Loading a study bundle: what a broken bundle says (one clear message naming the file)."""

from __future__ import annotations

import json

import pytest
from server_bundle_factory import make_study

from causalvis.errors import CausalvisError
from causalvis.server.bundle import load_bundle


def test_loads_plan_and_trials(tmp_path):
    b = load_bundle(make_study(tmp_path / "s"))
    assert b.name == "servertest" and b.conditions == ["none", "natural"]
    assert len(b.sessions) == 4 and len(b.trials) == 4 * 5
    s = next(iter(b.sessions.values()))
    assert len(s.practice) == 2 and len(s.trials) == 3
    assert all(b.trials[t].kind == "practice" for t in s.practice)
    assert b.config.server.prolific_completion_code == "C0MPLETE"


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("missing_asset", "is missing"),
        ("bad_correct", "correct must be a or b"),
        ("unknown_trial", "is not in"),
        ("no_plan", "no session plan"),
        ("escape_asset", "must look like assets/NAME"),
    ],
)
def test_broken_bundle_is_a_clear_error(tmp_path, breakage, message):
    study = make_study(tmp_path / "s")
    trials = study / "trials.csv"
    plan_path = study / "bundle" / "sessions.json"
    if breakage == "missing_asset":
        next((study / "bundle" / "assets").glob("*.png")).unlink()
    elif breakage == "bad_correct":
        text = trials.read_text().splitlines()
        cells = text[1].split(",")
        cells[-2] = "c"
        trials.write_text("\n".join([text[0], ",".join(cells), *text[2:]]) + "\n")
    elif breakage == "unknown_trial":
        plan = json.loads(plan_path.read_text())
        plan["sessions"][0]["trials"].append("t-missing")
        plan_path.write_text(json.dumps(plan))
    elif breakage == "no_plan":
        plan_path.unlink()
    else:
        text = trials.read_text()
        first_asset = text.split("assets/")[1].split(",")[0]
        trials.write_text(text.replace("assets/" + first_asset, "../trials.csv", 1))
    with pytest.raises(CausalvisError, match=message):
        load_bundle(study)


def test_pooled_plan_loads_and_an_example_is_never_a_session_trial(tmp_path):
    study = make_study(tmp_path / "s", pools=True)
    b = load_bundle(study)
    assert b.practice_draw == {"n_total": 2, "n_obvious": 1}
    s = next(iter(b.sessions.values()))
    assert len(s.practice) == 4 and set(s.practice_obvious) < set(s.practice)
    assert {b.trials[t].kind for t in b.examples.values()} == {"example"}
    plan_path = study / "bundle" / "sessions.json"
    plan = json.loads(plan_path.read_text())
    plan["sessions"][0]["trials"].append(plan["instructions_example"]["none"])
    plan_path.write_text(json.dumps(plan))
    with pytest.raises(CausalvisError, match="example trial .* listed among trials"):
        load_bundle(study)
