"""scan -> units -> exemplars -> occlusion -> trials on a tiny quick study, checked with
the ``causalvis probe`` command on the served option images."""

from __future__ import annotations

import csv
import json
from collections import defaultdict

import pytest
from occlusion_helpers import shared_model

from causalvis.cli import main
from causalvis.pipeline.build import build, init_study
from causalvis.store.layout import StudyPaths, read_json


@pytest.fixture(scope="module")
def quick_study(tmp_path_factory, lite0):
    root = tmp_path_factory.mktemp("occpipe") / "quick"
    cfg = init_study(root, "quick")
    cfg.images.max_images = 120
    cfg.occlusion.stride = 24
    cfg.units.layers = ["blocks.3.2"]
    cfg.units.n_practice_units = 1
    cfg.exemplars = {"n_top": 40, "n_bins": 4, "n_references": 3, "n_image_sets": 2}
    cfg.save(root / "study.toml")
    with shared_model(lite0):  # the probe CLI below loads its own, independent model
        build(root, ["scan", "units", "exemplars", "occlusion", "trials"], progress=False)
    return StudyPaths(root)


def test_every_unit_gets_trials(quick_study):
    units = read_json(quick_study.units)["units"]
    assert {u["role"] for u in units} == {"main", "practice", "catch"}
    with open(quick_study.trials) as fh:
        trials = list(csv.DictReader(fh))
    keys = {f"{u['layer']}:{u['channel']}" for u in units}
    assert {r["unit"] for r in trials} <= keys
    assert len(trials) >= len(units)  # 2 image sets per unit, rarely a dropped near-tie


def test_probe_cli_agrees_with_trials_csv(quick_study, capsys):
    with open(quick_study.trials) as fh:
        trials = list(csv.DictReader(fh))
    by_unit = defaultdict(list)
    for r in trials:
        by_unit[r["unit"]].append(r)
    for unit, unit_rows in by_unit.items():
        files = [str(quick_study.bundle / r[c]) for r in unit_rows
                 for c in ("option_a_asset", "option_b_asset")]
        capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(["probe", "lite0", *files, "--unit", unit, "--json"])
        assert done.value.code == 0
        out = json.loads(capsys.readouterr().out)
        acts = {row["image"]: row["activation"] for row in out}
        for r in unit_rows:
            a = acts[str(quick_study.bundle / r["option_a_asset"])]
            b = acts[str(quick_study.bundle / r["option_b_asset"])]
            assert a == pytest.approx(float(r["act_a"]), rel=1e-5, abs=1e-6)
            assert b == pytest.approx(float(r["act_b"]), rel=1e-5, abs=1e-6)
            assert r["correct"] == ("a" if a > b else "b")
