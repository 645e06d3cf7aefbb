"""From the canonical response table to accuracy tables with uncertainty.

``df`` here is already restricted to the trials that count (main, non-catch, included
participants). Numbers come from :mod:`causalvis.analysis.stats`; this module only groups.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from causalvis.analysis import stats

NO_UNIT = "(all)"


def counts(df: pd.DataFrame, units: list[str] | None = None) -> tuple[list[str], list[str],
                                                                        np.ndarray, np.ndarray]:
    """``[participants, units]`` matrices of correct answers and trials."""
    unit = df["unit"].fillna(NO_UNIT) if "unit" in df.columns else pd.Series(NO_UNIT, df.index)
    g = (
        df.assign(_unit=unit.astype(str), _y=df["correct"].astype(float))
        .groupby(["participant_id", "_unit"])["_y"]
        .agg(["sum", "count"])
    )
    k = g["sum"].unstack(fill_value=0.0)
    n = g["count"].astype(float).unstack(fill_value=0.0)
    if units is not None:
        k = k.reindex(columns=units, fill_value=0.0)
        n = n.reindex(columns=units, fill_value=0.0)
    return list(map(str, k.index)), list(map(str, k.columns)), k.to_numpy(float), n.to_numpy(float)


def choose_design(df: pd.DataFrame) -> str:
    """``crossed`` when units are sampled per participant (participants see different
    subsets of a larger unit pool, so results should generalise over units too), else
    ``participants``."""
    if "unit" not in df.columns or df["unit"].nunique() < 2:
        return "participants"
    per = df.groupby("participant_id")["unit"].nunique()
    return "crossed" if df["unit"].nunique() > per.max() else "participants"


def condition_table(
    df: pd.DataFrame, *, design: str = "participants", n_boot: int = stats.DEFAULT_BOOT,
    seed: int = 0, level: float = 0.95, order: list[str] | None = None, paired: bool = False,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Per condition: pooled accuracy, CI (design's primary), both bootstrap CIs, ±2 SEM.

    Returns the table and the bootstrap replicates (shared unit draws across conditions,
    so differences between conditions can be read off the same replicates). With
    ``paired`` (participants saw several conditions) the participant draws are shared too:
    a drawn participant brings all their conditions, so a difference's CI is paired.
    ``order``: the conditions in display order (default :func:`condition_order`).
    """
    rng = np.random.default_rng(seed)
    units = sorted(df["unit"].fillna(NO_UNIT).astype(str).unique()) if "unit" in df.columns \
        else [NO_UNIT]
    has_units = len(units) > 1
    unit_w = stats.resample_weights(len(units), n_boot, rng) if has_units else None
    everyone = sorted(df["participant_id"].astype(str).unique())
    part_w = stats.resample_weights(len(everyone), n_boot, rng) if paired else None
    out: dict[str, dict[str, Any]] = {}
    reps: dict[str, np.ndarray] = {}
    present = set(df["condition"].unique())
    for cond in [c for c in order if c in present] if order else _conditions(df):
        d = df[df["condition"] == cond]
        pids, _, k, n = counts(d, units)
        wp = None
        if part_w is not None:  # this condition's participants, columns of the shared draw
            wp = part_w[:, np.searchsorted(everyone, pids)]
        rep_p = stats.ratio_replicates(k, n, n_boot, rng, participant_weights=wp)
        acc = float(k.sum() / n.sum())
        per_part = k.sum(axis=1) / n.sum(axis=1)
        lo_p, hi_p = stats.percentile_interval(rep_p, k.shape[0], level)
        row: dict[str, Any] = {
            "accuracy": acc,
            "ci_low": lo_p,
            "ci_high": hi_p,
            "sem2": stats.sem2(per_part),
            "mean_participant_accuracy": float(per_part.mean()),
            "n_participants": int(k.shape[0]),
            "n_trials": int(n.sum()),
            "ci_participants": [lo_p, hi_p],
        }
        if has_units:
            rep_c = stats.ratio_replicates(k, n, n_boot, rng, unit_weights=unit_w,
                                           participant_weights=wp)
            lo_c, hi_c = stats.percentile_interval(rep_c, min(k.shape[0], len(units)), level)
            row["ci_crossed"] = [lo_c, hi_c]
            row["n_units"] = int((n.sum(axis=0) > 0).sum())
        else:
            rep_c = None
        if design == "crossed" and rep_c is not None:
            row["ci_low"], row["ci_high"] = row["ci_crossed"]
            reps[cond] = rep_c
        else:
            reps[cond] = rep_p
        row["ci_method"] = (
            "crossed" if design == "crossed" and rep_c is not None else "participants"
        )
        out[cond] = row
    return out, reps


PAPER_ORDER = ("none", "natural", "synthetic", "mixed", "blur")


def condition_order(names) -> list[str]:
    """The paper's conditions in its order, then any others alphabetically."""
    present = {str(n) for n in names}
    return [c for c in PAPER_ORDER if c in present] + sorted(present - set(PAPER_ORDER))


def _conditions(df: pd.DataFrame) -> list[str]:
    return condition_order(df["condition"].unique())


