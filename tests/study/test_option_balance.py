"""Option identities carry no information: within every session the correct option is
``a`` as often as ``b`` (within one), and the labels still tell the truth."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from causalvis.pipeline.build import build
from causalvis.stimuli.plan import balanced_labels
from causalvis.store.layout import StudyPaths

sys.path.insert(0, str(Path(__file__).parent))
from test_study_pipeline import tiny_config  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1] / "two_afc"))
from two_afc_helpers import build_tiny_two_afc  # noqa: E402


@pytest.fixture(scope="module")
def causal_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("balance") / "study"
    cfg = tiny_config(root)
    build(root, progress=False)
    return root, cfg


@pytest.fixture(scope="module")
def two_afc_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("balance_two_afc") / "study"
    cfg = build_tiny_two_afc(root)
    build(root, ["sessions"], progress=False)
    return root, cfg


def _sessions(root: Path) -> tuple[list[dict], pd.DataFrame]:
    paths = StudyPaths(root)
    plan = json.loads(paths.sessions.read_text())["sessions"]
    trials = pd.read_csv(paths.trials, keep_default_na=False).set_index("trial_id")
    return plan, trials


@pytest.mark.parametrize("n", [0, 1, 2, 5, 8, 13])
def test_balanced_labels_are_balanced_and_seeded(n):
    labels = balanced_labels(n, 7, "s1")
    assert len(labels) == n and abs(labels.count("a") - labels.count("b")) <= 1
    assert labels == balanced_labels(n, 7, "s1")


def test_odd_sessions_do_not_always_favour_one_label():
    extra = {balanced_labels(5, 7, f"s{i}").count("a") for i in range(40)}
    assert extra == {2, 3}


@pytest.mark.parametrize("study", ["causal_study", "two_afc_study"])
def test_every_session_is_balanced_and_truthful(study, request):
    root, _ = request.getfixturevalue(study)
    plan, trials = _sessions(root)
    assert plan
    for session in plan:
        scored = trials.loc[session["trials"]]
        assert set(scored["kind"]) <= {"main", "catch"}
        n_a = int((scored["correct"] == "a").sum())
        n_b = int((scored["correct"] == "b").sum())
        assert n_a + n_b == len(scored) and abs(n_a - n_b) <= 1, session["session_id"]
        # a participant who always answers `a` scores within one trial of half
        assert abs(n_a - len(scored) / 2) <= 1
        practice = trials.loc[session["practice"]]
        assert abs(int((practice["correct"] == "a").sum()) * 2 - len(practice)) <= 1
        for tid, t in pd.concat([scored, practice]).iterrows():
            good = float(t[f"act_{t['correct']}"])
            other = float(t["act_b" if t["correct"] == "a" else "act_a"])
            assert good >= other, tid  # the correct option keeps the larger activation
