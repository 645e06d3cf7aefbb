"""Grouped tables: design choice, difficulty, κ with machine observers, confidence, RT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit

from causalvis.analysis.kappa import kappa_analysis, machine_observer_rows
from causalvis.analysis.load import canonicalize
from causalvis.analysis.simulate import simulate_responses
from causalvis.analysis.tables import (
    choose_design,
    condition_table,
    confidence_table,
    difficulty,
    rt_table,
)


def _main(df: pd.DataFrame) -> pd.DataFrame:
    d = canonicalize(df, {})
    return d[d["is_main"]]


def test_design_is_crossed_only_when_units_are_sampled():
    fixed, _ = simulate_responses({"none": 0.6}, n_participants=5, n_units=6, seed=0)
    sampled, _ = simulate_responses({"none": 0.6}, n_participants=5, n_units=30,
                                    units_per_participant=6, seed=0)
    assert choose_design(_main(fixed)) == "participants"
    assert choose_design(_main(sampled)) == "crossed"
    table, reps = condition_table(_main(sampled), design="crossed", n_boot=300)
    row = table["none"]
    assert row["ci_method"] == "crossed" and [row["ci_low"], row["ci_high"]] == row["ci_crossed"]
    assert reps["none"].shape == (300,)


def test_difficulty_detects_a_real_relation():
    rng = np.random.default_rng(0)
    rel = rng.uniform(0, 1, 40)
    rows = []
    for p in range(30):
        for i, r in enumerate(rel):
            rows.append(dict(participant_id=f"p{p}", condition="natural", trial_id=f"t{i}",
                             rel_diff=r, correct=rng.random() < expit(-1 + 4 * r)))
    d = difficulty(_main(pd.DataFrame(rows)), n_bins=5, n_boot=200)
    assert d["available"]
    assert d["spearman"]["natural"]["rho"] > 0.6 and d["spearman"]["natural"]["p"] < 1e-4
    accs = [b["accuracy"] for b in sorted(d["bins"], key=lambda b: b["bin"])]
    assert accs[-1] - accs[0] > 0.3
    assert sum(b["n_trials"] for b in d["bins"]) == 30 * 40
    no = difficulty(_main(pd.DataFrame(rows).drop(columns="rel_diff")))
    assert no["available"] is False and "rel_diff" in no["reason"]


def test_kappa_matches_across_conditions_and_adds_machine_observers():
    rows = []
    items = [f"b{i}" for i in range(10)]
    truth_pattern = np.array([1, 1, 0, 1, 0, 1, 1, 0, 1, 1], bool)
    for p, cond in [("p1", "none"), ("p2", "none"), ("p3", "natural")]:
        for i, item in enumerate(items):
            rows.append(dict(participant_id=p, condition=cond, trial_id=f"{cond}-{item}",
                             base_trial_id=item, correct=bool(truth_pattern[i])))
    df = _main(pd.DataFrame(rows))
    trials = pd.DataFrame({"trial_id": [f"{c}-{i}" for c in ("none", "natural") for i in items],
                           "base_trial_id": items * 2})
    # "center" decides the same in every condition; "ref" differs by condition.
    obs = pd.DataFrame({
        "trial_id": [f"{c}-{i}" for o in ("center", "ref") for c in ("none", "natural")
                     for i in items],
        "observer": ["center"] * 20 + ["ref"] * 20,
        "condition": (["none"] * 10 + ["natural"] * 10) * 2,
        "hit": list(truth_pattern.astype(int)) * 2 + list(truth_pattern.astype(int))
        + list(~truth_pattern.astype(bool) * 1),
    })
    machine = machine_observer_rows(obs, trials)
    assert sorted(machine["observer"].unique()) == ["machine:center", "machine:ref@natural",
                                                    "machine:ref@none"]
    k = kappa_analysis(df, machine, min_common=5)
    assert k["matched_on"] == "base_trial_id"
    names = k["observers"]
    mat = np.array(k["kappa"], dtype=float)
    i, j = names.index("p1"), names.index("p3")
    assert mat[i, j] == pytest.approx(1.0)  # identical errors across conditions
    i, j = names.index("p1"), names.index("machine:ref@natural")
    # exactly opposite errors at accuracies 0.7 / 0.3: κ = (0 - 0.42) / (1 - 0.42)
    assert mat[i, j] == pytest.approx(-0.42 / 0.58)
    assert k["groups"][:2] == ["none", "natural"]


def test_confidence_and_rt_tables():
    rows = []
    rng = np.random.default_rng(1)
    for p in range(12):
        for _ in range(30):
            conf = int(rng.integers(1, 4))
            rows.append(dict(participant_id=f"p{p}", condition="synthetic",
                             correct=rng.random() < 0.4 + 0.15 * conf, confidence=conf,
                             rt=1000.0 + 100 * p))
    df = _main(pd.DataFrame(rows))
    conf = {r["confidence"]: r for r in confidence_table(df, n_boot=300)}
    assert conf[3]["accuracy"] > conf[1]["accuracy"]
    assert all(isinstance(c, int) for c in conf)
    assert sum(r["share"] for r in conf.values()) == pytest.approx(1.0)
    rt = rt_table(df, n_boot=300)["synthetic"]
    assert rt["mean_participant_median_ms"] == pytest.approx(1550.0)
    assert rt["ci_low"] < 1550 < rt["ci_high"] and rt["n_participants"] == 12
