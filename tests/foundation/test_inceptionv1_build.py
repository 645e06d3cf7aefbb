"""A tiny paper2021 study (scan, units, exemplars, occlusion, trials, sessions) on InceptionV1 with random weights, built end to end: the
explicit paper units reach units.json and the trials (issue 18, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from causalvis.pipeline.build import build, init_study
from causalvis.presets import PAPER2021_UNITS
from causalvis.store.layout import StudyPaths


def _tiny(root: Path):
    cfg = init_study(root, "paper2021", model="inceptionv1", weights="random")
    assert cfg.units.explicit == PAPER2021_UNITS
    # The two shallowest mixed layers' paper units keep the build short on 2 CPU cores.
    cfg.units.explicit = PAPER2021_UNITS[:4]
    cfg.units.n_practice_units = 1
    cfg.images.max_images = 30
    cfg.scan.batch_size = 30
    cfg.exemplars.n_image_sets = 2
    cfg.exemplars.n_references = 2
    cfg.exemplars.n_bins = 4
    cfg.exemplars.n_top = 8
    cfg.conditions.names = ["none", "natural"]  # no rendering: featurevis has its tests
    cfg.conditions.n_references = 2
    cfg.occlusion.stride = 67
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
    cfg.sessions.n_practice_obvious = 1
    cfg.save(StudyPaths(root).config)
    return cfg


def test_paper_units_build_end_to_end_on_random_weights(tmp_path):
    root = tmp_path / "study"
    _tiny(root)
    build(root, progress=False)
    paths = StudyPaths(root)
    units = json.loads(paths.units.read_text())["units"]
    main_units = [f"{u['layer']}:{u['channel']}" for u in units if u["role"] == "main"]
    assert main_units == PAPER2021_UNITS[:4]
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    main = trials[trials["kind"] == "main"]
    assert set(main["unit"]) == set(PAPER2021_UNITS[:4])
    assert set(main["condition"]) == {"none", "natural"}
    assert paths.sessions.is_file()
