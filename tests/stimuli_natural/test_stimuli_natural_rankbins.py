"""Rank-bin arithmetic (paper2021) against hand-computed examples (IMI: test_..._imi.py)."""

from __future__ import annotations

import numpy as np
import pytest

from causalvis.config import ExemplarsConfig
from causalvis.stimuli.exemplars import (
    ExemplarError,
    check_ties,
    exemplar_record,
    imi_plan,
    plan_for_unit,
    rank_bin_plan,
    rank_order,
    reference_bins,
)
from causalvis.store.units import Unit, UnitEntry


def test_small_rank_bins_by_hand():
    # 20 top images in 4 bins of 5: bin 1 = ranks 1-5, bin 2 = 6-10, bin 3 = 11-15, bin 4 = 16-20.
    plan = rank_bin_plan(30, n_top=20, n_bins=4, n_image_sets=5, n_references=3, seed=7)
    assert [p.query for p in plan] == [5, 4, 3, 2, 1]  # rank 5 - b
    bins = [range(6, 11), range(11, 16), range(16, 21)]
    for p in plan:
        assert len(p.references) == 3
        for ref, members in zip(p.references, bins, strict=True):
            assert ref in members  # one reference per lower bin, in bin order
        assert p.query not in p.references
    # 5 image sets = bin size: every lower bin is used exactly once (a permutation).
    for k, members in enumerate(bins):
        assert sorted(p.references[k] for p in plan) == list(members)


def test_paper_rank_bins():
    plan = rank_bin_plan(600, n_top=200, n_bins=10, n_image_sets=10, n_references=9, seed=0)
    assert [p.query for p in plan] == list(range(20, 10, -1))  # ranks 20, 19, ..., 11
    for k in range(9):
        column = [p.references[k] for p in plan]
        assert len(set(column)) == 10  # different image sets get different references
        assert all(21 + 20 * k <= r <= 40 + 20 * k for r in column)
    all_refs = {r for p in plan for r in p.references}
    assert not all_refs & {p.query for p in plan}
    again = rank_bin_plan(600, n_top=200, n_bins=10, n_image_sets=10, n_references=9, seed=0)
    other = rank_bin_plan(600, n_top=200, n_bins=10, n_image_sets=10, n_references=9, seed=1)
    assert again == plan
    assert other != plan
    assert [p.query for p in other] == [p.query for p in plan]


def test_fewer_references_spread_over_bins():
    assert reference_bins(10, 9) == list(range(1, 10))
    assert reference_bins(10, 3) == [1, 5, 9]
    assert reference_bins(10, 1) == [1]
    with pytest.raises(ExemplarError, match="n_references"):
        reference_bins(4, 4)


def test_too_small_dataset_is_a_clear_error():
    with pytest.raises(ExemplarError, match="150 images.*n_top = 200"):
        rank_bin_plan(150, n_top=200, n_bins=10, n_image_sets=10, n_references=9, seed=0)
    with pytest.raises(ExemplarError, match="n_image_sets"):
        rank_bin_plan(300, n_top=200, n_bins=10, n_image_sets=21, n_references=9, seed=0)


def test_ties_across_the_query_boundary_are_errors():
    plan = rank_bin_plan(12, n_top=8, n_bins=4, n_image_sets=2, n_references=3, seed=0)
    # bin size 2: queries are ranks 2 and 1, the next bin starts at rank 3.
    ok = np.array([9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0], dtype=float)
    check_ties(plan, ok, "u:1", "rank_bins", 8, 4)
    tied = np.array([9, 7, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0], dtype=float)
    with pytest.raises(ExemplarError, match="rank 2.*ties with rank 3"):
        check_ties(plan, tied, "u:1", "rank_bins", 8, 4)
    flat = np.array([5] * 8 + [1] * 4, dtype=float)
    with pytest.raises(ExemplarError, match="top 8 images all have"):
        check_ties(plan, flat, "u:1", "rank_bins", 8, 4)


def test_rank_order_keeps_scan_order_on_ties():
    assert rank_order(np.array([1.0, 3.0, 3.0, 2.0])).tolist() == [1, 2, 3, 0]


def test_record_maps_ranks_to_images():
    acts = np.array([0.5, 2.0, -1.0, 1.5, 0.0, 3.0, -2.0, 1.0], dtype=np.float32)
    ids = [f"img{i}" for i in range(8)]
    # descending: img5 3.0, img1 2.0, img3 1.5, img7 1.0, img0 0.5, img4 0.0, img2 -1, img6 -2
    cfg = ExemplarsConfig(n_top=4, n_bins=2, n_image_sets=2, n_references=1)
    plan = plan_for_unit(acts, cfg, [0, 1], "l:0")
    rec = exemplar_record(UnitEntry(Unit("l", 0)), acts, ids, plan, cfg).to_dict()
    assert [t["image_id"] for t in rec["top"]] == ["img5", "img1", "img3", "img7"]
    assert [t["rank"] for t in rec["top"]] == [1, 2, 3, 4]
    assert [b["image_id"] for b in rec["bottom"][:2]] == ["img6", "img2"]
    s0, s1 = rec["image_sets"]
    assert s0["query"] == {"rank": 2, "image_id": "img1", "activation": 2.0}
    assert s1["query"]["image_id"] == "img5"
    assert {s0["references"][0]["image_id"], s1["references"][0]["image_id"]} == {"img3", "img7"}


def test_imi_tie_check():
    plan = imi_plan(6, n_references=2, n_min_references=2, n_image_sets=1, seed=0)
    with pytest.raises(ExemplarError, match="tie"):
        check_ties(plan, np.array([3.0, 2.0, 1.0, 1.0, 0.0, -1.0]), "u:0", "imi")
    check_ties(plan, np.array([3.0, 2.0, 1.5, 1.0, 0.0, -1.0]), "u:0", "imi")

