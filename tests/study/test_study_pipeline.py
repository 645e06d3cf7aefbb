"""A tiny real study, built end to end: the bundle is complete, balanced, leak-free, and
its ground truth is true for the served bytes."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import torch

from causalvis.config import StudyConfig
from causalvis.images import pil_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline.build import build, init_study
from causalvis.store.assets import read_asset
from causalvis.store.layout import StudyPaths


def tiny_config(root: Path) -> StudyConfig:
    cfg = init_study(root, "quick")
    cfg.images.max_images = 160
    cfg.units.layers = ["blocks.2.1", "blocks.4.2"]
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_top = 40
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 3
    cfg.exemplars.n_image_sets = 2
    cfg.conditions.n_references = 3
    cfg.conditions.mixed_natural = 2
    cfg.conditions.mixed_synthetic = 1
    cfg.occlusion.stride = 24
    cfg.featurevis.size = 64
    cfg.featurevis.crop = 4
    cfg.featurevis.jitter = 4
    cfg.featurevis.jitter_after = 2
    cfg.featurevis.steps = 8
    cfg.featurevis.n_images = 3
    cfg.featurevis.maco_steps = 8
    cfg.featurevis.maco_canvas = 96
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
    cfg.save(StudyPaths(root).config)
    return cfg


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "study"
    cfg = tiny_config(root)
    build(root, progress=False)
    return root, cfg


def test_every_stage_ran_and_rerun_is_a_no_op(tiny_study):
    root, _ = tiny_study
    paths = StudyPaths(root)
    before = {p: p.stat().st_mtime_ns for p in paths.root.rglob("*") if p.is_file()}
    build(root, progress=False)
    after = {p: p.stat().st_mtime_ns for p in paths.root.rglob("*") if p.is_file()}
    changed = [str(p.relative_to(root)) for p in before if after.get(p) != before[p]]
    assert changed == [], f"a rerun rewrote {changed}"


def test_sessions_are_balanced_and_cover_all_conditions(tiny_study):
    root, cfg = tiny_study
    paths = StudyPaths(root)
    plan = json.loads(paths.sessions.read_text())
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    by_id = trials.set_index("trial_id")
    assert set(plan["conditions"]) == set(cfg.conditions.names)
    cells = Counter()
    for session in plan["sessions"]:
        kinds = Counter(by_id.loc[t, "kind"] for t in session["trials"])
        assert kinds["catch"] == cfg.sessions.n_catch
        assert all(by_id.loc[t, "condition"] == session["condition"] for t in session["trials"])
        sc = cfg.sessions
        if session["condition"] == "none":  # the paper gave `none` no practice
            assert session["practice"] == []
        else:
            assert 1 <= len(session["practice"]) <= sc.n_practice * sc.practice_pool_factor
        assert set(session["practice_obvious"]) <= set(session["practice"])
        for t in session["trials"]:
            row = by_id.loc[t]
            if row["kind"] == "main":
                assert int(row["image_set"]) == session["image_set"]
                cells[(row["unit"], row["image_set"], row["condition"])] += session[
                    "planned_participants"
                ]
    assert len(set(cells.values())) == 1, "every (unit, image set, condition) equally planned"
    assert plan["n_participants_needed"] == sum(s["planned_participants"] for s in plan["sessions"])
    assert set(plan["instructions_example"]) == set(cfg.conditions.names)


def test_practice_units_never_appear_in_main_trials(tiny_study):
    root, _ = tiny_study
    paths = StudyPaths(root)
    units = json.loads(paths.units.read_text())["units"]
    practice = {f"{u['layer']}:{u['channel']}" for u in units if u["role"] == "practice"}
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    assert practice
    assert set(trials.loc[trials["kind"] == "main", "unit"]).isdisjoint(practice)
    assert set(trials.loc[trials["kind"] == "practice", "unit"]) <= practice


def test_catch_trials_come_from_the_catch_units(tiny_study):
    """Issue 18: catch units in units.json, disjoint from the main and practice units;
    every reference-condition catch trial is one of theirs; reference orders recorded."""
    root, cfg = tiny_study
    paths = StudyPaths(root)
    units = json.loads(paths.units.read_text())["units"]
    roles = {r: {f"{u['layer']}:{u['channel']}" for u in units if u["role"] == r}
             for r in ("main", "practice", "catch")}  # fmt: skip
    assert len(roles["catch"]) == cfg.units.n_catch_units > 0
    assert not roles["catch"] & (roles["main"] | roles["practice"])
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False).set_index("trial_id")
    plan = json.loads(paths.sessions.read_text())
    for session in plan["sessions"]:
        catch = trials.loc[[t for t in session["trials"] if trials.loc[t, "kind"] == "catch"]]
        assert not set(catch["unit"]) & set(session["units"])
        if session["condition"] != "none":
            assert set(catch["unit"]) <= roles["catch"]
        assert "reference_seed" in session
        for tid, order in session.get("reference_order", {}).items():
            assert sorted(order) == list(range(len(trials.loc[tid, "reference_assets"].split())))


def test_references_per_condition(tiny_study):
    root, cfg = tiny_study
    trials = pd.read_csv(StudyPaths(root).trials, dtype=str, keep_default_na=False)
    main = trials[trials["kind"] == "main"]
    for condition, group in main.groupby("condition"):
        counts = {len(r.split()) for r in group["reference_assets"]}
        expected = 0 if condition == "none" else cfg.conditions.n_references
        assert counts == {expected}, condition
    # the mixed condition shows natural and synthetic images of the same unit and set
    natural = main[main["condition"] == "natural"].set_index("base_trial_id")["reference_assets"]
    mixed = main[main["condition"] == "mixed"].set_index("base_trial_id")["reference_assets"]
    for base_id, refs in mixed.items():
        n = cfg.conditions.mixed_natural
        assert refs.split()[:n] == natural[base_id].split()[:n]


def test_bundle_is_complete_and_leaks_nothing(tiny_study):
    root, _ = tiny_study
    paths = StudyPaths(root)
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    assets = set()
    for col in ("query_asset", "option_a_asset", "option_b_asset"):
        assets |= set(trials[col])
    for refs in trials["reference_assets"]:
        assets |= set(refs.split())
    for rel in assets:
        assert (paths.bundle / rel).is_file(), rel
        assert re.fullmatch(r"assets/[0-9a-f]{20}\.png", rel), rel
    # only content-hashed PNGs in the public folder (it also holds the stimuli of trials
    # that were built but not selected, e.g. unused practice-unit trials)
    public = {f"assets/{p.name}" for p in paths.assets.iterdir()}
    assert assets <= public
    assert all(re.fullmatch(r"assets/[0-9a-f]{20}\.png", rel) for rel in public)
    # correct answers are balanced between the labels a and b
    main = trials[trials["kind"] == "main"]
    assert set(main["correct"]) == {"a", "b"} or len(main) < 4
    manifest = json.loads(paths.manifest.read_text())
    assert manifest["n_assets"] == len(public)
    assert manifest["config_hash"] == json.loads(paths.sessions.read_text())["config_hash"]


def test_ground_truth_holds_for_the_served_bytes(tiny_study, lite0):
    root, _ = tiny_study
    paths = StudyPaths(root)
    trials = pd.read_csv(paths.trials, keep_default_na=False)
    for _, row in trials.iterrows():
        images = torch.stack(
            [
                pil_to_tensor(read_asset(paths, row[c]))
                for c in ("query_asset", "option_a_asset", "option_b_asset")
            ]
        )
        acts = probe_tensor(lite0, images, [row["layer"]])[row["layer"]][:, int(row["channel"])]
        base, a, b = (float(v) for v in acts)
        tol = 1e-3 * max(1.0, abs(base))
        assert abs(a - row["act_a"]) <= tol and abs(b - row["act_b"]) <= tol, row["trial_id"]
        if row["kind"] == "main":
            assert abs(base - row["act_base"]) <= tol
            assert row["correct"] == ("a" if a > b else "b")


def test_machine_observers_run_on_the_real_study(tiny_study):
    from causalvis.observers.observe import observe

    root, cfg = tiny_study
    observe(root, ["center", "variance", "reference_image"], n_boot=200)
    report = json.loads((StudyPaths(root).report / "observers.json").read_text())
    conditions = report["observers"]["center"]["conditions"]
    assert set(conditions) == set(cfg.conditions.names)
    for stats in conditions.values():
        assert 0.0 <= stats["accuracy"] <= 1.0 and stats["n_trials"] > 0
    # the reference observer needs references: not applicable without them
    assert "none" not in report["observers"]["reference_image"]["conditions"]
