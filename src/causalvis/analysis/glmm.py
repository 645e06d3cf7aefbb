"""Mixed-effects logistic regression with crossed random effects (participant, unit).

Why not statsmodels: its ``BinomialBayesMixedGLM`` mean-field VB fit understates the
standard errors of between-participant effects about twofold (it ignores the posterior
correlation between a condition's effect and its participants' intercepts), and its
``fit_map`` collapses the participant variance. This is the lme4 ``glmer(nAGQ=0)``
estimator instead: for given variance components, fixed effects and random effects are
found jointly by penalised Newton steps; the variance components maximise the Laplace
approximation of the marginal likelihood; fixed-effect covariances come from the joint
Hessian (the Schur complement), so they include the random-effect uncertainty. As in
lme4, the random effects are spherical, b = Lambda u with u ~ N(0, I): the Newton system
stays well conditioned as a variance runs to its bound, where the (beta, b) form's D^-1
explodes (it diverged on studies of 150 participants with unit slopes).

Each grouping factor gets a random intercept, or — when conditions vary within its levels
(``slopes``) — a random intercept plus condition slopes with an unstructured covariance
(``(1 + condition | factor)``, parameterised by its Cholesky factor as lme4 does). Without
slopes, a condition effect that varies between participants of a within-subject design is
tested against trial noise only and its standard error is too small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import linalg, optimize, sparse
from scipy.special import expit
from threadpoolctl import threadpool_limits

MAX_PARAMETERS = 3000


@dataclass
class GlmmResult:
    names: list[str]  # fixed-effect names: "(intercept)", then one per non-reference level
    coef: np.ndarray
    cov: np.ndarray
    sd_random: dict[str, float]  # "participant", "unit" (intercepts); "unit:natural" (slopes)
    converged: bool
    message: str = ""
    log_likelihood: float = float("nan")
    extra: dict[str, float] = field(default_factory=dict)
    slopes: list[str] = field(default_factory=list)  # factors fitted with condition slopes
    singular: bool = False


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
    slopes: Sequence[str] = (),
    max_newton: int = 50,
) -> GlmmResult:
    """Fit ``y ~ condition + (1|participant) + (1|unit)`` (treatment coding vs ``reference``);
    a factor named in ``slopes`` gets ``(1 + condition | factor)`` instead.

    ``unit=None`` drops the unit effects. Raises ValueError on unusable input.
    """
    with threadpool_limits(limits=1):  # small dense solves: threads only add contention
        return _fit(y, condition, participant, unit, reference, tuple(slopes), max_newton)


def _n_theta(k: int) -> int:
    return k * (k + 1) // 2


def _cholesky(theta: np.ndarray, k: int) -> np.ndarray:
    """Lower-triangular factor: log of the diagonal first, then the off-diagonal entries."""
    L = np.diag(np.exp(theta[:k]))
    L[np.tril_indices(k, -1)] = theta[k:]
    return L


def _spd_solve(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    """H^-1 g for the penalised Hessian (symmetric positive definite: Cholesky, half the
    work of LU); LU if rounding makes a nearly separable fixed-effect block indefinite."""
    try:
        return linalg.cho_solve(linalg.cho_factor(H), g)
    except linalg.LinAlgError:
        return np.linalg.solve(H, g)


def _spd_logdet(M: np.ndarray) -> float:
    """log|M| of Lambda'Z'WZ Lambda + I (>= I, so positive definite)."""
    try:
        return 2 * float(np.sum(np.log(np.diag(linalg.cholesky(M)))))
    except linalg.LinAlgError:
        sign, logdet = np.linalg.slogdet(M)
        return float(logdet) if sign > 0 else float("inf")


def _fit(y, condition, participant, unit, reference: str, slopes: tuple[str, ...],
         max_newton: int) -> GlmmResult:
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
    groups: list[tuple[str, int, int]] = []  # name, levels, effects per level
    for name, values in (("participant", participant), ("unit", unit)):
        if values is None:
            continue
        _, codes = np.unique(np.asarray(values, dtype=str), return_inverse=True)
        n_levels = int(codes.max()) + 1
        if n_levels < 2:
            continue
        k = q if name in slopes and q > 1 else 1
        ind = _indicator(codes, n_levels)
        # columns level-major: (level 0: intercept, slopes...), (level 1: ...), ...
        cols = [ind.multiply(X[:, [j]]).tocsc() for j in range(k)]
        order = np.arange(n_levels * k).reshape(k, n_levels).T.ravel()
        blocks.append(sparse.hstack(cols, format="csc")[:, order].tocsr())
        groups.append((name, n_levels, k))
    Z = sparse.hstack(blocks, format="csr") if blocks else sparse.csr_matrix((len(y), 0))
    m = Z.shape[1]
    if q + m > MAX_PARAMETERS:
        raise ValueError(f"too many levels for the dense mixed model ({q + m} > {MAX_PARAMETERS})")
    X_sparse = sparse.csr_matrix(X)
    splits = np.cumsum([_n_theta(k) for _, _, k in groups])[:-1] if groups else []
    # the penalty's diagonal: a vanishing ridge on the fixed effects, identity on u
    prior = np.concatenate([np.full(q, 1e-8), np.ones(m)])
    state = {"v": np.zeros(q + m)}

    def relative_factor(theta: np.ndarray) -> sparse.csr_matrix:
        """Block-diagonal Lambda with b = Lambda u, u ~ N(0, I): one Cholesky factor per
        level of each factor (lme4's spherical random effects)."""
        parts = [sparse.kron(sparse.identity(n_levels), sparse.csr_matrix(_cholesky(th, k)))
                 for (_, n_levels, k), th in zip(groups, np.split(theta, splits), strict=True)]
        return sparse.block_diag(parts, format="csr") if parts else sparse.csr_matrix((0, 0))

    def penalised(A: sparse.csr_matrix, v: np.ndarray) -> tuple[float, np.ndarray]:
        eta = A @ v
        return float(y @ eta - np.sum(np.logaddexp(0, eta)) - 0.5 * prior @ (v * v)), eta

    diagonal = np.diag_indices(q + m)

    def hessian(A: sparse.csr_matrix, At: sparse.csr_matrix, eta: np.ndarray) -> np.ndarray:
        mu = expit(eta)
        w = np.clip(mu * (1 - mu), 1e-10, None)
        H = (At.multiply(w[None, :]).tocsr() @ A).toarray()
        H[diagonal] += prior
        return H

    def inner(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, bool]:
        """Penalised Newton steps on (beta, u), each halved until the penalised
        log-likelihood (strictly concave) does not fall, to ~1e-11: the Laplace value must
        be smooth in theta for L-BFGS-B's finite differences. In u the Hessian is
        Lambda'Z'WZ Lambda + I, well conditioned however small a variance gets (the
        (beta, b) form needs D^-1, which explodes as a variance runs to its bound)."""
        A = sparse.hstack([X_sparse, Z @ relative_factor(theta)], format="csr")
        At = A.T.tocsr()
        v = state["v"].copy()
        f, eta = penalised(A, v)
        ok = False
        for _ in range(max_newton):
            mu = expit(eta)
            grad = At @ (y - mu) - prior * v
            step = _spd_solve(hessian(A, At, eta), grad)
            t = 1.0
            while True:
                f_new, eta_new = penalised(A, v + t * step)
                if f_new >= f - 1e-12 * max(1.0, abs(f)) or t < 1e-6:
                    break
                t /= 2
            v, f, eta = v + t * step, f_new, eta_new
            if np.max(np.abs(step)) < 1e-11:  # the full Newton step, not a halved one
                ok = True
                break
        H = hessian(A, At, eta)
        loglik = float(y @ eta - np.sum(np.logaddexp(0, eta)))
        u = v[q:]
        # Laplace: log L = loglik - u'u / 2 - log|Lambda'Z'WZ Lambda + I| / 2
        logdet_h = _spd_logdet(H[q:, q:]) if m else 0.0
        lap = loglik - 0.5 * float(u @ u) - 0.5 * logdet_h
        if not np.isfinite(lap):
            lap = -np.inf
        return v, H, lap, ok

    def objective(theta: np.ndarray) -> float:
        v, _, lap, ok = inner(theta)
        if ok:  # warm start from converged fits only: a diverged one poisons the rest
            state["v"] = v
        return -lap if np.isfinite(lap) else 1e12

    theta0, bounds = [], []
    for _, _, k in groups:
        theta0 += [np.log(0.5)] * k + [0.0] * (_n_theta(k) - k)
        bounds += [(-6.0, 3.0)] * k + [(-20.0, 20.0)] * (_n_theta(k) - k)
    if groups:
        res = optimize.minimize(objective, np.array(theta0), method="L-BFGS-B", bounds=bounds)
        theta = res.x
        opt_ok = bool(res.success)
        msg = "" if opt_ok else f"variance-component optimiser: {res.message}"
    else:
        theta, opt_ok, msg = np.zeros(0), True, "no random effects"
    v, H, lap, newton_ok = inner(theta)
    cov = np.linalg.inv(H)[:q, :q]
    sd_random: dict[str, float] = {}
    at_bound: list[str] = []
    for (name, _, k), th in zip(groups, np.split(theta, splits), strict=True):
        L = _cholesky(th, k)
        sds = np.sqrt(np.diag(L @ L.T))
        labels = [name] + [f"{name}:{lv}" for lv in levels[1:k]]
        sd_random.update({lab: float(s) for lab, s in zip(labels, sds, strict=True)})
        # singular: a diagonal of the Cholesky factor at its lower bound (lme4's isSingular)
        # or an upper-bound SD
        if np.any(th[:k] <= -5.99) or np.any(th[:k] >= 2.99) or (
                k > 1 and np.min(np.diag(L)) < 1e-3 * max(float(np.max(sds)), 1e-12)):
            at_bound.append(name)
    converged = opt_ok and newton_ok and bool(np.all(np.isfinite(v)))
    notes = [msg] if msg else []
    if not newton_ok:
        notes.append("penalised Newton iterations did not converge")
    if at_bound:
        notes.append(f"variance of {', '.join(at_bound)} at its bound (singular fit)")
    return GlmmResult(
        names=["(intercept)"] + levels[1:],
        coef=v[:q],
        cov=cov,
        sd_random=sd_random,
        converged=converged,
        message="; ".join(notes),
        log_likelihood=float(lap),
        slopes=[name for name, _, k in groups if k > 1],
        singular=bool(at_bound),
    )
