"""Places, duration and reward from the session plan; Prolific's minimum rate."""

from __future__ import annotations

import pytest

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.recruit.plan import chunks, estimated_minutes, recruit_plan, top_up_places
from causalvis.store.layout import StudyPaths
from causalvis.store.sessions import read_sessions


def test_plan_from_sessions_and_seconds_per_trial(study):
    cfg = StudyConfig.load(StudyPaths(study).config)
    plan = read_sessions(StudyPaths(study).sessions)
    # 3 trials + 2 practice at 12 s = 1 min, + 3 min overhead
    assert estimated_minutes(cfg, plan) == 4
    cfg.experiment.seconds_per_trial = 60.0
    assert estimated_minutes(cfg, plan) == 8
    rp = recruit_plan(cfg, plan, hourly=900, top_up=2)
    assert (rp.places, rp.minutes, rp.reward) == (plan.n_participants_needed + 2, 8, 120)
    assert rp.hourly == pytest.approx(900)


def test_below_prolific_minimum_is_refused(study):
    cfg = StudyConfig.load(StudyPaths(study).config)
    plan = read_sessions(StudyPaths(study).sessions)
    with pytest.raises(CausalvisError, match="below Prolific's minimum of 6.00 GBP/h"):
        recruit_plan(cfg, plan, hourly=500)
    with pytest.raises(CausalvisError, match="minimum of 8.00 USD/h"):
        recruit_plan(cfg, plan, hourly=700, currency="USD")
    assert recruit_plan(cfg, plan, hourly=700, currency="USD", check=False).reward == 47


def test_chunks_and_top_up():
    assert chunks(20, 9) == [9, 9, 2] and chunks(0, 9) == []
    assert top_up_places(["finished", "abandoned", "active", "abandoned"]) == 2
