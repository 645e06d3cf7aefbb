"""The mixed-effects logistic regression on small simulated data (it is the slow part)."""

from __future__ import annotations

import numpy as np
import pytest

from causalvis.analysis.contrasts import compute_contrasts, mixed_model, pairs
from causalvis.analysis.glmm import fit_glmm
from causalvis.analysis.load import canonicalize
from causalvis.analysis.simulate import logit_location, simulate_responses
from causalvis.analysis.tables import condition_table

SD_P, SD_U = 0.5, 0.7


def _sim(acc: dict[str, float], seed: int, n_participants: int = 15):
    df, _ = simulate_responses(acc, n_participants=n_participants, n_units=12,
                               sd_participant=SD_P, sd_unit=SD_U, n_catch=0, seed=seed)
    return canonicalize(df, {})


def _true_log_odds(acc: dict[str, float], cond: str, ref: str) -> float:
    sd = float(np.hypot(SD_P, SD_U))
    return logit_location(acc[cond], sd) - logit_location(acc[ref], sd)


def test_glmm_standard_errors_are_calibrated():
    """z = (estimate - truth) / SE must be ~N(0, 1) across simulated studies: a fit that
    ignored the random intercepts' uncertainty (e.g. mean-field VB) gives SD(z) ~ 2."""
    acc = {"none": 0.6, "synthetic": 0.72}
    truth = _true_log_odds(acc, "synthetic", "none")
    zs = []
    for seed in range(24):
        d = _sim(acc, seed)
        res = fit_glmm(d["correct"].to_numpy(float), d["condition"].to_numpy(str),
                       d["participant_id"].to_numpy(str), d["unit"].to_numpy(str), "none")
        assert res.converged, res.message
        i = res.names.index("synthetic")
        zs.append((res.coef[i] - truth) / np.sqrt(res.cov[i, i]))
    zs = np.array(zs)
    assert abs(zs.mean()) < 0.6
    assert 0.6 < zs.std(ddof=1) < 1.45


def test_glmm_recovers_variance_components_roughly():
    d = _sim({"none": 0.6, "natural": 0.7}, seed=3, n_participants=40)
    res = fit_glmm(d["correct"].to_numpy(float), d["condition"].to_numpy(str),
                   d["participant_id"].to_numpy(str), d["unit"].to_numpy(str), "none")
    assert res.converged
    assert 0.2 < res.sd_random["participant"] < 0.9
    assert 0.3 < res.sd_random["unit"] < 1.3