def grouped_accuracy(
    df: pd.DataFrame, by: str, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> list[dict[str, Any]]:
    """Accuracy per (condition, ``by`` value) with a participant-bootstrap CI."""
    if by not in df.columns or df[by].notna().sum() == 0:
        return []
    rng = np.random.default_rng(seed)
    rows = []
    d_all = df[df[by].notna()]
    for (cond, value), d in d_all.groupby(["condition", by], sort=True):
        g = d.groupby("participant_id")["correct"].agg(["sum", "count"])
        k, n = g["sum"].to_numpy(float), g["count"].to_numpy(float)
        reps = stats.ratio_replicates(k, n, n_boot, rng)
        lo, hi = stats.percentile_interval(reps, len(k), level)
        rows.append({
            "condition": str(cond), by: _plain(value), "accuracy": float(k.sum() / n.sum()),
            "ci_low": lo, "ci_high": hi, "n_participants": len(k), "n_trials": int(n.sum()),
            "n_correct": int(k.sum()),
        })
    return rows


def _plain(v: Any) -> Any:
    """JSON-friendly group label; integral numbers (confidence 2.0) become ints."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        return int(v) if float(v).is_integer() else float(v)
    return v


def confidence_table(df: pd.DataFrame, **kw: Any) -> list[dict[str, Any]]:
    """Accuracy by confidence level per condition, with each level's share of trials."""
    if "confidence" not in df.columns or df["confidence"].notna().sum() == 0:
        return []
    rows = grouped_accuracy(df, "confidence", **kw)
    totals = df[df["confidence"].notna()].groupby("condition").size()
    for r in rows:
        r["share"] = r["n_trials"] / float(totals[r["condition"]])
    return rows


def rt_table(df: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0,
             order: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Reaction times (ms) per condition: mean over participants of each one's median RT,
    with a participant-bootstrap CI, plus medians for correct and wrong answers."""
    if "rt" not in df.columns or df["rt"].notna().sum() == 0:
        return {}
    out = {}
    d_all = df[df["rt"].notna()]
    present = set(d_all["condition"].unique())
    for cond in [c for c in order if c in present] if order else _conditions(d_all):
        d = d_all[d_all["condition"] == cond]
        med = d.groupby("participant_id")["rt"].median().to_numpy(float)
        est, lo, hi = stats.bootstrap_ci(med, n_boot=n_boot, seed=seed)
        out[cond] = {
            "mean_participant_median_ms": est, "ci_low": lo, "ci_high": hi,
            "median_correct_ms": _median(d.loc[d["correct"], "rt"]),
            "median_wrong_ms": _median(d.loc[~d["correct"], "rt"]),
            "n_participants": len(med), "n_trials": len(d),
        }
    return out


def _median(s: pd.Series) -> float:
    return float(s.median()) if len(s) else float("nan")


def item_key(df: pd.DataFrame) -> pd.Series | None:
    """What makes two responses 'the same trial' across conditions: the base trial if
    known, else the trial id."""
    for col in ("base_trial_id", "trial_id"):
        if col in df.columns and df[col].notna().any():
            return df[col]
    return None


def difficulty(
    df: pd.DataFrame, *, n_bins: int = 5, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy vs relative activation difference: quantile bins (per condition, with
    participant-bootstrap CIs) and Spearman ρ between an item's rel_diff and its accuracy."""
    if "rel_diff" not in df.columns or df["rel_diff"].notna().sum() < 3:
        return {"available": False, "reason": "no rel_diff (join STUDY/trials.csv or map it)"}
    d = df[df["rel_diff"].notna()].copy()
    n_bins = max(1, min(n_bins, d["rel_diff"].nunique()))
    edges = np.unique(np.quantile(d["rel_diff"], np.linspace(0, 1, n_bins + 1)))
    if len(edges) < 2:
        edges = np.array([d["rel_diff"].min(), d["rel_diff"].max() + 1e-12])
    idx = np.clip(np.searchsorted(edges, d["rel_diff"], side="right") - 1, 0, len(edges) - 2)
    d["bin"] = idx
    bins = grouped_accuracy(d, "bin", n_boot=n_boot, seed=seed)
    for b in bins:
        i = b["bin"]
        b["rel_diff_low"], b["rel_diff_high"] = float(edges[i]), float(edges[i + 1])
        b["rel_diff_median"] = float(d.loc[d["bin"] == i, "rel_diff"].median())
    key = item_key(d)
    d["item"] = key if key is not None else d.index.astype(str)
    rho: dict[str, Any] = {}
    for cond, dc in [*d.groupby("condition"), ("all", d)]:
        items = dc.groupby("item").agg(acc=("correct", "mean"), rel=("rel_diff", "mean"))
        r, p = stats.spearman(items["rel"], items["acc"])
        rho[str(cond)] = {"rho": r, "p": p, "n_items": len(items)}
    return {"available": True, "edges": edges.tolist(), "bins": bins, "spearman": rho}


def interval_text(lo: Any, hi: Any, n: int | None, fmt: Any = None) -> str:
    """``lo – hi``, or why there is no interval (never a zero-width one as if it were one).

    ``fmt`` formats one bound (default: a fraction as a percentage with one decimal)."""
    fmt = fmt or (lambda v: "–" if v is None else f"{100 * v:.1f}")
    if n is not None and n < 2:
        return f"no interval: too few participants (n={n})"
    if lo is None or hi is None:
        return "no interval"
    if abs(hi - lo) < 1e-9:
        return f"no interval: no variation (every value {fmt(lo)})"
    return f"{fmt(lo)} – {fmt(hi)}"
