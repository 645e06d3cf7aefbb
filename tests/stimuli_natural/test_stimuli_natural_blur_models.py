"""Regression (issue 18, #7): the blur condition builds for non-EfficientNet models and for
lite0 with the full-sweep engine (the item's open probe once swallowed the search's pass)."""

from __future__ import annotations

import pytest
from natural_helpers import make_context, small_config

from causalvis.models import load_model
from causalvis.store.layout import read_json
from causalvis.store.units import read_units

CASES = {
    # model name -> unit layers (random weights: no download in tests)
    "timm:resnet18": ["layer1.0.bn1", "layer2.0"],
    "torchvision:googlenet": ["inception3a.branch2.1.bn", "inception3b"],
}


def _build_blur(root, cfg, model, samples):
    from causalvis.pipeline.blur import run_blur_stage
    from causalvis.pipeline.exemplars import run_exemplars_stage
    from causalvis.pipeline.scan import run_scan_stage
    from causalvis.pipeline.units import run_units_stage

    ctx = make_context(root, cfg, model, samples)
    for stage in (run_scan_stage, run_units_stage, run_exemplars_stage, run_blur_stage):
        stage(ctx)
    units = read_units(ctx.paths)
    assert units
    for unit in units:
        meta = read_json(ctx.paths.reference_meta("blur", unit.key))
        assert meta["images"], unit.key
        for item in meta["images"]:
            assert abs(item["grid_max"] - item["activation"]) < 1e-3


@pytest.mark.parametrize("name", sorted(CASES))
def test_blur_builds_for_random_weight_models(tmp_path, samples, name):
    cfg = small_config()
    cfg.model.name, cfg.model.weights = name, "random"
    cfg.units.layers = list(CASES[name])
    cfg.occlusion.engine = "auto"
    model = load_model(name, weights="random")
    _build_blur(tmp_path / "study", cfg, model, samples)


def test_blur_builds_for_lite0_with_full_engine(tmp_path, lite0, samples):
    cfg = small_config()
    cfg.occlusion.engine = "full"
    _build_blur(tmp_path / "study", cfg, lite0, samples)
