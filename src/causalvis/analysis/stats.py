"""Pure numeric statistics: cluster bootstraps, ±2 SEM, permutation tests, Holm, κ, and
the logit-normal mean of the simulations.

Arrays in, numbers out; no pandas, no files. The bootstraps are vectorised: a replicate is
a vector of multinomial resampling weights over clusters (participants, or participants and
units crossed), so thousands of replicates cost one matrix product. Every interval is an
expanded percentile interval (:func:`percentile_interval`), for human and machine
observers alike, so the CIs of one report are comparable.

Public helpers for other packages (machine observers, power analysis) are
:func:`bootstrap_ci`, :func:`crossed_bootstrap_ci`, :func:`spearman_ci`, :func:`sem2`,
:func:`wilson_ci`, :func:`holm`, :func:`error_consistency`, :func:`mean_logit_normal` and
:func:`logit_location`.
"""

from __future__ import annotations

import numpy as np
from scipy import optimize
from scipy import stats as sps
from scipy.special import expit, logit

DEFAULT_BOOT = 2000
DEFAULT_PERM = 5000
# Gauss–Hermite nodes and weights for expectations over Z ~ N(0, 1).
_GH_X, _GH_W = np.polynomial.hermite_e.hermegauss(61)
_GH_W = _GH_W / _GH_W.sum()


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def resample_indices(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n]`` cluster indices drawn with replacement, one row per replicate."""
    return rng.integers(0, n, size=(n_boot, n))


def resample_weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n]`` multinomial counts: how often each cluster is drawn per replicate.

    Drawn as indices and counted with one bincount (``Generator.multinomial`` with a
    size is ~20x slower)."""
    idx = resample_indices(n, n_boot, rng) + n * np.arange(n_boot)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(float)


def expanded_levels(n_clusters: int, level: float = 0.95) -> tuple[float, float]:
    """Percentile levels of Hesterberg's *expanded percentile* interval.

    The plain percentile bootstrap is too narrow with few clusters (it uses the 1/n plug-in
    variance and normal quantiles). Widening the nominal level to
    ``Phi(sqrt(n/(n-1)) * t_{n-1})`` fixes both; with many clusters it equals the plain one.
    """
    alpha = 1 - level
    if n_clusters < 2:
        return alpha / 2, 1 - alpha / 2
    z = np.sqrt(n_clusters / (n_clusters - 1)) * sps.t.ppf(1 - alpha / 2, n_clusters - 1)
    lo = float(sps.norm.cdf(-z))
    return lo, 1 - lo


def percentile_interval(reps: np.ndarray, n_clusters: int, level: float = 0.95) -> tuple[float, float]:
    reps = np.asarray(reps, dtype=float)
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    lo, hi = expanded_levels(n_clusters, level)
    return float(np.quantile(reps, lo)), float(np.quantile(reps, hi))


def ratio_replicates(
    k: np.ndarray, n: np.ndarray, n_boot: int = DEFAULT_BOOT, seed=None, *, crossed: bool = False,
    unit_weights: np.ndarray | None = None, participant_weights: np.ndarray | None = None,
) -> np.ndarray:
    """Bootstrap replicates of the pooled proportion ``sum(k) / sum(n)``.

    ``k, n``: ``[participants]`` or ``[participants, units]`` counts. Participants are
    resampled (given ``participant_weights``, to share participant draws between the
    conditions of a within-subject design); with ``crossed`` (or given ``unit_weights``, to
    share unit draws between conditions) units are resampled too, independently (the
    pigeonhole bootstrap).
    """
    rng = _rng(seed)
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if k.ndim == 1:
        k, n = k[:, None], n[:, None]
    wp = (resample_weights(k.shape[0], n_boot, rng) if participant_weights is None
          else np.asarray(participant_weights, dtype=float))
    kk, nn = wp @ k, wp @ n  # [B, U]
    if unit_weights is None and crossed and k.shape[1] > 1:
        unit_weights = resample_weights(k.shape[1], n_boot, rng)
    if unit_weights is not None:
        kk, nn = kk * unit_weights, nn * unit_weights
    num, den = kk.sum(axis=1), nn.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return num / den


