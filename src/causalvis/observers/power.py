"""Power analysis by simulation: participants per condition needed to detect a difference.

Generative model (logistic, crossed random effects): participant i answers a trial of
unit j in condition c correctly with probability σ(μ_c + u_i + v_j), u_i ~ N(0, σ_p²),
v_j ~ N(0, σ_u²); the same units appear in both conditions (as in the study, where
conditions share base trials). μ_c is solved so that the *marginal* accuracy of condition
A is the baseline and of B the baseline + D. Each participant answers
``trials_per_participant`` main trials covering the units in a random order.

Tests (two-sided): ``welch`` = Welch's t-test on per-participant accuracies (the unit of
replication is the participant, as in the paper's SEM across participants); ``ztest`` =
pooled two-proportion z-test on all responses (correct only without variability; used for
the closed-form check :func:`exact_ztest_power`).

Defaults without pilot data (documented in docs/observers.md): baseline 0.60 (the paper's
no-reference humans), σ_p = 0.4 and σ_u = 0.7 on the logit scale (moderate spreads: about
±10 and ±16 accuracy points around 60 %).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy import special, stats

from causalvis.analysis.stats import logit_location
from causalvis.errors import CausalvisError

DEFAULT_BASELINE = 0.60
DEFAULT_SIGMA_PARTICIPANT = 0.4
DEFAULT_SIGMA_UNIT = 0.7
N_GRID = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100, 125, 150, 200, 250,
          300, 400, 500, 700, 1000)


@dataclass(frozen=True)
class PowerDesign:
    trials_per_participant: int
    n_units: int
    baseline: float = DEFAULT_BASELINE
    sigma_participant: float = DEFAULT_SIGMA_PARTICIPANT
    sigma_unit: float = DEFAULT_SIGMA_UNIT
    source: str = "defaults"

    def __post_init__(self) -> None:
        if self.trials_per_participant < 1 or self.n_units < 1:
            raise CausalvisError("the design needs >= 1 unit and >= 1 trial per participant")
        if not 0.0 < self.baseline < 1.0:
            raise CausalvisError(f"baseline accuracy must be in (0, 1), got {self.baseline}")
        if self.sigma_participant < 0 or self.sigma_unit < 0:
            raise CausalvisError("variability (sigma) must be >= 0")


def _location(p: float, sigma: float) -> float:
    """μ such that the marginal accuracy over N(0, σ²) effects is ``p``
    (``analysis.stats.logit_location``, the integral of the analysis' simulations)."""
    if not 0.0 < p < 1.0:
        raise CausalvisError(f"accuracy {p:.3f} is outside (0, 1): effect too large for the baseline")
    return logit_location(p, sigma)


def _simulate_condition(rng, mu, design: PowerDesign, unit_fx, n, reps) -> np.ndarray:
    """Per-participant correct counts ``[reps, n]`` for one condition."""
    t = design.trials_per_participant
    u = rng.normal(0.0, design.sigma_participant, size=(reps, n, 1))
    # each participant sees the units in a random order, tiled to t trials
    order = np.argsort(rng.random((reps, n, design.n_units)), axis=2)
    reps_needed = -(-t // design.n_units)
    idx = np.tile(order, (1, 1, reps_needed))[:, :, :t]
    v = np.take_along_axis(np.broadcast_to(unit_fx[:, None, :], (reps, n, design.n_units)), idx, 2)
    p = special.expit(mu + u + v)
    return (rng.random(p.shape) < p).sum(axis=2)


def _reject(ca: np.ndarray, cb: np.ndarray, t: int, test: str, alpha: float) -> np.ndarray:
    if test == "welch":
        a, b = ca / t, cb / t
        va, vb = a.var(axis=1, ddof=1), b.var(axis=1, ddof=1)
        n_a, n_b = a.shape[1], b.shape[1]
        se2 = va / n_a + vb / n_b
        diff = b.mean(axis=1) - a.mean(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            tstat = diff / np.sqrt(se2)
            df = se2**2 / ((va / n_a) ** 2 / (n_a - 1) + (vb / n_b) ** 2 / (n_b - 1))
        pval = 2 * stats.t.sf(np.abs(tstat), df)
        # zero variance in both groups: different means are a certain difference
        pval = np.where(se2 == 0, np.where(diff != 0, 0.0, 1.0), pval)
        return pval < alpha
    if test == "ztest":
        return _ztest_reject(ca.sum(axis=1), cb.sum(axis=1), ca.shape[1] * t, cb.shape[1] * t, alpha)
    raise CausalvisError(f"unknown test {test!r}: welch or ztest")


def _ztest_reject(ka, kb, na: int, nb: int, alpha: float) -> np.ndarray:
    ka, kb = np.asarray(ka, float), np.asarray(kb, float)
    pooled = (ka + kb) / (na + nb)
    se = np.sqrt(pooled * (1 - pooled) * (1 / na + 1 / nb))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (kb / nb - ka / na) / se
    z = np.where(se == 0, 0.0, z)
    return np.abs(z) > stats.norm.ppf(1 - alpha / 2)


def exact_ztest_power(n_a: int, n_b: int, p_a: float, p_b: float, alpha: float = 0.05) -> float:
    """Closed-form power of the pooled two-proportion z-test for independent Bernoulli
    responses (n_a, n_b responses): sum over both binomial outcomes of P × [reject]."""
    ka, kb = np.arange(n_a + 1), np.arange(n_b + 1)
    pa = stats.binom.pmf(ka, n_a, p_a)
    pb = stats.binom.pmf(kb, n_b, p_b)
    rej = _ztest_reject(ka[:, None], kb[None, :], n_a, n_b, alpha)
    return float(pa @ (rej * pb[None, :]).sum(axis=1))


def simulate_power(
    design: PowerDesign, effect: float, n: int, *, alpha: float = 0.05, reps: int = 1000,
    test: str = "welch", seed: int = 0,
) -> float:
    """Fraction of simulated studies (n participants per condition) where the test rejects."""
    if n < 2:
        raise CausalvisError("need at least 2 participants per condition")
    s_total = float(np.hypot(design.sigma_participant, design.sigma_unit))
    mu_a = _location(design.baseline, s_total)
    mu_b = _location(design.baseline + effect, s_total)
    rng = np.random.default_rng([seed, n])
    rejected = 0
    chunk = max(1, min(reps, 2_000_000 // max(1, n * design.trials_per_participant)))
    done = 0
    while done < reps:
        r = min(chunk, reps - done)
        unit_fx = rng.normal(0.0, design.sigma_unit, size=(r, design.n_units))
        ca = _simulate_condition(rng, mu_a, design, unit_fx, n, r)
        cb = _simulate_condition(rng, mu_b, design, unit_fx, n, r)
        rejected += int(_reject(ca, cb, design.trials_per_participant, test, alpha).sum())
        done += r
    return rejected / reps


@dataclass
class PowerResult:
    design: PowerDesign
    effect: float
    alpha: float
    target_power: float
    test: str
    reps: int
    curve: list[tuple[int, float]] = field(default_factory=list)
    required_n: int | None = None

    def to_json(self) -> dict:
        return {
            "design": asdict(self.design), "effect": self.effect, "alpha": self.alpha,
            "target_power": self.target_power, "test": self.test, "reps": self.reps,
            "curve": [{"n_per_condition": n, "power": p} for n, p in self.curve],
            "required_n_per_condition": self.required_n,
        }


def power_curve(
    design: PowerDesign, effect: float, *, alpha: float = 0.05, target: float = 0.8,
    reps: int = 1000, test: str = "welch", seed: int = 0, n_max: int = 1000,
) -> PowerResult:
    """Power over a grid of n until the target is reached, then the smallest n (bisection
    between the last two grid points) whose simulated power reaches the target."""
    if effect == 0:
        raise CausalvisError("--effect must be non-zero")
    if not 0 < alpha < 1 or not 0 < target < 1:
        raise CausalvisError("--alpha and --power must be in (0, 1)")
    result = PowerResult(design, effect, alpha, target, test, reps)
    cache: dict[int, float] = {}

    def power(n: int) -> float:
        if n not in cache:
            cache[n] = simulate_power(design, effect, n, alpha=alpha, reps=reps, test=test,
                                      seed=seed)
        return cache[n]

    prev = None
    for n in (g for g in N_GRID if g <= n_max):
        if power(n) >= target:
            lo, hi = (prev or 1), n
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if mid >= 2 and power(mid) >= target:
                    hi = mid
                else:
                    lo = mid
            result.required_n = hi
            # a few points beyond, so the figure shows the curve flattening
            for extra in (g for g in N_GRID if n < g <= min(n_max, 2 * n)):
                power(extra)
            break
        prev = n
    result.curve = sorted(cache.items())
    return result


def pilot_design(responses, trials_per_participant: int, n_units: int) -> PowerDesign:
    """Baseline and variability from pilot responses (canonical columns, main trials).

    Method of moments: between-participant (between-unit) variance of accuracies minus
    the binomial variance expected from their trial counts, converted to the logit scale
    by dividing the SD by p(1 − p).
    """
    df = responses
    p = float(df["correct"].mean())
    if not 0 < p < 1:
        raise CausalvisError("pilot accuracy is 0 or 1: cannot estimate variability")

    def sigma(by: str) -> float:
        if by not in df.columns:
            return float("nan")
        g = df.groupby(by)["correct"].agg(["mean", "size"])
        if len(g) < 2:
            return float("nan")
        excess = g["mean"].var(ddof=1) - float(np.mean(p * (1 - p) / g["size"]))
        return float(np.sqrt(max(0.0, excess)) / (p * (1 - p)))

    sp, su = sigma("participant_id"), sigma("unit")
    return PowerDesign(
        trials_per_participant, n_units, baseline=p,
        sigma_participant=sp if np.isfinite(sp) else DEFAULT_SIGMA_PARTICIPANT,
        sigma_unit=su if np.isfinite(su) else DEFAULT_SIGMA_UNIT,
        source=f"pilot ({df['participant_id'].nunique()} participants, {len(df)} responses)",
    )


def plot_curve(result: PowerResult, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns, ps = zip(*result.curve, strict=True) if result.curve else ((), ())
    fig, ax = plt.subplots(figsize=(5.5, 3.8), dpi=120)
    ax.plot(ns, ps, "o-", color="#1f77b4", ms=3)
    ax.axhline(result.target_power, color="grey", ls="--", lw=1)
    if result.required_n is not None:
        ax.axvline(result.required_n, color="#d62728", ls=":", lw=1)
        ax.annotate(f"n = {result.required_n}", (result.required_n, 0.05), color="#d62728",
                    xytext=(4, 0), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_ylim(0, 1)
    ax.set_xlabel("participants per condition")
    ax.set_ylabel("power")
    d = result.design
    ax.set_title(f"Δ = {result.effect:+.2f} vs {d.baseline:.2f}, α = {result.alpha}, "
                 f"{result.test}, {d.trials_per_participant} trials", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
