"""Option identities carry no information: within every session the correct option is
``a`` as often as ``b`` (within one), the labels still tell the truth, and the two option
files of every served trial have the same byte length; the worked example is shown
nowhere else."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from causalvis.pipeline.build import build
from causalvis.stimuli.plan import balanced_labels
from causalvis.store.assets import read_asset
from causalvis.store.layout import StudyPaths
from causalvis.store.sessions import read_sessions
from causalvis.store.trials import read_trials, split_assets

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
        obvious = session["practice_obvious"]
        assert set(obvious) <= set(session["practice"])
        for pool in (obvious, [t for t in session["practice"] if t not in obvious]):
            n_a = int((trials.loc[pool, "correct"] == "a").sum())  # balanced per pool
            assert abs(2 * n_a - len(pool)) <= 1
        for tid, t in pd.concat([scored, practice]).iterrows():
            good = float(t[f"act_{t['correct']}"])
            other = float(t["act_b" if t["correct"] == "a" else "act_a"])
            assert good >= other, tid  # the correct option keeps the larger activation


@pytest.mark.parametrize("study", ["causal_study", "two_afc_study"])
def test_option_files_of_every_trial_have_one_byte_length(study, request):
    """A participant picking the larger (or smaller) file has no larger file to pick."""
    root, _ = request.getfixturevalue(study)
    paths = StudyPaths(root)
    trials = read_trials(paths.trials)
    assert {"main", "catch", "practice"} <= set(trials["kind"])
    for _, t in trials.iterrows():
        size_a = (paths.bundle / t["option_a_asset"]).stat().st_size
        size_b = (paths.bundle / t["option_b_asset"]).stat().st_size
        assert size_a == size_b, t["trial_id"]


def _pixels(paths: StudyPaths, rel: str) -> str:
    return hashlib.sha256(read_asset(paths, rel).tobytes()).hexdigest()


# The tiny 2-AFC study (96 images) shows every practice query among some unit's natural
# references, so it has no trial that may be the example (and must have none).
@pytest.mark.parametrize("study, has_example", [("causal_study", True), ("two_afc_study", False)])
def test_worked_example_is_shown_in_no_other_trial(study, has_example, request):
    root, cfg = request.getfixturevalue(study)
    paths = StudyPaths(root)
    plan = read_sessions(paths.sessions)
    trials = read_trials(paths.trials).set_index("trial_id")
    assert plan.practice_draw == {
        "n_total": cfg.sessions.n_practice, "n_obvious": cfg.sessions.n_practice_obvious}
    assert set(plan.instructions_example) == (set(cfg.conditions.names) if has_example else set())
    assert (trials["kind"] == "example").sum() == len(plan.instructions_example)
    served = {t for s in plan.sessions for t in (*s.trials, *s.practice)}
    shown = set()  # every image of a practice, main or catch trial, by its pixels
    for tid in served:
        t = trials.loc[tid]
        for rel in (t["query_asset"], t["option_a_asset"], t["option_b_asset"],
                    *split_assets(t["reference_assets"]), *split_assets(t["min_reference_assets"])):
            if rel:
                shown.add(_pixels(paths, rel))
    for condition, ex_id in plan.instructions_example.items():
        ex = trials.loc[ex_id]
        assert ex["kind"] == "example" and ex["condition"] == condition
        assert ex_id not in served
        for rel in (ex["query_asset"], ex["option_a_asset"], ex["option_b_asset"]):
            if rel:
                assert _pixels(paths, rel) not in shown, (condition, rel)