def bootstrap_ci(
    successes, trials=None, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed=0
) -> tuple[float, float, float]:
    """(estimate, low, high) with clusters along axis 0.

    With ``trials``: the pooled proportion ``sum(successes) / sum(trials)`` (e.g. correct
    answers and trials per participant, or per unit for a machine observer). Without: the
    mean of ``successes`` (one value per cluster, e.g. per-unit accuracies).
    """
    s = np.asarray(successes, dtype=float)
    t = np.ones_like(s) if trials is None else np.asarray(trials, dtype=float)
    if s.shape[0] == 0 or t.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    est = float(s.sum() / t.sum())
    reps = ratio_replicates(s, t, n_boot, seed)
    lo, hi = percentile_interval(reps, s.shape[0], level)
    return est, lo, hi


def crossed_bootstrap_ci(
    k, n, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed=0
) -> tuple[float, float, float]:
    """Like :func:`bootstrap_ci` for a ``[participants, units]`` count matrix, resampling
    participants and units independently (generalises over both populations)."""
    k = np.asarray(k, dtype=float)
    n = np.asarray(n, dtype=float)
    if n.sum() == 0:
        return float("nan"), float("nan"), float("nan")
    est = float(k.sum() / n.sum())
    reps = ratio_replicates(k, n, n_boot, seed, crossed=True)
    lo, hi = percentile_interval(reps, min(k.shape), level)
    return est, lo, hi


