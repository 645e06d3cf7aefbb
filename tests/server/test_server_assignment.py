"""The assignment rule on its own: fill the neediest session, keep conditions and image
sets level, and never starve a session."""

from __future__ import annotations

from collections import Counter

from server_bundle_factory import make_study

from causalvis.server.assignment import choose_session
from causalvis.server.bundle import load_bundle


def test_fills_sessions_evenly_across_conditions_and_image_sets(tmp_path):
    bundle = load_bundle(make_study(tmp_path / "s", planned=3))
    taken: Counter[str] = Counter()
    for n in range(1, 13):
        sess = choose_session(bundle, taken)
        taken[sess.session_id] += 1
        per_session = [taken[s] for s in bundle.sessions]
        assert max(per_session) - min(per_session) <= 1, (n, taken)
        by_cond = Counter()
        by_set = Counter()
        for s in bundle.sessions.values():
            by_cond[s.condition] += taken[s.session_id]
            by_set[s.image_set] += taken[s.session_id]
        assert max(by_cond.values()) - min(by_cond.values()) <= 1
        assert max(by_set.values()) - min(by_set.values()) <= 1
    assert set(taken.values()) == {3}
    # over-recruitment goes round-robin instead of piling onto one session
    for _ in range(len(bundle.sessions)):
        taken[choose_session(bundle, taken).session_id] += 1
    assert set(taken.values()) == {4}


def test_prefers_the_session_with_most_need(tmp_path):
    bundle = load_bundle(make_study(tmp_path / "s", planned=2))
    ids = list(bundle.sessions)
    taken = Counter({ids[0]: 2, ids[1]: 2, ids[2]: 1})
    assert choose_session(bundle, taken).session_id == ids[3]
    taken[ids[3]] = 2
    assert choose_session(bundle, taken).session_id == ids[2]


def test_practice_draw_of_an_older_plan_is_every_practice_trial(tmp_path):
    from causalvis.server.assignment import draw_practice

    bundle = load_bundle(make_study(tmp_path / "s"))
    sess = next(iter(bundle.sessions.values()))
    assert bundle.practice_draw in (None, {"n_total": 2, "n_obvious": 0})
    for draw in (None, bundle.practice_draw):
        got = draw_practice(sess, draw, "0:local:P1")
        assert sorted(got) == sorted(sess.practice)
    orders = {draw_practice(sess, None, f"0:local:P{i}") for i in range(20)}
    assert len(orders) == 2  # the same trials, in a per-participant order