def test_glmm_reports_singular_fit_instead_of_failing():
    # No participant variability at all: the participant SD runs to its bound; the fit
    # must say so rather than pretend.
    rng = np.random.default_rng(0)
    n = 600
    cond = np.repeat(["none", "natural"], n // 2)
    part = np.repeat([f"p{i}" for i in range(30)], n // 30)
    y = (rng.random(n) < np.where(cond == "none", 0.6, 0.7)).astype(float)
    res = fit_glmm(y, cond, part, None, "none")
    assert "participant" in res.sd_random
    assert res.sd_random["participant"] < 0.2
    if res.sd_random["participant"] < 0.01:
        assert "singular" in res.message


def test_contrasts_combine_bootstrap_permutation_and_glmm():
    acc = {"none": 0.55, "natural": 0.75, "synthetic": 0.56}
    d = _sim(acc, seed=4, n_participants=25)
    table, reps = condition_table(d[d["is_main"]], n_boot=500, seed=0)
    glmm = mixed_model(d[d["is_main"]], list(table))
    assert glmm["converged"], glmm["message"]
    out = compute_contrasts(d[d["is_main"]], table, reps, n_perm=999, seed=0, glmm=glmm)
    assert [(c["condition"], c["reference"]) for c in out] == pairs(list(table))
    by = {(c["condition"], c["reference"]): c for c in out}
    big = by[("natural", "none")]
    assert big["significant"] and big["p_glmm_holm"] < 0.05 and big["ci_low"] > 0
    assert "significantly higher" in big["statement"]
    small = by[("synthetic", "none")]
    assert not small["significant"]
    assert "not significant" in small["statement"] and "not evidence" in small["statement"]
    # Contrast vs natural is read from the same fit's covariance.
    vs_nat = by[("synthetic", "natural")]
    assert vs_nat["glmm_log_odds_ratio"] == pytest.approx(
        glmm["coef"][glmm["names"].index("synthetic")]
        - glmm["coef"][glmm["names"].index("natural")])
    # Holm-adjusted p-values are never below the raw ones.
    assert all(c["p_permutation_holm"] >= c["p_permutation"] for c in out)


def test_pairs_skip_duplicates_and_missing_references():
    assert pairs(["none", "natural", "blur"]) == [("natural", "none"), ("blur", "none"),
                                                  ("blur", "natural")]
    assert pairs(["synthetic", "blur"]) == []


# --- random-effects structure that follows the design (issue 19) ---------------------------

def _within(seed: int, sd_slope: float, n_p: int = 30, n_t: int = 40):
    """Every participant answers n_t trials in both conditions; their own natural-vs-none
    effect is N(0.5, sd_slope) on the logit scale."""
    import pandas as pd
    from scipy.special import expit

    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 0.5, n_p), rng.normal(0.5, sd_slope, n_p)
    part = np.repeat([f"p{i}" for i in range(n_p)], 2 * n_t)
    cond = np.tile(np.repeat(["none", "natural"], n_t), n_p)
    eta = np.repeat(a, 2 * n_t) + np.where(cond == "natural", np.repeat(b, 2 * n_t), 0.0)
    y = (rng.random(len(eta)) < expit(eta)).astype(float)
    return pd.DataFrame({"participant_id": part, "condition": cond, "correct": y})


def _two_stage(d) -> tuple[float, float]:
    """Hand check: per participant the log-odds difference, then mean and its SEM."""
    from scipy.special import logit

    acc = d.groupby(["participant_id", "condition"])["correct"].mean().unstack()
    acc = acc.clip(0.5 / 40, 1 - 0.5 / 40)
    diff = logit(acc["natural"]) - logit(acc["none"])
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def test_within_design_gets_condition_slopes_and_honest_standard_errors():
    d = _within(seed=1, sd_slope=1.0)
    glmm = mixed_model(d, ["none", "natural"])
    assert glmm["random_effects"] == {"participant": "intercept + condition slopes"}
    assert glmm["model"] == "correct ~ condition + (1 + condition|participant)"
    assert glmm["converged"] and glmm["fallback"] is None
    i = glmm["names"].index("natural")
    se = float(np.sqrt(glmm["cov"][i][i]))
    mean, sem = _two_stage(d)
    # The slope model's SE is the between-participant spread of the effect, as the two-stage
    # hand computation (~0.21); intercepts only would test against trial noise (~0.08).
    assert se == pytest.approx(sem, rel=0.25)
    assert glmm["coef"][i] == pytest.approx(mean, abs=0.15)
    assert 0.6 < glmm["sd_random"]["participant:natural"] < 1.5
    flat = fit_glmm(d["correct"].to_numpy(float), d["condition"].to_numpy(str),
                    d["participant_id"].to_numpy(str), None, "none")
    assert np.sqrt(flat.cov[1, 1]) < 0.5 * se


def test_between_design_keeps_intercepts_only():
    d = _within(seed=2, sd_slope=1.0)
    keep = d["participant_id"].str[1:].astype(int) % 2 == (d["condition"] == "natural")
    glmm = mixed_model(d[keep], ["none", "natural"])
    assert glmm["random_effects"] == {"participant": "intercept"}
    assert glmm["model"] == "correct ~ condition + (1|participant)"
    assert "participant:natural" not in glmm["sd_random"]


def test_singular_slope_fit_falls_back_to_intercepts_and_says_so():
    d = _within(seed=1, sd_slope=0.0)  # no slope variance: its SD runs to the bound
    glmm = mixed_model(d, ["none", "natural"])
    assert glmm["random_effects_design"] == {"participant": "intercept + condition slopes"}
    assert glmm["random_effects"] == {"participant": "intercept"}
    assert glmm["model"] == "correct ~ condition + (1|participant)"
    assert "fell back to random intercepts" in glmm["fallback"]
    assert "singular" in glmm["fallback"] and glmm["fallback"] in glmm["message"]


# --- numerical robustness at study scale ---------------------------------------------------

def _five_conditions(n_per: int, n_units: int = 18, seed: int = 0):
    """Between-participant conditions (the paper's design), crossed with units; no unit
    slope variance: what a (1 + condition|unit) fit meets when explanations help alike."""
    rng = np.random.default_rng(seed)
    conds = ["none", "natural", "synthetic", "mixed", "blur"]
    unit_effect = rng.normal(0, 0.4, n_units)
    rows = []
    for ci, c in enumerate(conds):
        for p in range(n_per):
            pe = rng.normal(0, 0.5)
            for u in range(n_units):
                eta = 0.3 + 0.25 * ci + pe + unit_effect[u]
                rows.append((c, f"{c}{p}", f"u{u}", float(rng.random() < 1 / (1 + np.exp(-eta)))))
    c, p, u, y = map(np.array, zip(*rows, strict=True))
    return y.astype(float), c, p, u


def test_unit_slopes_at_study_scale_converge_without_overflow():
    """150 participants x 18 units, 5 conditions: the (beta, b) Newton iterations used to
    diverge to 1e235 here (D^-1 explodes as a slope variance runs to its bound, and a
    diverged iterate became the next warm start)."""
    import warnings

    y, cond, part, unit = _five_conditions(30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in matmul / logaddexp
        res = fit_glmm(y, cond, part, unit, "none", slopes=("unit",))
    assert res.converged, res.message
    assert np.all(np.isfinite(res.coef)) and np.all(np.isfinite(res.cov))
    se = np.sqrt(np.diag(res.cov))
    assert np.all((se > 0.05) & (se < 0.6))
    truth = 0.25 * np.arange(1, 5)  # each condition vs none, on the conditional logit scale
    i = [res.names.index(c) for c in ("natural", "synthetic", "mixed", "blur")]
    assert np.all(np.abs(res.coef[i] - truth) < 3 * se[i] + 0.1)


def test_laplace_value_is_the_textbook_formula():
    """One random intercept: log L(sd) = loglik(b^) - b^'b^ / (2 sd^2) - m log(sd) -
    log|Z'WZ + I / sd^2| / 2, maximised over (beta, b) by a general optimiser here — the
    fit's spherical (beta, u) computation must give the same value at its own sd."""
    from scipy import optimize as opt
    from scipy.special import expit

    rng = np.random.default_rng(5)
    n_p, n_t = 12, 20
    part = np.repeat(np.arange(n_p), n_t)
    cond = np.where(part % 2 == 0, "none", "natural")
    y = (rng.random(n_p * n_t) < expit(0.2 + 0.5 * (cond == "natural")
                                       + rng.normal(0, 0.8, n_p)[part])).astype(float)
    res = fit_glmm(y, cond, part.astype(str), None, "none")
    sd = res.sd_random["participant"]
    X = np.column_stack([np.ones_like(y), (cond == "natural").astype(float)])
    Z = np.eye(n_p)[part]

    def neg(v):
        eta = X @ v[:2] + Z @ v[2:]
        return -(y @ eta - np.logaddexp(0, eta).sum() - v[2:] @ v[2:] / (2 * sd**2))

    v = opt.minimize(neg, np.zeros(2 + n_p), method="BFGS", options={"gtol": 1e-10}).x
    eta = X @ v[:2] + Z @ v[2:]
    w = expit(eta) * (1 - expit(eta))
    loglik = y @ eta - np.logaddexp(0, eta).sum()
    _, logdet = np.linalg.slogdet(Z.T @ (w[:, None] * Z) + np.eye(n_p) / sd**2)
    lap = loglik - v[2:] @ v[2:] / (2 * sd**2) - n_p * np.log(sd) - logdet / 2
    assert res.log_likelihood == pytest.approx(lap, abs=1e-5)
    assert res.coef == pytest.approx(v[:2], abs=1e-4)
