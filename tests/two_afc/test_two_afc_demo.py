"""`causalvis demo --task two_afc` end to end on the tiny real two_afc study: MIS
observer, simulated pilot through the real server, analysis with the models section."""

from __future__ import annotations

import json
import shutil
import sqlite3

import pytest

from causalvis.cli import main


def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


def test_demo_runs_the_two_afc_task(tiny_two_afc_sessions, tmp_path, capsys):
    root = tmp_path / "demo"
    shutil.copytree(tiny_two_afc_sessions[0], root)  # a quick-preset two_afc study: reused
    code = _cli(["demo", "--task", "two_afc", "--out", str(root), "--no-serve", "--quiet",
                 "--participants", "6"])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out + captured.err
    assert "observer   mis" in out and "pilot      6 simulated" in out

    observers = json.loads((root / "report" / "observers.json").read_text())
    assert observers["task"] == "two_afc"
    mis = observers["observers"]["mis"]
    assert set(mis["conditions"]) == {"natural", "synthetic"}
    assert all(c["n_trials"] >= 2 for c in mis["conditions"].values())
    per_unit = observers["mis"]["per_unit"]
    assert {r["condition"] for r in per_unit} == {"natural", "synthetic"}
    assert all(0.0 <= r["mis"] <= 1.0 for r in per_unit)

    with sqlite3.connect(root / "simulated-pilot.sqlite") as db:
        (n_participants,) = db.execute("select count(*) from participants").fetchone()
    assert n_participants == 6
    summary = json.loads((root / "report" / "summary.json").read_text())
    assert "SIMULATED" in summary["source"]
    models = summary["models"]
    assert models["available"] and models["models"] == ["lite0"]
    for cond in ("natural", "synthetic"):
        score = models["by_condition"][cond]["scores"][0]
        assert score["ci_low"] <= score["score"] <= score["ci_high"]
    html = (root / "report" / "index.html").read_text()
    assert "Models" in html


def test_demo_refuses_a_study_of_the_other_task(tiny_two_afc_sessions, tmp_path, capsys):
    root = tmp_path / "demo"
    shutil.copytree(tiny_two_afc_sessions[0], root)
    assert _cli(["demo", "--out", str(root), "--no-serve", "--quiet"]) == 1
    assert "not the causal_occlusion demo" in capsys.readouterr().err
