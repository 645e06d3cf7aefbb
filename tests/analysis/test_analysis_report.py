"""End to end: both input paths through the CLI / entry points to the report files."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from causalvis.analysis.report import AnalysisOptions, analyze_study
from causalvis.analysis.simulate import simulate_responses
from causalvis.cli import main

ACC = {"none": 0.6, "natural": 0.7, "synthetic": 0.7}
FAST = ["--n-boot", "200", "--n-perm", "200"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A study folder with trials.csv and machine-observer outputs, plus a responses CSV
    in foreign column names (as published datasets come)."""
    root = tmp_path_factory.mktemp("study")
    df, _ = simulate_responses(ACC, n_participants=10, n_units=9, n_catch=3, seed=5)
    rng = np.random.default_rng(0)
    df["confidence"] = rng.integers(1, 4, len(df))
    df["rt"] = rng.lognormal(8, 0.3, len(df)).round()
    df["total_time_s"] = 300.0
    df.loc[df["participant_id"] == "natural-000", "total_time_s"] = 30.0  # excluded: too fast
    trials = df[["trial_id", "base_trial_id", "unit", "condition", "kind"]].drop_duplicates(
        "trial_id")
    trials["layer"] = [f"blocks.{int(u[1:]) % 3}" if u != "catch" else "blocks.9"
                       for u in trials["unit"]]
    trials["channel"] = 0
    trials["rel_diff"] = rng.uniform(0.05, 0.8, len(trials))
    trials["correct"] = "a"
    trials.to_csv(root / "trials.csv", index=False)
    (root / "report").mkdir()
    observers = {"observers": {"center": {"conditions": {
        c: {"accuracy": 0.55, "ci_low": 0.4, "ci_high": 0.7, "n_trials": 9} for c in ACC}}}}
    (root / "report" / "observers.json").write_text(json.dumps(observers))
    mt = trials[trials["kind"] == "main"]
    pd.DataFrame({"trial_id": mt["trial_id"], "observer": "center", "choice": "a",
                  "p_correct": 1.0, "delta": 0.1,
                  # a heuristic: the same decision on a base trial in every condition
                  "hit": [int(u[1:]) % 2 for u in mt["unit"]],
                  "condition": mt["condition"], "unit": mt["unit"]}).to_csv(
        root / "report" / "observer_trials.csv", index=False)
    foreign = df.drop(columns=["unit", "base_trial_id"]).rename(columns={
        "participant_id": "subject", "condition": "cond", "correct": "hit",
        "trial_id": "trial", "kind": "type"})
    foreign.to_csv(root / "responses.csv", index=False)
    return root, df


