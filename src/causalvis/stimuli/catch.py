"""Automatic catch and practice trial selection (pure; operates on base-trial tables).

Rules (configurable in ``[sessions]``, documented in docs/study-builder.md):

* **practice**: the ``n_practice`` easiest trials (largest relative activation difference)
  of the *practice units* — units sampled for practice only, never used in main trials —
  one per unit first, then the next easiest.
* **catch, reference conditions** (``catch_rule``):
  ``largest_rel_diff`` — the easiest trials that are not part of the session itself: main
  trials of *other* image sets and unused practice-unit trials, ranked by rel_diff, one
  per unit first; ``query_in_references`` — the same trials, and the query image is also
  shown among the references (the IMI catch rule), which makes them easier still.
* **catch, ``none``**: the correct option is the query with its least harmful occlusion,
  the wrong option an occluded *unrelated* image (another unit's query); the participant
  only has to notice which option is the query.
"""

from __future__ import annotations

import pandas as pd


def _easiest_spread(pool: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` rows by descending rel_diff, cycling through units before repeating one."""
    if n <= 0 or pool.empty:
        return pool.iloc[0:0]
    ranked = pool.sort_values(["rel_diff", "trial_id"], ascending=[False, True])
    ranked = ranked.assign(_round=ranked.groupby("unit").cumcount())
    ranked = ranked.sort_values(["_round", "rel_diff", "trial_id"], ascending=[True, False, True])
    return ranked.head(n).drop(columns="_round")


def select_practice(base: pd.DataFrame, practice_units: set[str], n: int) -> pd.DataFrame:
    pool = base[base["unit"].isin(practice_units)]
    return _easiest_spread(pool, n)


def catch_pool(
    base: pd.DataFrame,
    *,
    main_units: set[str],
    practice_units: set[str],
    used_practice: set[str],
    image_set: int,
) -> pd.DataFrame:
    """Candidate catch trials for a session on ``image_set``."""
    other_sets = base[base["unit"].isin(main_units) & (base["image_set"] != image_set)]
    spare_practice = base[base["unit"].isin(practice_units) & ~base["trial_id"].isin(used_practice)]
    pool = pd.concat([other_sets, spare_practice])
    if pool.empty:  # a single image set and no spare practice trials: reuse the session's own
        pool = base[base["unit"].isin(main_units) & (base["image_set"] == image_set)]
    return pool


def select_catch(pool: pd.DataFrame, n: int) -> pd.DataFrame:
    return _easiest_spread(pool, n)


def unrelated_partner(base: pd.DataFrame, trial: pd.Series) -> pd.Series | None:
    """A trial of another unit whose query is a different image (for `none` catch)."""
    others = base[(base["unit"] != trial["unit"]) & (base["query_asset"] != trial["query_asset"])]
    if others.empty:
        others = base[base["query_asset"] != trial["query_asset"]]
    if others.empty:
        return None
    return others.sort_values("trial_id").iloc[
        int(trial["trial_id"].encode().hex(), 16) % len(others)
    ]
