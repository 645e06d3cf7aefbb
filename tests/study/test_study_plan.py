"""Session plan balance and the catch / practice rules (pure functions)."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest

from causalvis.stimuli.catch import (
    catch_pool,
    select_catch,
    select_practice_pools,
    unrelated_partner,
)
from causalvis.stimuli.plan import plan_sessions, shuffled, unit_groups
from causalvis.store.seeds import opaque_id


def _base(units: list[str], image_sets: int) -> pd.DataFrame:
    rows = []
    for u_i, unit in enumerate(units):
        for b in range(image_sets):
            rows.append(
                {
                    "trial_id": f"b{u_i}-{b}",
                    "unit": unit,
                    "image_set": b,
                    "rel_diff": (u_i * 7 + b * 3) % 11 / 10,
                    "query_asset": f"assets/q{u_i}{b}.png",
                }
            )
    return pd.DataFrame(rows)


@pytest.mark.parametrize("n_units, max_units", [(4, 18), (18, 18), (20, 18), (37, 18), (5, 2)])
def test_unit_groups_cover_every_unit_once_within_limit(n_units, max_units):
    units = [f"l:{i}" for i in range(n_units)]
    groups = unit_groups(units, max_units)
    assert sorted(u for g in groups for u in g) == sorted(units)
    assert all(0 < len(g) <= max_units for g in groups)
    assert max(map(len, groups)) - min(map(len, groups)) <= max(1, len(groups))


def test_plan_is_balanced_and_counts_participants():
    units = [f"l:{i}" for i in range(20)]
    conditions = ["none", "natural", "synthetic", "mixed", "blur"]
    sessions = plan_sessions(
        conditions, [0, 1, 2], units, max_units_per_session=18, responses_per_cell=3, seed=0
    )
    cells = Counter()
    for s in sessions:
        for u in s.units:
            cells[(u, s.image_set, s.condition)] += s.planned_participants
    assert len(cells) == 20 * 3 * 5
    assert set(cells.values()) == {3}
    assert sum(s.planned_participants for s in sessions) == 5 * 3 * 2 * 3
    assert len({s.session_id for s in sessions}) == len(sessions)
    # ids say nothing about the condition
    assert not any(c in s.session_id for s in sessions for c in conditions)


def test_shuffle_is_seeded_and_ids_are_opaque():
    items = [str(i) for i in range(30)]
    assert shuffled(items, 1, "s") == shuffled(items, 1, "s")
    assert shuffled(items, 1, "s") != shuffled(items, 2, "s")
    tid = opaque_id("t", "base", "natural", "main")
    assert tid.startswith("t") and "natural" not in tid and len(tid) == 13


def test_practice_uses_only_practice_units_and_easiest_first():
    base = _base(["m:0", "m:1", "p:0", "p:1"], 3)
    sel = select_practice_pools(base, {"p:0", "p:1"}, n_practice=3, n_obvious=1, factor=1)
    practice = pd.concat([sel.obvious, sel.non_obvious])
    assert set(practice["unit"]) <= {"p:0", "p:1"}
    assert len(practice) == 3 and sel.example["unit"] in {"p:0", "p:1"}
    # one per unit before a unit repeats; within a round, easiest first
    assert practice["unit"].iloc[:2].nunique() == 2
    best = base[base["unit"].isin({"p:0", "p:1"})]["rel_diff"].max()
    assert practice["rel_diff"].iloc[0] == best


def test_catch_never_comes_from_the_session_itself():
    base = _base(["m:0", "m:1", "m:2", "p:0"], 3)
    used = {"b3-0"}
    pool = catch_pool(
        base,
        main_units={"m:0", "m:1", "m:2"},
        practice_units={"p:0"},
        used_practice=used,
        image_set=1,
    )
    # no trial of the session's own units, on any image set (issue 18 item 6; formerly
    # their trials of other image sets were candidates)
    assert not set(pool["unit"]) & {"m:0", "m:1", "m:2"}
    assert "b3-0" not in set(pool["trial_id"])
    chosen = select_catch(pool, 3)
    assert len(chosen) == 2  # the spare practice trials are all that is left
    assert chosen["rel_diff"].iloc[0] == pool["rel_diff"].max()
    # other sessions' main units count, the session's own never
    pool = catch_pool(base, main_units={"m:0"}, practice_units={"p:0"}, used_practice=used,
                      image_set=1, other_units={"m:0", "m:1"})
    assert set(pool["unit"]) == {"m:1", "p:0"}


def test_unrelated_partner_is_another_image():
    base = _base(["m:0", "m:1"], 2)
    trial = base.iloc[0]
    partner = unrelated_partner(base, trial)
    assert partner["query_asset"] != trial["query_asset"]
    assert partner["unit"] != trial["unit"]
