"""The demo's simulated pilot switches the time windows off in every condition, so that
no condition (the paper's `none` with its own thresholds) is silently excluded whole."""

from __future__ import annotations

import pytest

from causalvis.cli.demo import pilot_exclusion
from causalvis.config import preset


@pytest.mark.parametrize("name", ["quick", "paper2021", "imi2023"])
def test_pilot_time_windows_are_off_in_every_condition(name):
    cfg = preset(name)
    ex = pilot_exclusion(cfg)
    for cond in [*cfg.conditions.names, None]:
        rules = ex.for_condition(cond)
        assert rules.min_total_time_s == 0.0 and rules.min_instruction_time_s == 0.0, cond
    # everything else stays the study's (e.g. none's upper time bound, catch accuracy)
    assert ex.min_catch_accuracy == cfg.exclusion.min_catch_accuracy
    if "none" in cfg.exclusion.conditions:
        assert ex.for_condition("none").max_total_time_s == \
            cfg.exclusion.for_condition("none").max_total_time_s
