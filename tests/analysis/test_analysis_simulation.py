"""Validation by simulation: known accuracies are recovered and 95 % intervals cover.

Participants and units vary on the logit scale (logit-normal), as in real studies.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from causalvis.analysis import stats
from causalvis.analysis.load import canonicalize
from causalvis.analysis.simulate import simulate_responses
from causalvis.analysis.stats import logit_location, mean_logit_normal
from causalvis.analysis.tables import condition_table

TRUE = {"none": 0.60, "natural": 0.67, "synthetic": 0.68, "blur": 0.75}


def test_logit_location_inverts_the_population_mean():
    mu = logit_location(0.68, 0.86)
    assert float(mean_logit_normal(mu, 0.86)) == pytest.approx(0.68, abs=1e-9)
    z = np.random.default_rng(0).normal(size=400_000)
    assert expit(mu + 0.86 * z).mean() == pytest.approx(0.68, abs=0.002)


def test_estimates_recover_known_accuracies():
    df, truth = simulate_responses(TRUE, n_participants=150, n_units=60,
                                   units_per_participant=30, sd_participant=0.5,
                                   sd_unit=0.7, seed=11)
    main = canonicalize(df, {})
    main = main[main["is_main"]]
    table, _ = condition_table(main, design="crossed", n_boot=1000, seed=0)
    for cond, acc in truth.items():
        row = table[cond]
        assert row["accuracy"] == pytest.approx(acc, abs=0.035), cond
        assert row["ci_low"] <= acc <= row["ci_high"], cond
        assert row["n_participants"] == 150 and row["n_trials"] == 150 * 30
        assert row["ci_method"] == "crossed"
    # Catch trials are not in the main accuracy.
    assert main["kind"].eq("main").all()


def _coverage(n_studies: int, *, crossed: bool, seed: int) -> float:
    """Fraction of simulated studies whose 95 % interval covers the true accuracy.

    Participants-only intervals target the accuracy for the study's units (units fixed,
    as when every participant sees the same units); crossed intervals target the
    population accuracy over units too (units sampled anew per study).
    """
    rng = np.random.default_rng(seed)
    n_part, n_units, sd_p, sd_u, acc, n_boot = 20, 18, 0.5, 0.7, 0.68, 400
    mu = logit_location(acc, float(np.hypot(sd_p, sd_u)))
    hits = 0
    for _ in range(n_studies):
        b = rng.normal(0, sd_u, n_units)
        a = rng.normal(0, sd_p, n_part)
        y = (rng.random((n_part, n_units)) < expit(mu + a[:, None] + b)).astype(float)
        n = np.ones_like(y)
        reps = stats.ratio_replicates(y, n, n_boot, rng, crossed=crossed)
        if crossed:
            truth = acc
            lo, hi = stats.percentile_interval(reps, min(n_part, n_units))
        else:
            truth = float(np.mean(mean_logit_normal(mu + b, sd_p)))
            lo, hi = stats.percentile_interval(reps, n_part)
        hits += lo <= truth <= hi
    return hits / n_studies


def test_participant_bootstrap_coverage_is_nominal():
    coverage = _coverage(2000, crossed=False, seed=2021)
    print(f"participant-bootstrap 95% CI coverage over 2000 simulated studies: {coverage:.3f}")
    assert 0.93 <= coverage <= 0.97


def test_crossed_bootstrap_covers_the_population_accuracy():
    # The pigeonhole (crossed) bootstrap counts the trial-level noise twice, so it is
    # known to be mildly conservative (Owen 2007); it must never under-cover.
    coverage = _coverage(500, crossed=True, seed=7)
    print(f"crossed-bootstrap 95% CI coverage over 500 simulated studies: {coverage:.3f}")
    assert 0.93 <= coverage <= 0.995


def test_participants_only_intervals_undercover_when_units_are_sampled():
    # Why the crossed bootstrap exists: ignoring unit sampling is overconfident.
    rng = np.random.default_rng(5)
    n_part, n_units, sd_p, sd_u, acc = 20, 18, 0.5, 0.7, 0.68
    mu = logit_location(acc, float(np.hypot(sd_p, sd_u)))
    hits = 0
    for _ in range(300):
        b = rng.normal(0, sd_u, n_units)
        a = rng.normal(0, sd_p, n_part)
        y = (rng.random((n_part, n_units)) < expit(mu + a[:, None] + b)).astype(float)
        reps = stats.ratio_replicates(y.sum(1), np.full(n_part, n_units), 400, rng)
        lo, hi = stats.percentile_interval(reps, n_part)
        hits += lo <= acc <= hi
    assert hits / 300 < 0.90
