"""Probes measure through the BatchNorm-folded copy by default (models.fold): the same
numbers as the model as loaded within float rounding, hooks on the copy, the user's model
untouched, and folding never applied twice."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from causalvis.models import ActivationProbe, CausalvisModel
from causalvis.models.fold import fold_norms_default, folded_model, is_folded

LAYERS = ["blocks.1.1", "blocks.3.2", "blocks.5.3"]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(b.abs().max()) + 1e-6
    return torch.allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


def test_inference_probes_fold_and_match_the_model_as_loaded(lite0):
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with ActivationProbe(lite0, LAYERS, fold_norms=False) as probe:
        assert probe.model is lite0
        plain = probe.run(x)
    with ActivationProbe(lite0, LAYERS) as probe:
        assert is_folded(probe.model) and probe.model is not lite0
        folded = probe.run(x)
    for layer in LAYERS:
        assert _close(folded[layer], plain[layer]), layer
        assert not torch.equal(folded[layer], plain[layer])  # really another computation
    # the user's model is not modified: its norms still normalize
    bn = lite0.net.blocks[1][1].bn1
    assert "forward" not in vars(bn)


def test_gradient_probes_and_the_switch_keep_the_model(lite0, monkeypatch):
    with ActivationProbe(lite0, LAYERS[:1], mode="map", grad=True) as probe:
        assert probe.model is lite0  # a render optimizes through its own copy
    monkeypatch.setenv("CAUSALVIS_FOLD_NORMS", "0")
    assert not fold_norms_default()
    with ActivationProbe(lite0, LAYERS[:1]) as probe:
        assert probe.model is lite0


def test_folding_a_folded_copy_is_the_copy_itself(lite0):
    once = folded_model(lite0)
    assert folded_model(once) is once
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with ActivationProbe(once, LAYERS[:1]) as a, ActivationProbe(lite0, LAYERS[:1]) as b:
        assert torch.equal(a.run(x)[LAYERS[0]], b.run(x)[LAYERS[0]])


def test_a_replaced_submodule_rebuilds_the_copy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)).eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 2.0)
    model = CausalvisModel("tiny", net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 16)
    first = folded_model(model)
    assert folded_model(model) is first  # cached
    net[2] = nn.Identity()  # a different network: the cached copy no longer fits
    second = folded_model(model)
    assert second is not first and type(second.net[2]) is nn.Identity


@pytest.mark.parametrize("value, expected", [("0", False), ("false", False), ("1", True),
                                             ("", True)])
def test_the_switch_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("CAUSALVIS_FOLD_NORMS", value)
    assert fold_norms_default() is expected


def test_a_studys_setting_beats_the_process_default(lite0, monkeypatch):
    """A study's model.fold_norms travels on the model its stages load, so the environment
    of a resumed run or of a Ray / SLURM worker cannot mix folded and unfolded numbers."""
    from causalvis.models.fold import folds, inference_model

    monkeypatch.setenv("CAUSALVIS_FOLD_NORMS", "0")
    assert lite0.fold_norms is None and not folds(lite0)  # outside a study: the process's
    monkeypatch.setattr(lite0, "fold_norms", True)
    assert folds(lite0) and is_folded(inference_model(lite0))
    with ActivationProbe(lite0, LAYERS[:1]) as probe:
        assert is_folded(probe.model)
    monkeypatch.delenv("CAUSALVIS_FOLD_NORMS")
    monkeypatch.setattr(lite0, "fold_norms", False)
    assert inference_model(lite0) is lite0
    with ActivationProbe(lite0, LAYERS[:1]) as probe:
        assert probe.model is lite0


def test_the_config_switch_reaches_items_and_keeps_default_digests():
    import hashlib
    import json

    from causalvis.config import StudyConfig
    from causalvis.pipeline.items import model_spec

    on = StudyConfig()
    off = StudyConfig.from_dict({"model": {"fold_norms": False}})
    assert on.model.fold_norms and "fold_norms" not in model_spec(on)
    assert model_spec(off)["fold_norms"] is False
    assert on.digest("model") != off.digest("model")
    # studies built before the switch existed keep their stage digests
    section = {k: v for k, v in on.model_dump(mode="json")["model"].items() if k != "fold_norms"}
    old = hashlib.sha256(json.dumps({"model": section}, sort_keys=True).encode()).hexdigest()
    assert on.digest("model") == old[:16]


def test_items_load_the_model_with_the_studys_setting():
    from causalvis.pipeline.items import item_model

    off = item_model({"name": "lite0", "fold_norms": False}, "cpu")
    on = item_model({"name": "lite0"}, "cpu")
    assert off is not on and off.fold_norms is False and on.fold_norms is True
    with ActivationProbe(off, LAYERS[:1]) as probe:
        assert probe.model is off
