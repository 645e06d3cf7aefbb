"""Automatic catch and practice trial selection (pure; operates on base-trial tables).

Rules (configurable in ``[sessions]``, documented in docs/study-builder.md):

* **practice**: two pools from the trials of the *practice units* — units sampled for
  practice only, never used in main trials: the *obvious* pool, the easiest trials
  (largest relative activation difference, one per unit first), up to
  ``n_practice_obvious x practice_pool_factor``, and the *non-obvious* pool, the next ones,
  up to ``(n_practice - n_practice_obvious) x practice_pool_factor``; each participant is
  given a draw from both (the server draws).
* **worked example**: the easiest practice-unit trial in neither pool whose query and
  option images are in no other base trial and among no trial's references; else such a main-unit trial of an image set
  no session uses; else the least easy trial the pools would take (they shrink by one,
  one practice trial always stays); else none. Catch and `none`-partner selection never
  see it (:func:`without_example`).
* **catch, reference conditions** (``catch_rule``):
  ``largest_rel_diff`` — the easiest trials of the *catch units* (``units.n_catch_units``,
  sampled apart from the main and practice units, as the paper's hand-picked catch units
  were), ranked by rel_diff, one per unit first; a study without catch units takes the
  trials of units outside the session (other sessions' main units, unused practice-unit
  trials) — never one of the session's own units; ``query_in_references`` — the same trials, and the query image is also
  shown among the references (the IMI catch rule), which makes them easier still.
* **catch, ``none``**: the correct option is the query with its least harmful occlusion,
  the wrong option an occluded *unrelated* image (another unit's query); the participant
  only has to notice which option is the query.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

_ASSET_COLUMNS = ("query_asset", "option_a_asset", "option_b_asset")


def _easiest_spread(pool: pd.DataFrame, n: int) -> pd.DataFrame:
    """``n`` rows by descending rel_diff, cycling through units before repeating one."""
    if n <= 0 or pool.empty:
        return pool.iloc[0:0]
    ranked = pool.sort_values(["rel_diff", "trial_id"], ascending=[False, True])
    ranked = ranked.assign(_round=ranked.groupby("unit").cumcount())
    ranked = ranked.sort_values(["_round", "rel_diff", "trial_id"], ascending=[True, False, True])
    return ranked.head(n).drop(columns="_round")


@dataclass(frozen=True)
class PracticeSelection:
    """The practice pools and the worked example drawn from the practice-unit trials."""

    obvious: pd.DataFrame
    non_obvious: pd.DataFrame
    example: pd.Series | None
    wanted: tuple[int, int]  # the pool sizes asked for (obvious, non-obvious)

    @property
    def short(self) -> bool:
        """True if a pool holds fewer trials than asked for."""
        return len(self.obvious) < self.wanted[0] or len(self.non_obvious) < self.wanted[1]


def trial_assets(rows: pd.DataFrame) -> set[str]:
    """Every query and option image the rows show."""
    return {a for col in _ASSET_COLUMNS if col in rows for a in rows[col] if a}


def _own_assets(base: pd.DataFrame, trial: pd.Series, avoid: set[str]) -> bool:
    """True if no other base trial, nor ``avoid``, shows one of ``trial``'s images."""
    others = trial_assets(base[base["trial_id"] != trial["trial_id"]]) | avoid
    return not ({trial[c] for c in _ASSET_COLUMNS if c in trial.index} - {""}) & others


def select_practice_pools(
    base: pd.DataFrame,
    practice_units: set[str],
    *,
    n_practice: int,
    n_obvious: int,
    factor: int,
    spare_main: pd.DataFrame | None = None,
    avoid: set[str] = frozenset(),
) -> PracticeSelection:
    """The obvious and non-obvious practice pools and the worked example (see the module
    docstring); ``spare_main`` holds main-unit trials of image sets no session uses (the
    example's fallback), ``avoid`` the reference images any trial may show (a natural
    image can be one unit's query and another unit's reference)."""
    wanted = (n_obvious * factor, (n_practice - n_obvious) * factor)
    ranked = _easiest_spread(base[base["unit"].isin(practice_units)], len(base))
    n_pools = sum(wanted)
    candidates = [r for _, r in ranked.iloc[n_pools:].iterrows()]  # in neither pool
    if spare_main is not None:
        candidates += [r for _, r in spare_main.sort_values("trial_id").iterrows()]
    if n_practice:  # last resort: the least easy trial the pools would take, one kept
        candidates += [r for _, r in ranked.iloc[1:n_pools].iloc[::-1].iterrows()]
    example = next((t for t in candidates if _own_assets(base, t, avoid)), None)
    rest = ranked if example is None else ranked[ranked["trial_id"] != example["trial_id"]]
    obvious = _easiest_spread(rest, wanted[0])
    non_obvious = _easiest_spread(rest[~rest["trial_id"].isin(obvious["trial_id"])], wanted[1])
    return PracticeSelection(obvious, non_obvious, example, wanted)


def without_example(base: pd.DataFrame, example: pd.Series | None) -> pd.DataFrame:
    """``base`` without the worked example and every trial showing one of its images, so
    no catch trial or `none` partner shows them."""
    if example is None:
        return base
    mine = {example[c] for c in _ASSET_COLUMNS if c in example.index} - {""}
    hit = base["trial_id"] == example["trial_id"]
    for col in _ASSET_COLUMNS:
        if col in base:
            hit |= base[col].isin(mine)
    return base[~hit]


def catch_pool(
    base: pd.DataFrame,
    *,
    main_units: set[str],
    practice_units: set[str],
    used_practice: set[str],
    image_set: int,
    catch_units: set[str] = frozenset(),
    other_units: set[str] = frozenset(),
) -> pd.DataFrame:
    """Candidate catch trials for a session on ``image_set`` whose main units are
    ``main_units``: the trials of the catch units; without them, the trials of the other
    sessions' main units (``other_units``) and the unused practice-unit trials. Never a
    trial of one of the session's own units (empty if nothing else is left)."""
    del image_set  # catch units are shown on any image set (the paper: fixed ones)
    if catch_units:
        return base[base["unit"].isin(set(catch_units) - set(main_units))]
    others = base[base["unit"].isin(set(other_units) - set(main_units))]
    spare_practice = base[base["unit"].isin(practice_units) & ~base["trial_id"].isin(used_practice)]
    return pd.concat([others, spare_practice])


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
