"""Dictionary features and directions through a whole study (issue 20 items 4 and 6):
a tiny lite0 study on a direction set and a SAE builds through trials, references,
sessions, observe and a simulated pilot with its analysis; neurons vs SAE features as two "models" answer the SAE question."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from causalvis.analysis.report import AnalysisOptions, analyze_csv
from causalvis.config import StudyConfig
from causalvis.models.dictionary import save_directions, save_sae
from causalvis.pipeline.build import build, init_study
from causalvis.pipeline.multimodel import substudy_paths
from causalvis.store.layout import StudyPaths
from causalvis.store.units import read_units

LAYER = "blocks.3.2"  # lite0: 80 channels


def write_sae(folder: Path, d_sae: int, **kwargs) -> Path:
    g = torch.Generator().manual_seed(0)
    return save_sae(folder, LAYER, torch.randn(80, d_sae, generator=g) / 9,
                    torch.randn(d_sae, generator=g) * 0.1, torch.randn(d_sae, 80, generator=g),
                    torch.zeros(80), **kwargs)


def write_directions(folder: Path, k: int) -> Path:
    return save_directions(folder, LAYER, torch.randn(k, 80, generator=torch.Generator()
                                                      .manual_seed(1)))


def tiny(cfg: StudyConfig, root: Path) -> StudyConfig:
    cfg.images.max_images = 40
    cfg.units.per_layer = 1
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_top = 20
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 2
    cfg.exemplars.n_image_sets = 1
    cfg.conditions.names = ["none", "natural"]
    cfg.conditions.n_references = 2
    cfg.occlusion.stride = 56
    cfg.featurevis.also_render = []
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
    cfg.save(StudyPaths(root).config)
    return cfg


@pytest.fixture(scope="module")
def dict_study(tmp_path_factory):
    """One study whose units are a direction and a SAE feature of lite0's blocks.3.2."""
    tmp = tmp_path_factory.mktemp("dictstudy")
    dictionaries = {"sae1": str(write_sae(tmp / "sae", d_sae=96)),
                    "dirs": str(write_directions(tmp / "dirs", k=6))}
    root = tmp / "study"
    cfg = init_study(root, "quick", dictionaries=dictionaries)
    cfg.units.layers = ["dirs", "sae1"]
    tiny(cfg, root)
    build(root, progress=False)
    return root, cfg


def test_dictionary_and_direction_units_build_end_to_end(dict_study):
    root, _ = dict_study
    paths = StudyPaths(root)
    units = read_units(paths)
    assert {u.unit.layer for u in units if u.role == "main"} == {"dirs", "sae1"}
    index = json.loads(paths.activations_index.read_text())
    assert index["channels"] == {"dirs": 6, "sae1": 96}
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    main = trials[trials["kind"] == "main"]
    assert set(main["layer"]) == {"dirs", "sae1"}
    assert set(main["condition"]) == {"none", "natural"}
    for rel in main["option_a_asset"].tolist() + main["option_b_asset"].tolist():
        assert (paths.bundle / rel).is_file()
    assert json.loads(paths.sessions.read_text())["sessions"]


def test_observers_and_a_simulated_pilot_on_dictionary_units(dict_study, pilot):
    root, _ = dict_study
    observers, summary = pilot(root)
    rows = observers["observers"]["center"]["conditions"]
    assert rows and all(r["n_trials"] > 0 for r in rows.values())
    assert summary["simulated"] and summary["conditions_without_exclusion"]
    assert {r["layer"] for r in summary["by_layer"]} <= {"dirs", "sae1"}


def test_neurons_vs_sae_features_answers_the_question(tmp_path):
    sae = write_sae(tmp_path / "sae", d_sae=96, activation="topk", k=16)
    root = tmp_path / "study"
    cfg = init_study(root, "quick", models=["lite0", "lite0+sae1"],
                     dictionaries={"sae1": str(sae)})
    cfg.units.layers = [LAYER]
    cfg = tiny(cfg, root)
    cfg.units.per_layer = 4
    cfg.save(StudyPaths(root).config)
    build(root, progress=False)
    paths = StudyPaths(root)
    sub = StudyConfig.load(substudy_paths(paths, "lite0+sae1").config)
    assert sub.model.name == "lite0" and sub.units.layers == ["sae1"]
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    assert set(trials["model"]) == {"lite0", "lite0+sae1"}
    assert set(trials[(trials["model"] == "lite0+sae1") & (trials["kind"] == "main")]
               ["layer"]) == {"sae1"}
    # simulated answers: the features are understood far better than the neurons
    rng = np.random.default_rng(0)
    main = trials[trials["kind"] == "main"]
    rows = []
    for p in range(12):
        for _, t in main.iterrows():
            acc = 0.95 if t["model"] == "lite0+sae1" else 0.55
            rows.append({"participant_id": f"p{p}", "trial_id": t["trial_id"],
                         "condition": t["condition"], "kind": "main",
                         "correct": bool(rng.random() < acc)})
    csv = tmp_path / "responses.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    summary, out = analyze_csv(csv, {}, out=tmp_path / "report", study=root,
                               options=AnalysisOptions(n_boot=100, n_perm=100,
                                                       mixed_model=False, model_boot=200))
    d = summary["models"]["dictionary"]
    assert d["neurons"] == "lite0" and d["features"] == "lite0+sae1"
    assert set(d["answers"]) == {"none", "natural"}
    # the no-explanation baseline does not answer the question; the explanation does
    assert d["answers"] == {"none": "baseline", "natural": "yes"}
    html = (Path(out) / "index.html").read_text() if Path(out).is_dir() else Path(out).read_text()
    assert "Are the dictionary features more understandable than the neurons?" in html
