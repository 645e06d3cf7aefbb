"""Mixed-effects logistic regression with crossed random intercepts (participant, unit).

Why not statsmodels: its ``BinomialBayesMixedGLM`` mean-field VB fit understates the
standard errors of between-participant effects about twofold (it ignores the posterior
correlation between a condition's effect and its participants' intercepts), and its
``fit_map`` collapses the participant variance. This is the lme4 ``glmer(nAGQ=0)``
estimator instead: for given variance components, fixed effects and random effects are
found jointly by penalised Newton steps; the variance components maximise the Laplace
approximation of the marginal likelihood; fixed-effect covariances come from the joint
Hessian (the Schur complement), so they include the random-effect uncertainty.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize, sparse
from scipy.special import expit
from threadpoolctl import threadpool_limits

MAX_PARAMETERS = 3000


@dataclass
class GlmmResult:
    names: list[str]  # fixed-effect names: "(intercept)", then one per non-reference level
    coef: np.ndarray
    cov: np.ndarray
    sd_random: dict[str, float]
    converged: bool
    message: str = ""
    log_likelihood: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)


def _indicator(codes: np.ndarray, n_levels: int) -> sparse.csr_matrix:
    n = len(codes)
    return sparse.csr_matrix((np.ones(n), (np.arange(n), codes)), shape=(n, n_levels))


def fit_glmm(
    y: np.ndarray,
    condition: np.ndarray,
    participant: np.ndarray,
    unit: np.ndarray | None,
    reference: str,
    *,
    max_newton: int = 50,
) -> GlmmResult:
    """Fit ``y ~ condition + (1|participant) + (1|unit)`` (treatment coding vs ``reference``).

    ``unit=None`` drops the unit intercept. Raises ValueError on unusable input.
    """
    with threadpool_limits(limits=1):  # small dense solves: threads only add contention
        return _fit(y, condition, participant, unit, reference, max_newton)


def _fit(y, condition, participant, unit, reference: str, max_newton: int) -> GlmmResult:
    y = np.asarray(y, dtype=float)
    levels = [reference] + sorted(set(map(str, condition)) - {reference})
    if reference not in set(map(str, condition)):
        raise ValueError(f"reference condition {reference!r} not in the data")
    cond_codes = np.searchsorted(np.array(levels[1:]), np.asarray(condition, dtype=str))
    is_ref = np.asarray(condition, dtype=str) == reference
    q = len(levels)
    X = np.zeros((len(y), q))
    X[:, 0] = 1.0
    X[~is_ref, 1 + cond_codes[~is_ref]] = 1.0
    blocks = []
    groups = []
    for name, values in (("participant", participant), ("unit", unit)):
        if values is None:
            continue
        _, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        n_levels = int(codes.max()) + 1
        if n_levels < 2:
            continue
        blocks.append(_indicator(codes, n_levels))
        groups.append((name, n_levels))
    Z = sparse.hstack(blocks, format="csr") if blocks else sparse.csr_matrix((len(y), 0))
    m = Z.shape[1]
    if q + m > MAX_PARAMETERS:
        raise ValueError(f"too many levels for the dense mixed model ({q + m} > {MAX_PARAMETERS})")
    A = sparse.hstack([sparse.csr_matrix(X), Z], format="csr")
    group_of = np.concatenate([np.full(n, i) for i, (_, n) in enumerate(groups)]) if groups else \
        np.zeros(0, dtype=int)
    state = {"v": np.zeros(q + m), "ok": True}

    def inner(log_sd: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool]:
        prec = np.concatenate([np.full(q, 1e-8), np.exp(-2 * log_sd[group_of])])
        v = state["v"].copy()
        ok = False
        for _ in range(max_newton):
            eta = A @ v
            mu = expit(eta)
            w = np.clip(mu * (1 - mu), 1e-10, None)
            grad = A.T @ (y - mu) - prec * v
            H = (A.T @ sparse.diags(w) @ A).toarray() + np.diag(prec)
            step = np.linalg.solve(H, grad)
            v = v + step
            if np.max(np.abs(step)) < 1e-8:
                ok = True
                break
        eta = A @ v
        mu = expit(eta)
        w = np.clip(mu * (1 - mu), 1e-10, None)
        H = (A.T @ sparse.diags(w) @ A).toarray() + np.diag(prec)
        loglik = float(np.sum(y * eta - np.logaddexp(0, eta)))
        b = v[q:]
        # Laplace: log L = loglik - b'D^-1 b / 2 - log|D| / 2 - log|Z'WZ + D^-1| / 2
        Hb = H[q:, q:]
        sign, logdet_h = np.linalg.slogdet(Hb) if m else (1.0, 0.0)
        logdet_d = float(np.sum(2 * log_sd[group_of]))
        lap = loglik - 0.5 * float(np.sum(prec[q:] * b * b)) - 0.5 * logdet_d - 0.5 * logdet_h
        if sign <= 0:
            lap = -np.inf
        return v, H, lap, ok

    def objective(log_sd: np.ndarray) -> float:
        v, _, lap, ok = inner(log_sd)
        if np.all(np.isfinite(v)):
            state["v"] = v
        return -lap if np.isfinite(lap) else 1e12

    n_vc = len(groups)
    if n_vc:
        res = optimize.minimize(
            objective, np.full(n_vc, np.log(0.5)), method="L-BFGS-B",
            bounds=[(-6.0, 3.0)] * n_vc,
        )
        log_sd = res.x
        opt_ok = bool(res.success)
        msg = "" if opt_ok else f"variance-component optimiser: {res.message}"
    else:
        log_sd, opt_ok, msg = np.zeros(0), True, "no random effects"
    v, H, lap, newton_ok = inner(log_sd)
    cov = np.linalg.inv(H)[:q, :q]
    at_bound = [name for (name, _), s in zip(groups, log_sd, strict=True) if s <= -5.99 or s >= 2.99]
    converged = opt_ok and newton_ok and bool(np.all(np.isfinite(v)))
    notes = [msg] if msg else []
    if not newton_ok:
        notes.append("penalised Newton iterations did not converge")
    if at_bound:
        notes.append(f"variance of {', '.join(at_bound)} at its bound (singular fit)")
    msg = "; ".join(notes)
    names = ["(intercept)"] + levels[1:]
    return GlmmResult(
        names=names,
        coef=v[:q],
        cov=cov,
        sd_random={name: float(np.exp(s)) for (name, _), s in zip(groups, log_sd, strict=True)},
        converged=converged,
        message=msg,
        log_likelihood=float(lap),
    )
