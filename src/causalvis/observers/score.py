"""Graded scores, P(correct) = σ(αΔ) as in MIS, and the statistics of observe.

Machines have no participants, so uncertainty is a cluster bootstrap over *units*
(resample units with replacement, keep all their trials): trials of one unit are not
independent, units are the sampled population. The bootstrap itself is the analysis'
(``analysis.stats``), so machine and human CIs of one report share their method.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize

from causalvis.analysis.stats import bootstrap_ci


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
    """Mean of per-trial ``values`` and its CI from resampling clusters (units), keeping
    all trials of a drawn cluster: ``analysis.stats.bootstrap_ci`` on per-cluster sums
    and counts, the method of the human CIs. No CI with fewer than two clusters."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    labels, index = np.unique(np.asarray(clusters), return_inverse=True)
    if len(labels) < 2:
        return float(values.mean()), float("nan"), float("nan")
    sums = np.bincount(index, weights=values, minlength=len(labels))
    counts = np.bincount(index, minlength=len(labels)).astype(float)
    return bootstrap_ci(sums, counts, n_boot=n_boot, level=level, seed=seed)
