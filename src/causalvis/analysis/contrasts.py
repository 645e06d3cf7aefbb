"""Condition contrasts: each condition vs the baseline(s) (``none``) and the reference
(``natural``).

Three views of one question, reported side by side: the bootstrap difference with its CI,
a permutation test that matches the design (:mod:`causalvis.analysis.design`): a paired
sign-flip test over participants when the same participants saw both conditions, labels
permuted between participants when each saw one), and a mixed-effects
logistic regression (random intercepts for participant and unit). Holm's correction is
applied over the family of contrasts, separately for each test. The plain-language verdict
uses the Holm-adjusted permutation p-value, which assumes least.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from causalvis.analysis import stats
from causalvis.analysis.design import BETWEEN, MIXED, WITHIN, pair_design, varies_within
from causalvis.analysis.glmm import fit_glmm
from causalvis.analysis.tables import counts, interval_text

REFERENCES = ("none", "natural")


def pairs(conditions: list[str], references: tuple[str, ...] = REFERENCES) -> list[tuple[str, str]]:
    """(condition, reference) pairs, each unordered pair once."""
    seen: set[frozenset[str]] = set()
    out = []
    for ref in references:
        if ref not in conditions:
            continue
        for cond in conditions:
            key = frozenset((cond, ref))
            if cond == ref or key in seen:
                continue
            seen.add(key)
            out.append((cond, ref))
    return out


SLOPES, INTERCEPT = "intercept + condition slopes", "intercept"


def _formula(effects: dict[str, str]) -> str:
    terms = [f"(1 + condition|{name})" if kind == SLOPES else f"(1|{name})"
             for name, kind in effects.items()]
    return " + ".join(["correct ~ condition", *terms])


def mixed_model(df: pd.DataFrame, conditions: list[str],
                reference: str | None = None) -> dict[str, Any]:
    """Fit the GLMM once (reference level: ``reference``, else ``none`` if present);
    contrasts come from its covariance. Random effects follow the design: condition slopes
    for participants (units) when conditions vary within them, intercepts when between; a
    fit with slopes that does not converge or is singular falls back to intercepts and says
    so. Never raises: failures are reported in the result."""
    ref = reference if reference in conditions else next(
        (r for r in REFERENCES if r in conditions), conditions[0])
    unit = df["unit"].to_numpy() if "unit" in df.columns and df["unit"].nunique() > 1 else None
    factors = {"participant": "participant_id", **({"unit": "unit"} if unit is not None else {})}
    wanted = {name: SLOPES if varies_within(df, col) else INTERCEPT
              for name, col in factors.items()}
    info: dict[str, Any] = {
        "model": _formula(wanted),
        "method": "Laplace approximation, joint penalised fit (lme4 glmer nAGQ=0 equivalent)",
        "reference": ref, "random_effects": wanted, "random_effects_design": dict(wanted),
        "fallback": None,
    }
    if len(conditions) < 2:
        return {**info, "fitted": False, "converged": False, "message": "only one condition"}
    args = (df["correct"].to_numpy(float), df["condition"].to_numpy(str),
            df["participant_id"].to_numpy(str), unit, ref)
    slopes = [name for name, kind in wanted.items() if kind == SLOPES]
    try:
        res = fit_glmm(*args, slopes=slopes)
        if slopes and (not res.converged or res.singular):
            why = res.message or "did not converge"
            res = fit_glmm(*args)
            info["random_effects"] = dict.fromkeys(wanted, INTERCEPT)
            info["model"] = _formula(info["random_effects"])
            info["fallback"] = (f"the fit with condition slopes ({', '.join(slopes)}) was "
                                f"not usable ({why}); fell back to random intercepts only")
    except (ValueError, np.linalg.LinAlgError) as exc:
        return {**info, "fitted": False, "converged": False, "message": str(exc)}
    message = "; ".join(m for m in (info["fallback"], res.message) if m)
    return {
        **info, "fitted": True, "converged": res.converged, "message": message,
        "sd_random": res.sd_random, "names": res.names, "coef": res.coef.tolist(),
        "cov": res.cov.tolist(), "log_likelihood": res.log_likelihood,
        "singular": res.singular,
    }


def _glmm_contrast(glmm: dict[str, Any], cond: str, ref: str) -> dict[str, Any]:
    if not glmm.get("fitted"):
        return {"log_odds_ratio": None, "se": None, "p": None}
    names = glmm["names"]
    c = np.zeros(len(names))
    for level, sign in ((cond, 1.0), (ref, -1.0)):
        if level != glmm["reference"]:
            c[names.index(level)] += sign
    est = float(c @ np.asarray(glmm["coef"]))
    se = float(np.sqrt(c @ np.asarray(glmm["cov"]) @ c))
    p = float(2 * sps.norm.sf(abs(est / se))) if se > 0 else float("nan")
    return {"log_odds_ratio": est, "se": se, "p": p}


def compute_contrasts(
    df: pd.DataFrame,
    table: dict[str, dict[str, Any]],
    reps: dict[str, np.ndarray],
    *,
    n_perm: int = stats.DEFAULT_PERM,
    seed: int = 0,
    level: float = 0.95,
    glmm: dict[str, Any] | None = None,
    references: tuple[str, ...] = REFERENCES,
) -> list[dict[str, Any]]:
    """One entry per (condition, reference) pair with difference, CI, tests, verdict.

    ``references``: baselines first, then the reference explanation (each condition is
    contrasted with each, every unordered pair once). ``p_permutation`` is the p-value of
    the design's test, named in ``test`` (``design``: within | between | mixed)."""
    conditions = list(table)
    out = []
    for i, (cond, ref) in enumerate(pairs(conditions, references)):
        d_a, d_b = df[df["condition"] == cond], df[df["condition"] == ref]
        _, _, k_a, n_a = counts(d_a)
        _, _, k_b, n_b = counts(d_b)
        diff = float(k_a.sum() / n_a.sum() - k_b.sum() / n_b.sum())
        design = pair_design(df, cond, ref)
        if design["design"] == BETWEEN:
            _, p_perm = stats.permutation_test(k_a.sum(1), n_a.sum(1), k_b.sum(1), n_b.sum(1),
                                               n_perm=n_perm, seed=seed + i)
            test = "label permutation between participants"
        else:
            per_a = d_a.groupby("participant_id")["correct"].mean()
            per_b = d_b.groupby("participant_id")["correct"].mean()
            paired = (per_a - per_b).dropna()  # participants who saw both
            _, p_perm, how = stats.sign_flip_test(paired.to_numpy(), n_perm=n_perm,
                                                  seed=seed + i)
            test = f"paired sign-flip over {len(paired)} participants ({how})"
            if design["design"] == MIXED:
                test += (f"; {design['n_participants_one']} participants who saw only one "
                         "of the two conditions are not in the test")
        n_clusters = min(table[cond]["n_participants"], table[ref]["n_participants"])
        lo, hi = stats.percentile_interval(reps[cond] - reps[ref], n_clusters, level)
        entry: dict[str, Any] = {
            "condition": cond, "reference": ref, "difference": diff,
            "ci_low": lo, "ci_high": hi, "p_permutation": p_perm,
            "design": design["design"], "test": test,
            "n_participants_both": design["n_participants_both"],
        }
        if glmm is not None:
            g = _glmm_contrast(glmm, cond, ref)
            entry.update(glmm_log_odds_ratio=g["log_odds_ratio"], glmm_se=g["se"],
                         p_glmm=g["p"])
        out.append(entry)
    adj = stats.holm([e["p_permutation"] for e in out])
    for e, a in zip(out, adj, strict=True):
        e["p_permutation_holm"] = float(a)
    if glmm is not None:
        adj = stats.holm([np.nan if e["p_glmm"] is None else e["p_glmm"] for e in out])
        for e, a in zip(out, adj, strict=True):
            e["p_glmm_holm"] = None if not np.isfinite(a) else float(a)
    for e in out:
        e["significant"] = bool(e["p_permutation_holm"] < 1 - level)
        e["statement"] = statement(e, level)
    return out


def statement(e: dict[str, Any], level: float = 0.95) -> str:
    """One plain sentence; 'not significant' never claims the conditions are equal."""
    d = 100 * e["difference"]
    ci = interval_text(e["ci_low"], e["ci_high"], None, lambda v: f"{100 * v:+.1f}")
    ci = f"{level:.0%} CI {ci.replace(' – ', ' to ')}" if not ci.startswith("no ") else ci
    what = f"{e['condition']} vs {e['reference']}: {d:+.1f} percentage points ({ci})"
    p = e["p_permutation_holm"]
    test = "paired sign-flip test" if e.get("design") in (WITHIN, MIXED) else "permutation test"
    if e["significant"]:
        side = "higher" if d > 0 else "lower"
        return f"{what}; {e['condition']} is significantly {side} ({test}, Holm p = " \
               f"{p:.3g})."
    return (f"{what}; not significant ({test}, Holm p = {p:.3g}): these data do not "
            f"show a difference, which is not evidence that there is none.")
