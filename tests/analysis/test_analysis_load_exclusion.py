"""Canonical table from any CSV, trials.csv join, and every exclusion criterion."""

from __future__ import annotations

import pandas as pd
import pytest

from causalvis.analysis.load import canonicalize, join_trials, load_csv, parse_map
from causalvis.config import ExclusionConfig
from causalvis.errors import CausalvisError
from causalvis.responses.exclusion import apply_exclusions


def test_parse_map_and_errors():
    assert parse_map("participant_id=subj, correct=hit") == {"participant_id": "subj",
                                                             "correct": "hit"}
    assert parse_map(None) == {}
    for bad in ("participant_id", "nope=x", "correct=a,correct=b", "=x"):
        with pytest.raises(CausalvisError):
            parse_map(bad)


def test_load_csv_maps_columns_and_normalises_types(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({
        "subj": [1, 1, 1, 2, 2, 2],
        "cond": ["none"] * 3 + ["natural"] * 3,
        "hit": ["yes", "no", "TRUE", 0, 1, "false"],
        "trial_type": ["main", "catch", "practice", "main", "repeated", "main"],
        "image_set": [3.0, 3.0, 3.0, None, 1.0, 1.0],
    }).to_csv(path, index=False)
    df = load_csv(path, parse_map("participant_id=subj,condition=cond,correct=hit,"
                                  "kind=trial_type"))
    assert df["participant_id"].tolist() == ["1", "1", "1", "2", "2", "2"]
    assert df["correct"].tolist() == [True, False, True, False, True, False]
    assert df["is_catch"].tolist() == [False, True, False, False, False, False]
    # Only kind == main and not catch is a main trial; practice/repeated are kept.
    assert df["is_main"].tolist() == [True, False, False, True, False, True]
    assert len(df) == 6
    assert df["image_set"].tolist()[:3] == ["3", "3", "3"]


def test_catch_column_marks_catch_trials():
    df = canonicalize(pd.DataFrame({"participant_id": ["a", "a"], "condition": ["x", "x"],
                                    "correct": [1, 1], "catch": [False, True]}), {})
    assert df["kind"].tolist() == ["main", "main"]
    assert df["is_catch"].tolist() == [False, True]
    assert df["is_main"].tolist() == [True, False]


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"participant_id": ["a"], "condition": ["x"]}), "correct"),
        (pd.DataFrame({"participant_id": ["a"], "condition": ["x"], "correct": ["maybe"]}),
         "boolean"),
        (pd.DataFrame({"participant_id": ["a"], "condition": [None], "correct": [1]}),
         "condition"),
    ],
)
def test_bad_tables_raise_one_clear_error(frame, message):
    with pytest.raises(CausalvisError, match=message):
        canonicalize(frame, {})


def test_bad_mapped_field_raises_bad_auto_detected_field_is_skipped():
    """Issue 19: a column the user did not map never makes the analysis fail; it is
    skipped with a warning. The same column mapped explicitly is an error."""
    frame = pd.DataFrame({"participant_id": ["a"], "condition": ["x"], "correct": [1],
                          "rt": ["fast"]})
    with pytest.raises(CausalvisError, match="rt"):
        canonicalize(frame, {"rt": "rt"})
    df = canonicalize(frame, {})
    assert "rt" not in df.columns
    assert df.attrs["load"]["mapping"]["rt"]["how"] == "skipped"
    assert "not used for 'rt'" in df.attrs["load"]["warnings"][0]


def test_map_to_missing_column_names_it(tmp_path):
    path = tmp_path / "r.csv"
    pd.DataFrame({"p": ["a"], "c": ["x"], "y": [1]}).to_csv(path, index=False)
    with pytest.raises(CausalvisError, match="nothere"):
        load_csv(path, {"participant_id": "nothere"})
    with pytest.raises(CausalvisError, match="no such file"):
        load_csv(tmp_path / "missing.csv")


def test_join_trials_fills_missing_columns_only():
    df = canonicalize(pd.DataFrame({"participant_id": ["a", "a"], "condition": ["x", "x"],
                                    "correct": [1, 0], "trial_id": ["t1", "t2"],
                                    "unit": ["given", None]}), {})
    trials = pd.DataFrame({"trial_id": ["t1", "t2"], "base_trial_id": ["b1", "b2"],
                           "layer": ["blocks.3.2", "blocks.4.2"], "channel": [17, 3],
                           "unit": ["blocks.3.2-c0017", "blocks.4.2-c0003"],
                           "rel_diff": [0.25, "0.5"], "image_set": [0, 1]})
    out = join_trials(df, trials)
    assert out["unit"].tolist() == ["given", "blocks.4.2-c0003"]
    assert out["rel_diff"].tolist() == [0.25, 0.5]
    assert out["base_trial_id"].tolist() == ["b1", "b2"]
    assert out["image_set"].tolist() == ["0", "1"]