def sem2(values) -> float:
    """Two standard errors of the mean (the papers' error bars), over e.g. participants."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 2:
        return float("nan")
    return float(2 * v.std(ddof=1) / np.sqrt(v.size))


def wilson_ci(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (trials treated as independent)."""
    if n <= 0:
        return float("nan"), float("nan")
    z = sps.norm.ppf(1 - (1 - level) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(centre - half), float(centre + half)


def permutation_test(
    k_a, n_a, k_b, n_b, *, n_perm: int = DEFAULT_PERM, seed=0
) -> tuple[float, float]:
    """Two-sided permutation test of pooled accuracy A − B, permuting participants
    between the two conditions. Returns (observed difference, p-value)."""
    k = np.concatenate([np.asarray(k_a, float), np.asarray(k_b, float)])
    n = np.concatenate([np.asarray(n_a, float), np.asarray(n_b, float)])
    na = len(k_a)
    obs = k[:na].sum() / n[:na].sum() - k[na:].sum() / n[na:].sum()
    rng = _rng(seed)
    perm = np.argsort(rng.random((n_perm, len(k))), axis=1)
    in_a = np.zeros((n_perm, len(k)))
    np.put_along_axis(in_a, perm[:, :na], 1.0, axis=1)
    ka, nA = in_a @ k, in_a @ n
    with np.errstate(invalid="ignore", divide="ignore"):
        diffs = ka / nA - (k.sum() - ka) / (n.sum() - nA)
    extreme = np.sum(np.abs(diffs) >= abs(obs) - 1e-12)
    return float(obs), float((1 + extreme) / (1 + n_perm))


def sign_flip_test(
    differences, *, n_perm: int = DEFAULT_PERM, seed=0, max_exact: int = 16
) -> tuple[float, float, str]:
    """Two-sided paired sign-flip test of the mean of per-participant differences (each
    participant's accuracy in A minus in B, for a within-subject design).

    Under H0 each participant's two condition labels are exchangeable, so each difference
    is equally likely to have either sign. Exact over all ``2**n`` sign patterns when
    ``n <= max_exact`` (p = share of patterns at least as extreme, the observed one
    included: at least ``2 / 2**n``), else ``n_perm`` random patterns with
    ``p = (1 + extreme) / (1 + n_perm)``. Returns (mean difference, p, "exact" | "monte
    carlo")."""
    d = np.asarray(differences, dtype=float)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return float("nan"), float("nan"), "exact"
    obs = float(d.mean())
    if d.size <= max_exact:
        patterns = np.arange(2 ** d.size)[:, None] >> np.arange(d.size) & 1
        signs = 1.0 - 2.0 * patterns
        stat = signs @ d / d.size
        return obs, float(np.mean(np.abs(stat) >= abs(obs) - 1e-12)), "exact"
    signs = _rng(seed).choice(np.array([-1.0, 1.0]), size=(n_perm, d.size))
    extreme = int(np.sum(np.abs(signs @ d / d.size) >= abs(obs) - 1e-12))
    return obs, float((1 + extreme) / (1 + n_perm)), "monte carlo"


def holm(pvalues) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (NaNs stay NaN and are not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    if ok.size == 0:
        return out
    order = ok[np.argsort(p[ok])]
    m = ok.size
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def error_consistency(a, b) -> float:
    """Cohen's κ between two observers' correctness on the same trials (Geirhos et al.
    2020): agreement beyond what their accuracies alone predict. NaN if undefined."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.size == 0:
        return float("nan")
    c_obs = float(np.mean(a == b))
    pa, pb = a.mean(), b.mean()
    c_exp = float(pa * pb + (1 - pa) * (1 - pb))
    if c_exp >= 1.0:
        return float("nan")
    return (c_obs - c_exp) / (1 - c_exp)


def kappa_matrix(correct: np.ndarray, min_common: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """κ for every observer pair from an ``[observers, items]`` matrix (NaN = not seen).

    Returns (κ matrix, number of common items); pairs with fewer than ``min_common`` common
    items get NaN.
    """
    c = np.asarray(correct, dtype=float)
    seen = np.isfinite(c)
    x = np.where(seen, c, 0.0)
    s = seen.astype(float)
    n_common = s @ s.T
    # On the common items of each pair: both-correct, a-correct, b-correct counts.
    both1 = x @ x.T
    a1 = x @ s.T
    b1 = s @ x.T
    both0 = n_common - a1 - b1 + both1
    with np.errstate(invalid="ignore", divide="ignore"):
        c_obs = (both1 + both0) / n_common
        pa, pb = a1 / n_common, b1 / n_common
        c_exp = pa * pb + (1 - pa) * (1 - pb)
        kappa = (c_obs - c_exp) / (1 - c_exp)
    kappa[(n_common < max(min_common, 1)) | ~np.isfinite(kappa)] = np.nan
    return kappa, n_common


def spearman_ci(
    x, y, *, n_boot: int = DEFAULT_BOOT, level: float = 0.95, seed=0
) -> tuple[float, float, float]:
    """Spearman ρ with a bootstrap CI over the paired items (e.g. units): items are
    resampled with their pair, the interval is :func:`percentile_interval`'s. NaN with
    fewer than 3 items, no variation, or fewer than 10 resamples with a defined ρ."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    rho = float(sps.spearmanr(x, y).statistic)
    idx = resample_indices(n, n_boot, _rng(seed))
    rx = sps.rankdata(x[idx], axis=1)
    ry = sps.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    valid = denom > 0  # resamples where one side is constant have no correlation
    if valid.sum() < 10:
        return rho, float("nan"), float("nan")
    lo, hi = percentile_interval((rx * ry).sum(axis=1)[valid] / denom[valid], n, level)
    return rho, lo, hi


def mean_logit_normal(mu: float | np.ndarray, sd: float) -> np.ndarray:
    """E[sigmoid(mu + sd·Z)], Z ~ N(0, 1), by Gauss–Hermite quadrature (vectorised in mu):
    the population accuracy of a logistic model with N(0, sd²) random effects."""
    mu = np.asarray(mu, dtype=float)
    return (expit(mu[..., None] + sd * _GH_X) * _GH_W).sum(axis=-1)


def logit_location(accuracy: float, sd: float) -> float:
    """mu with E[sigmoid(mu + sd·Z)] = accuracy (the logit itself when sd = 0)."""
    if not 0 < accuracy < 1:
        raise ValueError("accuracy must be in (0, 1)")
    if sd == 0:
        return float(logit(accuracy))
    return float(optimize.brentq(lambda m: mean_logit_normal(m, sd) - accuracy, -40, 40))


def spearman(x, y) -> tuple[float, float]:
    """Spearman ρ and its p-value (NaN with fewer than 3 points or no variation)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan")
    res = sps.spearmanr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue)
