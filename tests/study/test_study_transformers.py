"""Tiny studies (random weights) beyond channels-first CNNs (issue 20): a ViT's token layer
and a channels-last ConvNeXt layer, both as ``python:`` factory modules the test writes,
build end to end through trials, references (natural and feature visualization) and
sessions, then observe (finite accuracies), MIS and a simulated pilot with its analysis;
the occlusion stage says which engine ran (the ViT: the full sweep, a patch reaches every
token; the ConvNeXt: the incremental engine, exact on its channels-last layers too) and
the scan records the token policy. The two built studies are then
the sub-studies of a multi-model study mixing the CNN and the ViT (their own layers through
``units.model_layers``), analysed like the model comparison."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from causalvis.config import StudyConfig
from causalvis.pipeline.build import build, init_study
from causalvis.pipeline.multimodel import substudy_paths
from causalvis.store.activations import read_index
from causalvis.store.layout import StudyPaths
from causalvis.store.occlusion import read_occlusion
from causalvis.store.units import read_units

FACTORIES = '''
import timm
import torch
from causalvis.models import UserModel

def vit():
    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=64,
                            patch_size=8, depth=3, embed_dim=48, num_heads=2)
    return UserModel(net, input_size=64, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)

def convnext():
    torch.manual_seed(0)
    net = timm.create_model("convnext_atto", pretrained=False, conv_mlp=False)
    return {"net": net, "input_size": 64}
'''


CONDITIONS = ["none", "natural", "synthetic"]
VIT_LAYER = "blocks.1.mlp.fc1"
CNX_LAYER = "stages.1.blocks.0.mlp.fc1"


def _settings(cfg: StudyConfig) -> StudyConfig:
    """A tiny quick-preset study: 40 images, 2 references, a 6-step 48 px featurevis."""
    cfg.images.max_images = 40
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_top = 30
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 2
    cfg.exemplars.n_image_sets = 1
    cfg.conditions.names = CONDITIONS
    cfg.conditions.n_references = 2
    cfg.occlusion.stride = 16
    fv = cfg.featurevis  # the synthetic condition: Lucid's recipe on the token layer
    fv.size, fv.crop, fv.jitter, fv.jitter_after, fv.steps, fv.n_images = 48, 4, 4, 2, 6, 2
    fv.also_render = []  # MACO on token layers: tests/foundation/test_token_layers.py
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
    return cfg


def _tiny(root: Path, model: str, layer: str) -> Path:
    cfg = _settings(init_study(root, "quick", model=model))
    cfg.units.layers = [layer]
    cfg.save(StudyPaths(root).config)
    build(root, progress=False)
    return root


@pytest.fixture(scope="module")
def factory_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("factories") / "nets.py"
    path.write_text(FACTORIES)
    return path


@pytest.fixture(scope="module")
def vit_study(tmp_path_factory, factory_file):
    root = tmp_path_factory.mktemp("vit") / "study"
    return _tiny(root, f"python:{factory_file}:vit", VIT_LAYER)


@pytest.fixture(scope="module")
def convnext_study(tmp_path_factory, factory_file):
    root = tmp_path_factory.mktemp("cnx") / "study"
    return _tiny(root, f"python:{factory_file}:convnext", CNX_LAYER)


def _check_built(root: Path, layer: str, engine: str) -> StudyPaths:
    paths = StudyPaths(root)
    units = read_units(paths)
    assert units and all(u.layer == layer for u in units)
    assert (paths.stimuli / "trials_base.csv").is_file()
    assert (paths.bundle / "sessions.json").is_file()
    for unit in units:
        if unit.role == "main":  # the featurevis references of the synthetic condition
            assert len(list((paths.references / "synthetic" / unit.key).rglob("*.png"))) >= 2
    for unit in units:
        for result in paths.occlusion.glob(f"{unit.key}/set*.npz"):
            assert read_occlusion(result).engine == engine
    assert any(paths.occlusion.glob("*/set*.npz"))
    return paths


def test_vit_token_study_builds_end_to_end(vit_study):
    paths = _check_built(vit_study, VIT_LAYER, "full")
    assert read_index(paths).tokens == "patch"
    assert StudyConfig.load(paths.config).model.tokens == "patch"


def test_channels_last_study_builds_end_to_end(convnext_study):
    paths = _check_built(convnext_study, CNX_LAYER, "incremental")
    assert read_index(paths).tokens is None  # no token layer scanned: nothing recorded


def _check_pilot(observers: dict, summary: dict) -> None:
    ref = observers["observers"]["reference_image"]["conditions"]
    assert {"natural", "synthetic"} <= set(ref)
    assert all(np.isfinite(r["accuracy"]) and r["n_trials"] > 0 for r in ref.values())
    assert summary["simulated"]
    seen = set(summary["conditions_without_exclusion"])  # a tiny plan: not every condition
    assert seen <= set(CONDITIONS) and len(seen) >= 2 and summary["conditions"]


def test_vit_study_observe_mis_and_a_simulated_pilot(vit_study, pilot):
    """The ConvNeXt study's observers and pilot: the multi-model test below (one pilot)."""
    from causalvis.observers.mis import MisSettings, study_mis

    _check_pilot(*pilot(vit_study))
    mis = study_mis(vit_study, settings=MisSettings(n_tasks=5))
    # natural extremes (the causal-occlusion task renders only maximally activating
    # feature visualizations, so no synthetic MIS: it needs both ends)
    assert set(mis["condition"]) == {"natural"} and len(mis) >= 1
    assert mis["mis"].between(0, 1).all() and mis["mis"].notna().all()


def test_multi_model_study_mixes_a_cnn_and_a_vit(tmp_path, factory_file, vit_study,
                                                 convnext_study, pilot):
    """models = [ConvNeXt, ViT], each with its own layer: the built single-model studies
    are reused as sub-studies (their stages are up to date), the parent merges them."""
    cnx, vit = f"python:{factory_file}:convnext", f"python:{factory_file}:vit"
    root = tmp_path / "multi"
    cfg = _settings(init_study(root, "quick", models=[cnx, vit]))
    cfg.units.model_layers = {cnx: [CNX_LAYER], vit: [VIT_LAYER]}
    cfg.save(StudyPaths(root).config)
    paths = StudyPaths(root)
    for model, built in ((cnx, convnext_study), (vit, vit_study)):
        sub = substudy_paths(paths, model)
        assert sub.root.parent == paths.substudies and len(sub.root.name) < 100
        assert sub.root.name.startswith("python__nets__")
        shutil.copytree(built, sub.root)
    stamps = {m: substudy_paths(paths, m).units.stat().st_mtime_ns for m in (cnx, vit)}
    build(root, progress=False)
    assert stamps == {m: substudy_paths(paths, m).units.stat().st_mtime_ns for m in (cnx, vit)}
    for model, layer in ((cnx, CNX_LAYER), (vit, VIT_LAYER)):
        sub_cfg = StudyConfig.load(substudy_paths(paths, model).config)
        assert sub_cfg.model.name == model and sub_cfg.units.layers == [layer]
    # one main and one catch trial per session: the same-side rule would exclude at random
    observers, summary = pilot(root, participants=6, min_sided_trials=5)
    models = summary["models"]
    assert models["available"] and models["models"] == [cnx, vit]
    assert models["labels"] == {cnx: "nets.py:convnext", vit: "nets.py:vit"}
    html = (paths.report / "index.html").read_text()
    assert "<td>nets.py:vit</td>" in html
