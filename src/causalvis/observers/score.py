"""Graded scores, P(correct) = σ(αΔ) as in MIS, and the statistics of observe.

Machines have no participants, so uncertainty is a cluster bootstrap over *units*
(resample units with replacement, keep all their trials): trials of one unit are not
independent, units are the sampled population.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=float)))


@dataclass(frozen=True)
class AlphaFit:
    alpha: float
    n: int
    log_likelihood: float


def fit_alpha(signed_delta: np.ndarray, human_correct: np.ndarray) -> AlphaFit:
    """Maximum-likelihood α of P(correct) = σ(αΔ) (Δ oriented towards the truth).

    Δ is rescaled by its RMS before the 1-D search so the bound does not depend on the
    observer's units.
    """
    x = np.asarray(signed_delta, dtype=float)
    y = np.asarray(human_correct, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) == 0:
        raise ValueError("no finite (Δ, correct) pairs to fit α on")
    scale = float(np.sqrt(np.mean(x**2))) or 1.0
    z = x / scale

    def nll(a: float) -> float:
        t = a * z
        # -log σ(t) = log(1 + e^-t), computed stably
        return float(np.sum(y * np.logaddexp(0.0, -t) + (1 - y) * np.logaddexp(0.0, t)))

    res = optimize.minimize_scalar(nll, bounds=(-50.0, 50.0), method="bounded")
    return AlphaFit(alpha=float(res.x) / scale, n=int(len(x)), log_likelihood=-float(res.fun))


def cluster_bootstrap(
    values: np.ndarray,
    clusters: Sequence[str],
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean of ``values`` and a percentile CI from resampling clusters (units)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(index, weights=values, minlength=len(labels))
    counts = np.bincount(index, minlength=len(labels)).astype(float)
    mean = float(values.mean())
    if len(labels) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(labels), size=(n_boot, len(labels)))
    boot = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1 - level) / 2
    return mean, float(np.quantile(boot, tail)), float(np.quantile(boot, 1 - tail))


def spearman_ci(
    x: np.ndarray, y: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Spearman ρ with a percentile bootstrap CI over the paired items (units)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(x)
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan"), float("nan")
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    rx = stats.rankdata(x[idx], axis=1)
    ry = stats.rankdata(y[idx], axis=1)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    denom = np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    valid = denom > 0  # resamples where one side is constant have no correlation
    if valid.sum() < 10:
        return rho, float("nan"), float("nan")
    boots = (rx * ry).sum(axis=1)[valid] / denom[valid]
    tail = (1 - level) / 2
    return rho, float(np.quantile(boots, tail)), float(np.quantile(boots, 1 - tail))