def _participants() -> pd.DataFrame:
    """Six participants, each failing (at most) one criterion."""
    rows = []
    spec = {
        "ok": dict(total=300, instr=60, practice=1, catch=[1, 1, 1], sides="ab"),
        "bad_catch": dict(total=300, instr=60, practice=1, catch=[1, 0, 0], sides="ab"),
        "too_fast": dict(total=60, instr=60, practice=1, catch=[1, 1, 1], sides="ab"),
        "too_slow": dict(total=1000, instr=60, practice=1, catch=[1, 1, 1], sides="ab"),
        "skim": dict(total=300, instr=5, practice=1, catch=[1, 1, 1], sides="ab"),
        "practice": dict(total=300, instr=60, practice=7, catch=[1, 1, 1], sides="ab"),
        "one_side": dict(total=300, instr=60, practice=1, catch=[1, 1, 1], sides="aa"),
    }
    for pid, s in spec.items():
        for i in range(6):
            left = "a" if i % 2 == 0 else "b"
            # "aa": always the left image; otherwise always option a (left half the time)
            choice = left if s["sides"] == "aa" else "a"
            rows.append(dict(participant_id=pid, condition="natural", correct=i % 3 != 0,
                             kind="main", total_time_s=s["total"],
                             instruction_time_s=s["instr"], practice_attempts=s["practice"],
                             choice=choice, left_option=left))
        for c in s["catch"]:
            rows.append(dict(participant_id=pid, condition="natural", correct=bool(c),
                             kind="catch", total_time_s=s["total"],
                             instruction_time_s=s["instr"], practice_attempts=s["practice"],
                             choice="a", left_option="a" if s["sides"] == "aa" else "b"))
    return canonicalize(pd.DataFrame(rows), {})


def test_each_criterion_removes_exactly_its_participant():
    res = apply_exclusions(_participants(), ExclusionConfig())
    crit = res.criteria
    assert crit["catch_accuracy"]["participants"] == ["bad_catch"]
    assert crit["total_time"]["participants"] == ["too_fast", "too_slow"]
    assert crit["instruction_time"]["participants"] == ["skim"]
    assert crit["practice_attempts"]["participants"] == ["practice"]
    assert crit["one_sided"]["participants"] == ["one_side"]
    assert res.included == ["ok"]
    assert res.to_json()["n_excluded"] == 6


def test_thresholds_come_from_the_config():
    cfg = ExclusionConfig(min_catch_accuracy=0.0, min_total_time_s=0, max_total_time_s=5000,
                          min_instruction_time_s=0, max_practice_attempts=10,
                          max_same_side_fraction=1.0)
    res = apply_exclusions(_participants(), cfg)
    assert res.excluded == ["one_side"]
    # A looser side threshold catches participants who mostly click one side.
    df = _participants()
    res = apply_exclusions(df, cfg.model_copy(update={"max_same_side_fraction": 0.6}))
    # "ok" picked the right-hand image on 6 of its 9 trials (share 0.67 > 0.6)
    assert "ok" in res.excluded


def test_missing_columns_are_not_available_not_passed():
    df = canonicalize(pd.DataFrame({"participant_id": ["a", "b"], "condition": ["x", "x"],
                                    "correct": [1, 0]}), {})
    res = apply_exclusions(df)
    for name in ("catch_accuracy", "total_time", "instruction_time", "practice_attempts",
                 "one_sided"):
        assert res.criteria[name]["available"] is False
        assert res.criteria[name]["n_excluded"] is None
        assert res.criteria[name]["reason"]
    assert res.included == ["a", "b"]


def test_side_column_and_unfinished_status():
    rows = [dict(participant_id=p, condition="x", correct=True, side=s, status=st)
            for p, s, st in [("l", "left", "finished"), ("l", "left", "finished"),
                             ("m", "left", "finished"), ("m", "right", "finished"),
                             ("q", "right", "abandoned"), ("q", "left", "abandoned")]]
    res = apply_exclusions(canonicalize(pd.DataFrame(rows), {}))
    assert res.criteria["one_sided"]["participants"] == ["l"]
    assert res.criteria["unfinished"]["participants"] == ["q"]
    assert res.included == ["m"]


def test_same_side_rule_needs_min_sided_trials():
    """Two answers on one side happen to honest participants half the time: with
    ``min_sided_trials = 3`` only a participant with three one-sided answers is excluded."""
    rows = [dict(participant_id=p, condition="x", correct=True, side=s, status="finished")
            for p, n in (("two", 2), ("three", 3)) for s in ["left"] * n]
    df = canonicalize(pd.DataFrame(rows), {})
    assert apply_exclusions(df).criteria["one_sided"]["participants"] == ["three", "two"]
    res = apply_exclusions(df, ExclusionConfig(min_sided_trials=3))
    assert res.criteria["one_sided"]["participants"] == ["three"]
