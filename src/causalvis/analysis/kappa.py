"""Error consistency (Cohen's κ on correctness) between observers who saw the same trials.

Observers are participants and, when given, machine observers (one row per trial they
decided). Trials are matched on ``base_trial_id`` when known (the same query and options
shown in different conditions), else on ``trial_id``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from causalvis.analysis import stats
from causalvis.analysis.tables import condition_order, item_key

MAX_FULL_MATRIX = 60


def machine_observer_rows(observer_trials: pd.DataFrame, trials: pd.DataFrame | None
                          ) -> pd.DataFrame:
    """``report/observer_trials.csv`` (trial_id, observer, hit, …) as observer rows
    (observer, group, item, correct). An observer whose decision does not depend on the
    condition is one observer; otherwise one per (observer, condition)."""
    d = observer_trials.copy()
    d["trial_id"] = d["trial_id"].astype(str)
    d["correct"] = pd.to_numeric(d["hit"], errors="coerce") > 0.5
    base = None
    if trials is not None and "base_trial_id" in trials.columns:
        base = trials.assign(trial_id=trials["trial_id"].astype(str)).set_index("trial_id")[
            "base_trial_id"].astype(str)
        base = base[~base.index.duplicated() & (base != "")]  # empty: the trial is its own item
    d["item"] = d["trial_id"].map(base).fillna(d["trial_id"]) if base is not None \
        else d["trial_id"]
    rows = []
    for name, g in d.groupby("observer", sort=True):
        constant = g.groupby("item")["correct"].nunique().max() <= 1
        if constant:
            one = g.drop_duplicates("item")
            rows.append(pd.DataFrame({"observer": f"machine:{name}", "group": f"machine:{name}",
                                      "item": one["item"], "correct": one["correct"]}))
        else:
            for cond, gc in g.groupby("condition", sort=True):
                one = gc.drop_duplicates("item")
                label = f"machine:{name}@{cond}"
                rows.append(pd.DataFrame({"observer": label, "group": label,
                                          "item": one["item"], "correct": one["correct"]}))
    if not rows:
        return pd.DataFrame(columns=["observer", "group", "item", "correct"])
    return pd.concat(rows, ignore_index=True)


def kappa_analysis(
    df: pd.DataFrame, machine: pd.DataFrame | None = None, *, min_common: int = 5
) -> dict[str, Any]:
    """κ matrix between observers and its summary per group (condition / machine)."""
    key = item_key(df)
    if key is None:
        return {"available": False, "reason": "no trial_id / base_trial_id to match trials"}
    human = pd.DataFrame({"observer": df["participant_id"].astype(str),
                          "group": df["condition"].astype(str), "item": key.astype(str),
                          "correct": df["correct"].astype(bool)})
    obs = pd.concat([human, machine], ignore_index=True) if machine is not None and len(machine) \
        else human
    obs = obs.drop_duplicates(["observer", "item"], keep="first")
    wide = obs.pivot(index="observer", columns="item", values="correct")
    groups = obs.drop_duplicates("observer").set_index("observer")["group"].reindex(wide.index)
    rank = {g: i for i, g in enumerate(condition_order(groups.to_numpy(str)))}
    order = np.lexsort((wide.index.to_numpy(str), groups.map(rank).to_numpy(int)))
    wide, groups = wide.iloc[order], groups.iloc[order]
    mat = wide.to_numpy(dtype=float, na_value=np.nan)
    kappa, n_common = stats.kappa_matrix(mat, min_common=min_common)
    names = list(map(str, wide.index))
    gnames = list(dict.fromkeys(groups.to_numpy(str)))
    g_idx = {g: np.flatnonzero(groups.to_numpy(str) == g) for g in gnames}
    gmat = np.full((len(gnames), len(gnames)), np.nan)
    gpairs = np.zeros((len(gnames), len(gnames)), dtype=int)
    for i, gi in enumerate(gnames):
        for j, gj in enumerate(gnames):
            block = kappa[np.ix_(g_idx[gi], g_idx[gj])]
            if i == j:
                block = block[~np.eye(len(g_idx[gi]), dtype=bool)]
            vals = block[np.isfinite(block)]
            gpairs[i, j] = vals.size if i != j else vals.size // 2
            if vals.size:
                gmat[i, j] = float(vals.mean())
    out: dict[str, Any] = {
        "available": bool(np.isfinite(kappa).any()),
        "matched_on": str(key.name),
        "min_common_trials": min_common,
        "groups": gnames,
        "group_mean_kappa": gmat.tolist(),
        "group_n_pairs": gpairs.tolist(),
        "n_observers": len(names),
    }
    if not out["available"]:
        out["reason"] = f"no two observers share {min_common}+ trials"
    if len(names) <= MAX_FULL_MATRIX:
        out["observers"] = names
        out["observer_groups"] = list(groups.to_numpy(str))
        out["kappa"] = kappa.tolist()
        out["n_common"] = n_common.astype(int).tolist()
    return out
