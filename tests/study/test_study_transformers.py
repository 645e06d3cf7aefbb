"""Tiny studies (random weights) beyond channels-first CNNs (issue 20): a ViT's token layer
and a channels-last ConvNeXt layer, both as ``python:`` factory modules the test writes,
build end to end through trials, references (natural) and sessions; the occlusion stage says which
engine ran (the full sweep: the incremental engine is EfficientNet-only) and the scan
records the token policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from causalvis.config import StudyConfig
from causalvis.pipeline.build import build, init_study
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


def _tiny(root: Path, model: str, layer: str, conditions: list[str]) -> Path:
    cfg = init_study(root, "quick", model=model)
    cfg.images.max_images = 40
    cfg.units.layers = [layer]
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_top = 30
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 2
    cfg.exemplars.n_image_sets = 1
    cfg.conditions.names = conditions
    cfg.conditions.n_references = 2
    cfg.occlusion.stride = 16
    cfg.featurevis.also_render = []  # feature visualization of token layers:
    # tests/foundation/test_token_layers.py (both methods, cheaper than a stage run)
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
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
    return _tiny(root, f"python:{factory_file}:vit", "blocks.1.mlp.fc1",
                 ["none", "natural"])


@pytest.fixture(scope="module")
def convnext_study(tmp_path_factory, factory_file):
    root = tmp_path_factory.mktemp("cnx") / "study"
    return _tiny(root, f"python:{factory_file}:convnext", "stages.1.blocks.0.mlp.fc1",
                 ["none", "natural"])


def _check_built(root: Path, layer: str) -> StudyPaths:
    paths = StudyPaths(root)
    units = read_units(paths)
    assert units and all(u.layer == layer for u in units)
    assert (paths.stimuli / "trials_base.csv").is_file()
    assert (paths.bundle / "sessions.json").is_file()
    for unit in units:
        for result in paths.occlusion.glob(f"{unit.key}/set*.npz"):
            assert read_occlusion(result).engine == "full"
    assert any(paths.occlusion.glob("*/set*.npz"))
    return paths


def test_vit_token_study_builds_end_to_end(vit_study):
    paths = _check_built(vit_study, "blocks.1.mlp.fc1")
    assert read_index(paths).tokens == "patch"
    assert StudyConfig.load(paths.config).model.tokens == "patch"


def test_channels_last_study_builds_end_to_end(convnext_study):
    paths = _check_built(convnext_study, "stages.1.blocks.0.mlp.fc1")
    assert read_index(paths).tokens is None  # no token layer scanned: nothing recorded
