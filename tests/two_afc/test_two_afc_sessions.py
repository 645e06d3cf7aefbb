"""The sessions stage on a real tiny two_afc study: every served trial shows the right
side's references, catch trials put each query among its own side, and the plan is
balanced over conditions and image sets."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import pandas as pd
import pytest

from causalvis.store.layout import StudyPaths
from causalvis.store.units import unit_key


@pytest.fixture(scope="module")
def sessions_study(tiny_two_afc_sessions):
    return tiny_two_afc_sessions


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


def _side_files(paths: StudyPaths, condition: str, unit: str, image_set: int, side: str):
    layer, _, channel = unit.rpartition(":")
    folder = paths.reference_dir(condition, unit_key(layer, int(channel)))
    if condition == "natural":
        pattern = f"set{image_set}-{'min-' if side == 'min' else ''}[0-9]*.png"
    else:
        pattern = "min-[0-9]*.png" if side == "min" else "[0-9]*.png"
    return sorted(folder.glob(pattern), key=lambda p: int(p.stem.rsplit("-", 1)[-1]))


def test_references_come_from_the_right_side(sessions_study):
    root, cfg = sessions_study
    paths = StudyPaths(root)
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    assert set(trials["model"]) == {cfg.model.name}
    assert (trials["query_asset"] == "").all()
    for _, t in trials[trials["kind"] != "catch"].iterrows():
        for column, side in (("reference_assets", "max"), ("min_reference_assets", "min")):
            served = [a.removeprefix("assets/").removesuffix(".png") for a in t[column].split()]
            files = _side_files(paths, t["condition"], t["unit"], int(t["image_set"]), side)
            assert served == [_digest(f) for f in files][: cfg.conditions.n_references]
        assert t["option_a_asset"] not in t["reference_assets"].split()
        assert t["option_b_asset"] not in t["min_reference_assets"].split()


def test_catch_trials_show_each_query_on_its_own_side(sessions_study):
    root, _ = sessions_study
    trials = pd.read_csv(StudyPaths(root).trials, dtype=str, keep_default_na=False)
    catch = trials[trials["kind"] == "catch"]
    assert len(catch)
    for _, t in catch.iterrows():
        good = t[f"option_{t['correct']}_asset"]
        bad = t["option_b_asset" if t["correct"] == "a" else "option_a_asset"]
        assert t["reference_assets"].split()[-1] == good
        assert t["min_reference_assets"].split()[-1] == bad
        assert float(t[f"act_{t['correct']}"]) > float(
            t["act_b" if t["correct"] == "a" else "act_a"]
        )


def test_plan_is_balanced(sessions_study):
    root, cfg = sessions_study
    paths = StudyPaths(root)
    plan = json.loads(paths.sessions.read_text())
    assert plan["task"] == "two_afc" and plan["conditions"] == ["natural", "synthetic"]
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False).set_index("trial_id")
    grid = Counter((s["condition"], s["image_set"]) for s in plan["sessions"])
    assert len(set(grid.values())) == 1
    for s in plan["sessions"]:
        kinds = Counter(trials.loc[t, "kind"] for t in s["trials"])
        assert kinds["catch"] == cfg.sessions.n_catch
        assert kinds["main"] >= 1
        assert all(trials.loc[t, "kind"] == "practice" for t in s["practice"])
