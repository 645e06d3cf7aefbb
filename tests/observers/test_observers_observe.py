"""``observe``: report files, CIs over units, α calibration and the comparison with humans."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import special

from causalvis.analysis.stats import error_consistency
from causalvis.cli import main
from causalvis.observers.observe import observe
from causalvis.observers.score import cluster_bootstrap, fit_alpha
from causalvis.store.layout import StudyPaths

HEUR = ["center", "variance"]


def test_fit_alpha_recovers_the_closed_form():
    # Δ = ±d; agreement with the observer 75 % in both signs: σ(α d) = 0.75
    d = 0.3
    signed = np.r_[np.full(400, d), np.full(400, -d)]
    correct = np.r_[np.ones(300), np.zeros(100), np.zeros(300), np.ones(100)]
    fit = fit_alpha(signed, correct)
    assert fit.alpha == pytest.approx(special.logit(0.75) / d, rel=1e-3)
    assert fit.n == 800


def test_error_consistency_known_cases():
    a = np.array([1, 1, 0, 0, 1, 0, 1, 0], bool)
    assert error_consistency(a, a) == pytest.approx(1.0)
    assert error_consistency(a, ~a) == pytest.approx(-1.0)
    # independent by construction: b is correct on half of a's hits and half of its misses
    b = np.array([1, 0, 1, 0, 1, 1, 0, 0], bool)
    assert error_consistency(a, b) == pytest.approx(0.0)


def test_cluster_bootstrap_resamples_units():
    values = np.r_[np.ones(10), np.zeros(10)]
    units = ["u1"] * 10 + ["u2"] * 10
    mean, lo, hi = cluster_bootstrap(values, units, n_boot=500)
    assert mean == 0.5 and lo == 0.0 and hi == 1.0  # two units: all-or-nothing draws
    mean, lo, hi = cluster_bootstrap(values, [f"u{i}" for i in range(20)], n_boot=500)
    assert 0.2 < lo < 0.5 < hi < 0.8


def test_observe_writes_reports_without_humans(mixed_study):
    res = observe(mixed_study, HEUR, n_boot=300)
    paths = StudyPaths(mixed_study)
    summary = json.loads((paths.report / "observers.json").read_text())
    assert "human_comparison" not in summary
    for name in HEUR:
        entry = summary["observers"][name]
        assert entry["calibrated"] is False and entry["alpha"] is None
        for cond in ("none", "natural"):
            row = entry["conditions"][cond]
            # always "a" (flat corner patch); truth alternates by unit: exactly half right
            assert row["accuracy"] == 0.5 and row["n_trials"] == 8 and row["n_units"] == 4
            assert 0.0 <= row["ci_low"] <= 0.5 <= row["ci_high"] <= 1.0
            per_unit = entry["per_unit"][cond]
            assert [per_unit[f"blocks.3.2-c{c:04d}"]["accuracy"] for c in range(4)] == [1, 0, 1, 0]
    table = pd.read_csv(paths.report / "observer_trials.csv", dtype=str)
    assert {"trial_id", "observer", "choice", "p_correct"} <= set(table.columns)
    assert len(table) == 16 * len(HEUR)  # main trials only
    assert set(table["choice"]) == {"a"}
    assert len(res.decisions) == len(table)


def _human_csv(study, tmp_path, rates):
    """Responses with a per-unit accuracy, 10 participants, all answering every main trial."""
    trials = pd.read_csv(StudyPaths(study).trials, dtype=str)
    main = trials[trials["kind"] == "main"]
    rows = []
    for p in range(10):
        for _, t in main.iterrows():
            unit_idx = int(t["unit"][-4:])
            ok = p < rates[unit_idx] * 10
            rows.append({"participant_id": f"p{p}", "condition": t["condition"],
                         "trial_id": t["trial_id"], "kind": "main", "correct": ok,
                         "choice": t["correct"] if ok else ("b" if t["correct"] == "a" else "a")})
    path = tmp_path / "humans.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_observe_calibrates_on_humans_and_compares(mixed_study, tmp_path):
    # observers are right on units 0 and 2; humans agree with them 80 % / 70 % of the time
    csv_path = _human_csv(mixed_study, tmp_path, [0.8, 0.3, 0.7, 0.2])
    res = observe(mixed_study, ["center"], responses_csv=csv_path, n_boot=300)
    entry = res.summary["observers"]["center"]
    assert entry["calibrated"] is True and entry["alpha_n_responses"] == 160
    # Δ has one magnitude d here, so σ(α d) = agreement rate = 0.75
    d = abs(res.decisions["delta"].iloc[0])
    assert entry["alpha"] == pytest.approx(special.logit(0.75) / d, rel=1e-3)
    pc = entry["per_unit"]["none"]
    assert pc["blocks.3.2-c0000"]["p_correct"] == pytest.approx(0.75, abs=1e-4)
    assert pc["blocks.3.2-c0001"]["p_correct"] == pytest.approx(0.25, abs=1e-4)
    assert entry["conditions"]["none"]["predicted_human_accuracy"] == pytest.approx(0.5, abs=1e-4)
    comp = res.summary["human_comparison"]["center"]
    assert comp["none"]["n_units"] == 4 and comp["none"]["n_responses"] == 80
    assert comp["none"]["human_accuracy"] == pytest.approx(0.5)
    assert comp["all"]["spearman"] > 0.8
    # κ by hand: both right 16 + 14, both wrong 14 + 16 of 80 -> c_obs = 0.75; both
    # accuracies 0.5 -> c_exp = 0.5; κ = (0.75 - 0.5) / 0.5
    assert comp["none"]["kappa"] == pytest.approx(0.5)


def test_observe_cli(mixed_study, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["observe", str(mixed_study), "--observer", "center", "--observer", "saliency"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "center" in out and "saliency" in out and "observers.json" in out


def test_observe_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["observe", str(tmp_path / "missing")])
    assert exc.value.code == 1
    assert capsys.readouterr().err.startswith("error: study folder not found")
    (tmp_path / "s").mkdir()
    with pytest.raises(SystemExit):
        main(["observe", str(tmp_path / "s"), "--observer", "nope"])
    assert "trials table not found" in capsys.readouterr().err


def test_an_observer_without_applicable_trials_is_declared(mixed_study, tmp_path):
    from causalvis.observers.heuristics import CenterObserver
    from causalvis.observers.observe import decisions_frame, summarize
    from causalvis.observers.trials import AssetReader, load_trials

    paths = StudyPaths(mixed_study)
    trials = load_trials(paths.trials)
    dec = decisions_frame(trials, AssetReader(paths.bundle), [CenterObserver()])
    human = pd.read_csv(_human_csv(mixed_study, tmp_path, [0.8, 0.3, 0.7, 0.2]))
    human["unit"] = human["trial_id"].map(dict((t.trial_id, t.unit) for t in trials))
    summary, _ = summarize(dec, trials, human, n_boot=50, names=["center", "reference_patch"])
    ref = summary["observers"]["reference_patch"]
    assert ref["conditions"] == {} and ref["not_applicable"] == ["none", "natural"]
    assert ref["calibrated"] is False
    assert summary["human_comparison"]["reference_patch"]["all"]["n_responses"] == 0


def test_spearman_bootstrap_ci():
    from scipy import stats as st

    from causalvis.analysis.stats import spearman_ci

    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = x + rng.normal(scale=1.0, size=60)
    rho, lo, hi = spearman_ci(x, y, n_boot=1000)
    assert rho == pytest.approx(st.spearmanr(x, y).statistic)
    assert lo < rho < hi and hi - lo < 0.5
    # the bootstrap replicate for the identity resample is the statistic itself
    assert spearman_ci(x, -x, n_boot=200)[1:] == (pytest.approx(-1.0), pytest.approx(-1.0))
    assert np.isnan(spearman_ci(x[:2], y[:2])[0])
