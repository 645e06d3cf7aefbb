"""The numeric cores against independent references."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.multitest import multipletests

from causalvis.analysis import stats


def test_bootstrap_ci_pooled_proportion_and_mean():
    k = np.array([10, 12, 8, 15, 9, 11, 13, 7, 14, 10], float)
    n = np.full(10, 18.0)
    est, lo, hi = stats.bootstrap_ci(k, n, n_boot=4000, seed=1)
    assert est == pytest.approx(k.sum() / n.sum())
    assert lo < est < hi
    # The interval width matches the analytic cluster standard error (±1.96 SE, t-widened).
    se = (k / n).std(ddof=1) / np.sqrt(10)
    assert (hi - lo) / 2 == pytest.approx(2.26 * se, rel=0.2)
    est2, lo2, hi2 = stats.bootstrap_ci(k / n, n_boot=4000, seed=1)
    assert est2 == pytest.approx(np.mean(k / n))
    assert lo2 < est2 < hi2


def test_bootstrap_is_seeded_and_handles_empty():
    k, n = np.array([3.0, 4, 5, 6]), np.array([6.0, 6, 6, 6])
    assert stats.bootstrap_ci(k, n, seed=3) == stats.bootstrap_ci(k, n, seed=3)
    assert all(np.isnan(stats.bootstrap_ci(np.array([]), np.array([]))))


def test_expanded_levels_widen_for_small_samples_only():
    lo5, hi5 = stats.expanded_levels(5)
    lo1000, _ = stats.expanded_levels(1000)
    assert lo5 < 0.01 < 0.025 and hi5 == pytest.approx(1 - lo5)
    assert lo1000 == pytest.approx(0.025, abs=0.001)


def test_crossed_bootstrap_is_wider_when_units_vary():
    rng = np.random.default_rng(0)
    unit_p = rng.uniform(0.2, 0.95, 12)
    y = (rng.random((30, 12)) < unit_p).astype(float)
    n = np.ones_like(y)
    _, lo_p, hi_p = stats.bootstrap_ci(y.sum(1), n.sum(1), seed=0)
    _, lo_c, hi_c = stats.crossed_bootstrap_ci(y, n, seed=0)
    assert hi_c - lo_c > 1.5 * (hi_p - lo_p)


def test_sem2_and_wilson():
    v = np.array([0.5, 0.6, 0.7, 0.8])
    assert stats.sem2(v) == pytest.approx(2 * v.std(ddof=1) / 2)
    assert np.isnan(stats.sem2([0.5]))
    lo, hi = stats.wilson_ci(7, 10)
    assert lo == pytest.approx(0.3968, abs=1e-3) and hi == pytest.approx(0.8922, abs=1e-3)


def test_holm_matches_statsmodels():
    p = np.array([0.01, 0.04, 0.03, 0.2, 0.005])
    expected = multipletests(p, method="holm")[1]
    np.testing.assert_allclose(stats.holm(p), expected)
    out = stats.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


def test_permutation_test_null_and_effect():
    rng = np.random.default_rng(0)
    n = np.full(20, 18.0)
    same_a = rng.binomial(18, 0.65, 20).astype(float)
    same_b = rng.binomial(18, 0.65, 20).astype(float)
    _, p_null = stats.permutation_test(same_a, n, same_b, n, n_perm=2000, seed=0)
    hi = rng.binomial(18, 0.8, 20).astype(float)
    lo = rng.binomial(18, 0.55, 20).astype(float)
    diff, p_eff = stats.permutation_test(hi, n, lo, n, n_perm=2000, seed=0)
    assert p_null > 0.05
    assert p_eff < 0.001 and diff == pytest.approx(hi.sum() / n.sum() - lo.sum() / n.sum())


def test_permutation_p_values_are_uniform_under_the_null():
    rng = np.random.default_rng(1)
    ps = []
    for i in range(200):
        k = rng.binomial(10, 0.6, 16).astype(float)
        _, p = stats.permutation_test(k[:8], np.full(8, 10.0), k[8:], np.full(8, 10.0),
                                      n_perm=199, seed=i)
        ps.append(p)
    rate = np.mean(np.array(ps) <= 0.05)
    assert 0.01 <= rate <= 0.10


def test_error_consistency_matches_sklearn_kappa():
    rng = np.random.default_rng(2)
    a = rng.random(60) < 0.7
    b = np.where(rng.random(60) < 0.6, a, rng.random(60) < 0.7)
    assert stats.error_consistency(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert stats.error_consistency(a, a) == pytest.approx(1.0)


def test_kappa_matrix_matches_pairwise_on_common_items():
    rng = np.random.default_rng(3)
    m = (rng.random((5, 40)) < 0.65).astype(float)
    m[rng.random((5, 40)) < 0.3] = np.nan  # each observer misses some trials
    kappa, n_common = stats.kappa_matrix(m)
    for i in range(5):
        for j in range(5):
            both = np.isfinite(m[i]) & np.isfinite(m[j])
            assert n_common[i, j] == both.sum()
            ref = cohen_kappa_score(m[i, both].astype(bool), m[j, both].astype(bool))
            assert kappa[i, j] == pytest.approx(ref)
    kappa5, _ = stats.kappa_matrix(m, min_common=1000)
    assert np.isnan(kappa5).all()


def test_spearman_handles_degenerate_input():
    assert np.isnan(stats.spearman([1, 2], [3, 4])[0])
    rho, p = stats.spearman([1, 2, 3, 4, 5], [2, 4, 5, 9, 10])
    assert rho == pytest.approx(1.0) and p < 0.05
