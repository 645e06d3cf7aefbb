"""Shared by the tiny end-to-end studies: machine observers, a simulated pilot through the
real server and its analysis, on a study folder a test module has already built."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest


def observe_and_pilot(root: Path, *, participants: int = 4,
                      min_sided_trials: int = 2) -> tuple[dict, dict]:
    """``causalvis demo``'s steps after the build: observe (the default observers), a
    simulated pilot (reference_image observer, no lapses: nobody excluded) into STUDY/simulated-pilot.sqlite,
    the analysis of it (``min_sided_trials``: sessions of one or two trials answer one side
    by chance). Returns (observers.json, summary.json), both checked for numbers."""
    from causalvis.analysis.report import AnalysisOptions, analyze_study
    from causalvis.cli.demo import pilot_exclusion, run_pilot
    from causalvis.config import StudyConfig
    from causalvis.observers.observe import observe
    from causalvis.store.layout import StudyPaths

    paths = StudyPaths(root)
    observe(root, n_boot=50)
    observers = json.loads((paths.report / "observers.json").read_text())
    for name, obs in observers["observers"].items():
        for cond, row in obs["conditions"].items():
            if row.get("n_trials"):
                assert math.isfinite(row["accuracy"]), (name, cond, row)
    db = run_pilot(root, participants=participants, strategy="reference_image", lapse=0.0,
                   echo=lambda _line: None)
    cfg = StudyConfig.load(paths.config)
    summary, _ = analyze_study(
        root, db_url=f"sqlite:///{db}",
        exclusion=pilot_exclusion(cfg).model_copy(update={"min_sided_trials": min_sided_trials}),
        source=f"{root}: SIMULATED pilot", options=AnalysisOptions(
            n_boot=50, n_perm=50, mixed_model=False, model_boot=50))
    return observers, summary


@pytest.fixture(scope="session")
def pilot():
    return observe_and_pilot
