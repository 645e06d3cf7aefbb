"""Per-condition exclusion thresholds (``[exclusion.conditions]``, issue 18 item 2): the
one rule set applies each participant's condition's thresholds (the paper's `none`: total
time 40-900 s, instruction >= 15 s), from the export's table and from the database rows
alike, and reports them per condition in the criteria JSON."""

from __future__ import annotations

from datetime import datetime, timedelta

import pandas as pd
import pytest

from causalvis.config import ExclusionConfig, StudyConfig
from causalvis.errors import ConfigError
from causalvis.responses.db import Participant
from causalvis.responses.exclusion import apply_exclusions, database_metrics, evaluate

# (participant, condition, total time s, instruction time s)
PEOPLE = [("n30", "none", 30.0, 30.0), ("n60", "none", 60.0, 30.0),
          ("a60", "natural", 60.0, 30.0), ("a120", "natural", 120.0, 30.0),
          ("n_instr", "none", 120.0, 17.0), ("a_instr", "natural", 120.0, 17.0)]  # fmt: skip


def _table() -> pd.DataFrame:
    rows = []
    for pid, cond, total, instr in PEOPLE:
        for kind in ("main", "catch"):
            rows.append({"participant_id": pid, "condition": cond, "kind": kind,
                         "is_main": kind == "main", "is_catch": kind == "catch",
                         "correct": True, "total_time_s": total, "instruction_time_s": instr,
                         "status": "finished", "session_id": f"s-{cond}"})  # fmt: skip
    return pd.DataFrame(rows)


def test_paper_defaults_give_none_its_own_thresholds():
    cfg = ExclusionConfig()
    none = cfg.for_condition("none")
    assert (none.min_total_time_s, none.max_total_time_s, none.min_instruction_time_s) == (
        40.0, 900.0, 15.0)
    assert cfg.for_condition("natural") == cfg.for_condition(None)
    assert cfg.for_condition("natural").min_total_time_s == 90.0


def test_each_participant_gets_its_conditions_thresholds():
    result = apply_exclusions(_table(), ExclusionConfig())
    total = result.criteria["total_time"]
    # none: 30 s < 40 s excluded, 60 s passes; natural: 60 s < 90 s excluded
    assert total["participants"] == ["a60", "n30"]
    assert result.criteria["instruction_time"]["participants"] == ["a_instr"]  # 17 >= 15
    assert set(result.included) == {"a120", "n60", "n_instr"}
    assert "none: total time outside [40, 900] s" in total["rule"]
    assert total["rule"].startswith("total time outside [90, 900] s")
    assert total["rule_by_condition"] == {"default": "total time outside [90, 900] s",
                                          "none": "total time outside [40, 900] s"}
    js = result.to_json()
    assert js["thresholds"]["none"]["min_total_time_s"] == 40.0
    assert js["thresholds"]["default"]["min_total_time_s"] == 90.0
    assert "rule_by_condition" in js["criteria"]["instruction_time"]


def test_without_overrides_one_threshold_for_everyone():
    result = apply_exclusions(_table(), ExclusionConfig(conditions={}))
    assert result.criteria["total_time"]["participants"] == ["a60", "n30", "n60"]
    assert "rule_by_condition" not in result.criteria["total_time"]
    assert set(result.to_json()["thresholds"]) == {"default"}


def test_database_metrics_carry_the_condition():
    t0 = datetime(2026, 1, 1)
    people = [Participant(id=i + 1, session_id=f"s-{cond}", condition=cond, status="finished",
                          created_at=t0, consented_at=t0, instruction_time_s=instr,
                          finished_at=t0 + timedelta(seconds=total))
              for i, (_, cond, total, instr) in enumerate(PEOPLE)]  # fmt: skip
    m = database_metrics(people, {})
    assert list(m["condition"]) == [c for _, c, _, _ in PEOPLE]
    result = evaluate(m, ExclusionConfig())
    assert result.criteria["total_time"]["participants"] == ["p00001", "p00003"]


def test_overrides_are_validated():
    with pytest.raises(ConfigError, match="not a threshold"):
        StudyConfig.from_dict({"exclusion": {"conditions": {"none": {"bogus": 1}}}})
    with pytest.raises(ConfigError, match="min_catch_accuracy"):
        StudyConfig.from_dict({"exclusion": {"conditions": {"none": {"min_catch_accuracy": 2}}}})
    with pytest.raises(ConfigError, match="unknown condition nnone"):
        StudyConfig.from_dict({"exclusion": {"conditions": {"nnone": {"min_rt_ms": 1}}}})


def test_a_command_line_threshold_applies_to_every_condition():
    from causalvis.config import preset
    from causalvis.responses.exclusion import resolve_exclusion

    cfg = preset("paper2021")
    ex = resolve_exclusion(cfg, {"min_total_time_s": 0.0})
    assert ex.for_condition("none").min_total_time_s == 0.0  # the override wins everywhere
    assert ex.for_condition("none").min_instruction_time_s == 15.0  # untouched fields stay
    assert resolve_exclusion(cfg, {}).for_condition("none").min_total_time_s == 40.0
