"""The imi scheme against IMI's ``extract_exemplars`` on a synthetic ranking (issue 18, 1).

Activation = −rank over a shuffled scan order, so every image's rank is known: each
reference, bin and query index is checked, on the max side (rank from the top) and on the
min side (rank from the bottom).
"""

from __future__ import annotations

import numpy as np
import pytest

from causalvis.config import ExemplarsConfig, StudyConfig, preset
from causalvis.errors import ConfigError
from causalvis.stimuli.exemplars import (
    ExemplarError,
    exemplar_record,
    imi_plan,
    plan_for_unit,
)
from causalvis.store.exemplars import ExemplarRecord
from causalvis.store.units import Unit, UnitEntry


def _ranking(n: int, seed: int = 5) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Activations = −rank (rank 1 = most activating) in a shuffled scan order."""
    rank = np.random.default_rng(seed).permutation(n) + 1  # rank of scan image i
    return -rank.astype(np.float64), [f"img{i}" for i in range(n)], rank


def _imi_record(n: int, difficulty: str = "easy", sets: int = 20, k: int = 9, seed=(0, 1)):
    acts, ids, rank = _ranking(n)
    cfg = ExemplarsConfig(scheme="imi", n_references=k, n_min_references=k,
                          n_image_sets=sets, difficulty=difficulty)
    plan = plan_for_unit(acts, cfg, list(seed), "l:0")
    rec = exemplar_record(UnitEntry(Unit("l", 0)), acts, ids, plan, cfg)
    return rec, {f"img{i}": int(r) for i, r in enumerate(rank)}


def _top_ranks(images, rank_of) -> list[int]:
    """Ranks from the top recomputed from the image ids (not the record's own ranks)."""
    return [rank_of[r.image_id] for r in images]


def test_imi2023_references_differ_per_set_one_per_bin_and_queries_just_below():
    n, sets, k = 2000, 20, 9
    rec, rank_of = _imi_record(n, sets=sets, k=k)
    assert len(rec.image_sets) == sets
    max_refs = [_top_ranks(s.references, rank_of) for s in rec.image_sets]
    min_refs = [[n + 1 - r for r in _top_ranks(s.min_references, rank_of)]
                for s in rec.image_sets]
    for refs in (max_refs, min_refs):
        # one reference from each of the 9 bins of 20 ranks, best bin first
        for per_set in refs:
            assert [(r - 1) // sets for r in per_set] == list(range(k))
        # every rank of the top 180 used exactly once: different references per set
        assert sorted(r for per_set in refs for r in per_set) == list(range(1, sets * k + 1))
        assert len({tuple(p) for p in refs}) == sets
    # the ids carry the ranks the record states (max side from the top, min from the bottom)
    for s in rec.image_sets:
        assert [r.rank for r in s.references] == _top_ranks(s.references, rank_of)
        assert [r.rank for r in s.min_references] == [
            n + 1 - r for r in _top_ranks(s.min_references, rank_of)]
        assert all(r.activation == -rank_of[r.image_id] for r in (*s.references, s.query))
    # queries: the window of 20 just below the references, one per set, on both sides
    max_q = _top_ranks([s.query for s in rec.image_sets], rank_of)
    min_q = [n + 1 - r for r in _top_ranks([s.min_query for s in rec.image_sets], rank_of)]
    assert sorted(max_q) == list(range(181, 201))
    assert sorted(min_q) == list(range(181, 201))
    assert [s.query.rank for s in rec.image_sets] == max_q
    # the record's ranked lists hold the reference pool and the window (IMI's 200)
    assert [r.rank for r in rec.top] == list(range(1, 201))
    assert [r.rank for r in rec.bottom] == list(range(1, 201))


def test_hard95_queries_at_the_5th_and_95th_percentile():
    # IMI's hard95 (collect_exemplars.sh): start_min = floor(0.05 N), stop_max =
    # ceil(0.95 N) in the ascending order, 20 batches: ranks floor(0.05 N) + 1 … + 20.
    n = 4000
    rec, rank_of = _imi_record(n, "hard95")
    asc_start_min, asc_stop_max = int(np.floor(0.05 * n)), int(np.ceil(0.95 * n))
    imi_max = sorted(n - i for i in range(asc_stop_max - 20, asc_stop_max))
    imi_min = list(range(asc_start_min + 1, asc_start_min + 21))  # from the bottom
    max_q = sorted(_top_ranks([s.query for s in rec.image_sets], rank_of))
    min_q = sorted(n + 1 - r for r in _top_ranks([s.min_query for s in rec.image_sets],
                                                  rank_of))
    assert max_q == imi_max == list(range(201, 221))
    assert min_q == imi_min == list(range(201, 221))
    # references unchanged: the top / bottom 180, one per bin
    for s in rec.image_sets:
        assert [(r - 1) // 20 for r in _top_ranks(s.references, rank_of)] == list(range(9))
    assert rec.to_dict()["difficulty"] == "hard95"
    assert ExemplarRecord.from_dict(rec.to_dict(), "x").difficulty == "hard95"


@pytest.mark.parametrize(("difficulty", "frac"), [("hard99", 0.01), ("hard85", 0.15)])
def test_other_hard_windows(difficulty, frac):
    n = 20000
    plan = imi_plan(n, n_references=9, n_min_references=9, n_image_sets=20,
                    difficulty=difficulty, seed=3)
    start = int(np.floor(frac * n))
    assert sorted(p.query for p in plan) == list(range(start + 1, start + 21))
    assert sorted(p.min_query for p in plan) == list(range(start + 1, start + 21))


def test_one_difficulty_per_study_never_mixed():
    for difficulty in ("easy", "hard95"):
        plan = imi_plan(4000, n_references=9, n_min_references=9, n_image_sets=20,
                        difficulty=difficulty, seed=0)
        span = max(p.query for p in plan) - min(p.query for p in plan)
        assert span == 19  # one window of 20 ranks, not a mix of windows


def test_seeded_shuffle_within_bins():
    kw = {"n_references": 9, "n_min_references": 9, "n_image_sets": 20}
    a = imi_plan(2000, **kw, seed=[0, 1])
    assert a == imi_plan(2000, **kw, seed=[0, 1])
    b = imi_plan(2000, **kw, seed=[0, 2])
    assert [p.references for p in a] != [p.references for p in b]
    # shuffled: set 0 does not simply get the best rank of every bin
    assert [p.references for p in a] != [tuple(range(b_ + 1, 181, 20)) for b_ in range(20)]


def test_too_few_images_is_one_clear_error():
    with pytest.raises(ExemplarError, match=r"too few for exemplars.difficulty = 'hard99'"):
        imi_plan(2000, n_references=9, n_min_references=9, n_image_sets=20,
                 difficulty="hard99", seed=0)  # window at rank 21, inside the top 180
    with pytest.raises(ExemplarError, match="too few for the imi scheme"):
        imi_plan(300, n_references=9, n_min_references=9, n_image_sets=20, seed=0)
    with pytest.raises(ExemplarError, match="not one of"):
        imi_plan(2000, n_references=9, n_min_references=9, n_image_sets=20,
                 difficulty="medium", seed=0)


def test_config_difficulty_and_the_removed_query_windows():
    assert preset("imi2023").exemplars.difficulty == "easy"
    assert preset("imi2023").exemplars.n_image_sets == 20
    assert preset("paper2021", task="two_afc").exemplars.difficulty == "easy"
    # the old default window list is the easy difficulty; a mixed list is refused
    old = StudyConfig.from_dict({"exemplars": {"scheme": "imi", "query_windows": [[0, 0]]}})
    assert old.exemplars.difficulty == "easy"
    with pytest.raises(ConfigError, match='exemplars.difficulty = "easy"'):
        StudyConfig.from_dict({"exemplars": {
            "scheme": "imi", "query_windows": [[0.0, 0.0], [0.0, 0.02], [0.02, 0.05]]}})
    with pytest.raises(ConfigError, match="exemplars.difficulty"):
        StudyConfig.from_dict({"exemplars": {"difficulty": "hard50"}})


def test_difficulty_names_agree_across_config_store_and_scheme():
    from typing import get_args

    from causalvis.config import ExemplarsConfig
    from causalvis.stimuli.exemplars import DIFFICULTIES
    from causalvis.store.exemplars import DIFFICULTIES as STORED

    field = ExemplarsConfig.model_fields["difficulty"].annotation
    assert tuple(DIFFICULTIES) == STORED == get_args(field)
