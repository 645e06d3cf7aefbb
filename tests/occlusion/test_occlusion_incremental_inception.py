"""Exact incremental inference on torchvision GoogLeNet and our InceptionV1 equals the full
truncated sweep.

Inception modules are forks of four branches concatenated on channels, the max-pools use
``ceil_mode``, ``BasicConv2d`` calls ``F.relu`` in its forward and ``transform_input``
is a per-channel affine on the input: each must be modelled exactly (random weights, BN
statistics calibrated on noise so the occlusion signal survives to the deep layers).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from causalvis.config import OcclusionConfig
from causalvis.models import CausalvisModel, load_model
from causalvis.presets import MODEL_UNITS
from causalvis.stimuli import occlusion_incremental
from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep, Unsupported, _pads
from causalvis.stimuli.sweep import sweep_layers

torchvision = pytest.importorskip("torchvision")

SIZE = 96  # conv1 48 px, maxpool1 (ceil) 24 px (floor would give 23), 12, 6, 3
# a branch BN inside a ceil-mode-pooled stage, the pool branch's BN, a module output, a
# stem BN and the last module
LAYERS = ["conv3.bn", "inception3b.branch2.1.bn", "inception4a.branch4.1.bn", "inception4a",
          "inception5b"]


@pytest.fixture(scope="module")
def googlenet() -> CausalvisModel:
    torch.manual_seed(0)
    net = torchvision.models.get_model("googlenet", weights=None, aux_logits=False,
                                       init_weights=False)
    net.transform_input = True
    for m in net.modules():  # statistics of noise inputs: unit-scale maps at every depth
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.train()
    with torch.no_grad():
        net(torch.randn(4, 3, SIZE, SIZE))
    net.eval()
    return CausalvisModel("torchvision:googlenet", net, (0.485, 0.456, 0.406),
                          (0.229, 0.224, 0.225), SIZE)


@pytest.fixture(scope="module")
def occluder() -> Occluder:
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Occluder(image, Grid(SIZE, 30, 33))  # offsets 0, 33, 66 (border): 9 positions


@pytest.fixture(scope="module")
def reference(googlenet, occluder):
    return occlusion_sweep(googlenet, occluder, LAYERS, batch_size=9)


def test_incremental_googlenet_equals_the_full_sweep(googlenet, occluder, reference):
    inc = sweep_layers(googlenet, occluder, LAYERS, OcclusionConfig().engine, 4)
    assert inc.engine == "incremental"  # the default engine ("auto") takes the fast path
    for layer in LAYERS:
        ref = reference.acts[layer]
        assert inc.acts[layer].shape == ref.shape
        delta = ref - reference.base[layer]
        assert np.abs(delta).max() > 1e-2, layer  # the patch really changes the layer
        scale = float(np.abs(ref).max())
        assert np.allclose(inc.acts[layer], ref, rtol=1e-4, atol=1e-5 * scale), layer
        assert np.allclose(inc.acts[layer] - inc.base[layer], delta, rtol=1e-3,
                           atol=1e-5 * scale), layer
        assert np.allclose(inc.base[layer], reference.base[layer], rtol=1e-4,
                           atol=1e-6 * scale)


@pytest.mark.parametrize(("size", "k", "s", "p"), [
    (112, 3, 2, 0), (56, 3, 2, 0), (28, 3, 2, 0), (14, 2, 2, 0), (7, 2, 2, 0),
    (48, 3, 2, 0), (13, 3, 1, 1), (6, 3, 2, 1), (5, 2, 2, 1), (9, 4, 3, 2),
])
def test_ceil_mode_pooling_pads_match_pytorch(size, k, s, p):
    # a ceil-mode max-pool = a floor-mode one on the map padded with -inf by _pads
    pool = nn.MaxPool2d(k, s, p, ceil_mode=True)
    x = torch.randn(1, 2, size, size)
    before, after = _pads(pool, size)
    padded = F.pad(x, (before, after, before, after), value=-float("inf"))
    assert torch.equal(F.max_pool2d(padded, k, s, 0), pool(x))


def test_the_zoo_googlenet_with_the_paper_units_is_incremental():
    model = load_model("torchvision:googlenet", weights="random")
    layers = MODEL_UNITS["torchvision:googlenet"]["paper2021"]["layers"]
    ops = IncrementalSweep(model, layers).ops
    assert [op.name for op in ops if op.kind == "mark"] == layers
    assert ops[0].name == "transform_input"  # set by the zoo for torchvision's weights


def test_unknown_parts_of_an_inception_module_fall_back(googlenet, occluder, caplog,
                                                        monkeypatch):
    with pytest.raises(NotImplementedError, match="'fc'"):
        IncrementalSweep(googlenet, ["fc"])  # after the global pool: no map
    monkeypatch.setattr(googlenet.net.inception3a, "branch5", nn.Identity(), raising=False)
    with pytest.raises(Unsupported, match="unknown parts"):
        IncrementalSweep(googlenet, ["inception3b"])
    assert IncrementalSweep(googlenet, ["conv3.bn"]).ops  # the net before it: still fine
    monkeypatch.setattr(occlusion_incremental, "_LOGGED", set())
    with caplog.at_level(logging.INFO, logger="causalvis.occlusion"):
        assert sweep_layers(googlenet, occluder, ["inception3b"], "auto", 9).engine == "full"
    assert any("Inception at inception3a" in r.getMessage() for r in caplog.records)


def test_a_unit_inside_a_branch_needs_no_later_branch(googlenet):
    ops = IncrementalSweep(googlenet, ["inception4a.branch2.1.bn"]).ops
    assert ops[-1].kind == "mark"
    assert not any(op.name.startswith(("inception4a.branch3", "inception4a.branch4"))
                   for op in ops)


V1_LAYERS = ["conv2d0_pre_relu_conv", "conv2d2_pre_relu_conv", "mixed3a_5x5_pre_relu_conv",
             "mixed3b", "mixed4a_pool_reduce_pre_relu_conv", "mixed4a"]


def test_incremental_inceptionv1_equals_the_full_sweep(occluder):
    # our Lucent-layout net: asymmetric stem padding, TF-'SAME' pools, LRN, no BN
    model = load_model("inceptionv1", weights="random")
    torch.manual_seed(0)
    with torch.no_grad():  # He-scaled weights: the occlusion signal survives the ReLUs
        for m in model.net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.normal_(0.0, 1.0).mul_((2.0 / m.weight[0].numel()) ** 0.5)
    ref = occlusion_sweep(model, occluder, V1_LAYERS, batch_size=9)
    inc = sweep_layers(model, occluder, V1_LAYERS, "auto", 4)
    assert inc.engine == "incremental"
    for layer in V1_LAYERS:
        delta = ref.acts[layer] - ref.base[layer]
        assert np.abs(delta).max() > 1e-2, layer
        scale = float(np.abs(ref.acts[layer]).max())
        assert np.allclose(inc.acts[layer], ref.acts[layer], rtol=1e-4, atol=1e-5 * scale), \
            layer
        assert np.allclose(inc.base[layer], ref.base[layer], rtol=1e-4, atol=1e-6 * scale)