def test_cli_csv_path_writes_a_complete_report(study, tmp_path, capsys):
    root, _ = study
    out = tmp_path / "rep"
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(root), "--responses-csv", str(root / "responses.csv"), "--map",
              "participant_id=subject,condition=cond,correct=hit,trial_id=trial,kind=type",
              "--out", str(out), *FAST])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "participants: 30 (1 excluded)" in printed and "report:" in printed
    s = json.loads((out / "summary.json").read_text())
    for name, c in s["conditions"].items():
        assert set(c) >= {"accuracy", "ci_low", "ci_high", "sem2", "n_participants", "n_trials"}
        assert c["ci_low"] <= c["accuracy"] <= c["ci_high"], name
    # Results with and without exclusion: the too-fast participant only counts in one.
    assert s["conditions"]["natural"]["n_participants"] == 9
    assert s["conditions_without_exclusion"]["natural"]["n_participants"] == 10
    assert s["exclusions"]["criteria"]["total_time"]["participants"] == ["natural-000"]
    assert s["exclusions"]["criteria"]["instruction_time"]["available"] is False
    assert {(c["condition"], c["reference"]) for c in s["contrasts"]} == {
        ("natural", "none"), ("synthetic", "none"), ("synthetic", "natural")}
    assert all("statement" in c and "p_glmm_holm" in c for c in s["contrasts"])
    assert s["mixed_model"]["fitted"]
    # trials.csv was joined on trial_id: layers, units, difficulty are available.
    assert {r["layer"] for r in s["by_layer"]} == {"blocks.0", "blocks.1", "blocks.2"}
    assert s["difficulty"]["available"] and s["difficulty"]["spearman"]["all"]["n_items"] == 9
    assert s["by_confidence"] and s["rt"]["none"]["mean_participant_median_ms"] > 0
    # κ between humans (matched across conditions on base_trial_id) and the machine observer.
    k = s["kappa"]
    assert k["available"] and k["matched_on"] == "base_trial_id"
    assert k["groups"] == ["none", "natural", "synthetic", "machine:center"]
    assert "machine:center" in k["observers"]
    assert "center" in s["observers"]
    for fig in ("accuracy", "layer", "confidence", "kappa", "difficulty"):
        for ext in ("png", "pdf"):
            assert (out / "figures" / f"{fig}.{ext}").stat().st_size > 1000
    page = (out / "index.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)=["']?(https?:|//|figures/)""", page)
    assert "Machine observers" in page
    assert "not significant" in page or "significantly" in page
    assert "not available" in page  # missing criteria are said, not silently passed


def test_study_path_reads_the_database_export(study, tmp_path, monkeypatch):
    root, df = study
    (root / "responses.sqlite").write_bytes(b"")  # the loader checks the default DB exists
    seen = {}

    def fake_frame(db_url, study_dir, **_):
        seen["args"] = (db_url, str(study_dir))
        return df.drop(columns=["unit", "base_trial_id"]).assign(
            choice="a", left_option=np.where(np.arange(len(df)) % 2, "a", "b"))

    import causalvis.responses.export as export

    monkeypatch.setattr(export, "responses_frame", fake_frame)
    s, page = analyze_study(root, out=tmp_path / "r",
                            options=AnalysisOptions(n_boot=200, n_perm=200, mixed_model=False))
    assert seen["args"][0].startswith("sqlite:///") and seen["args"][1] == str(root)
    assert page.is_file()
    assert s["exclusions"]["criteria"]["one_sided"]["available"] is True
    assert s["by_unit"] and "mixed_model" not in s
    assert s["settings"]["design_used"] == "participants"


def test_cli_errors_are_one_line(tmp_path, capsys):
    for argv in (["analyze"], ["analyze", str(tmp_path / "missing")],
                 ["analyze", "--responses-csv", str(tmp_path / "none.csv")],
                 ["analyze", str(tmp_path), "--map", "correct=x"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and "\n" not in err


def _frame(rows):
    from causalvis.analysis.load import canonicalize

    return canonicalize(pd.DataFrame(rows), {})


def test_tiny_and_degenerate_data_do_not_crash(tmp_path):
    from causalvis.analysis.report import analyze_frame, write_report

    opts = AnalysisOptions(n_boot=100, n_perm=100)
    # One participant per condition, one trial each, no units: no SEM, no κ, no difficulty.
    s = analyze_frame(_frame([dict(participant_id="a", condition="none", correct=1),
                              dict(participant_id="b", condition="blur", correct=0)]),
                      options=opts)
    assert s["conditions"]["none"]["sem2"] is None
    assert s["conditions"]["blur"]["accuracy"] == 0.0
    assert s["kappa"]["available"] is False and s["difficulty"]["available"] is False
    assert len(s["contrasts"]) == 1
    page = write_report(s, tmp_path / "tiny")
    assert "Not available" in page.read_text()
    # Conditions without none/natural: no contrasts, still a report.
    s = analyze_frame(_frame([dict(participant_id=p, condition=c, correct=(i + j) % 2)
                              for i, (p, c) in enumerate([("a", "x"), ("b", "y")])
                              for j in range(4)]), options=opts)
    assert s["contrasts"] == [] and set(s["conditions"]) == {"x", "y"}
    write_report(s, tmp_path / "noref")


def test_everyone_excluded_still_reports_unexcluded_results(tmp_path):
    from causalvis.analysis.report import analyze_frame, write_report

    rows = [dict(participant_id=p, condition=c, correct=j % 2, total_time_s=5.0)
            for p, c in [("a", "none"), ("b", "natural")] for j in range(6)]
    s = analyze_frame(_frame(rows), options=AnalysisOptions(n_boot=100, n_perm=100))
    assert s["conditions"] == {} and s["exclusions"]["n_included"] == 0
    assert s["conditions_without_exclusion"]["none"]["n_participants"] == 1
    assert "excluded" in s["note"]
    assert "every participant was excluded" in write_report(s, tmp_path / "r").read_text()
