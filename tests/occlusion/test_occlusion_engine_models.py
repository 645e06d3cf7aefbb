"""``occlusion.engine = "auto"`` never crashes and never mis-computes (issue 18, item 4).

One small variant per timm family (random weights, ``pretrained=False``, 64 px input, two
layers, 9 patch positions): ``auto`` must equal the full truncated sweep. The families the
incremental engine understands must really use it; every other one must fall back with
one log line naming the module type. ``timm.list_models`` patterns covered:
``efficientnet_lite*``, ``tf_efficientnet_lite*``, ``efficientnet_b*``, ``mobilenetv2_*``,
``mobilenetv3_*``, ``tf_mobilenetv3_*minimal*``, ``mobilenetv4_conv_*``, ``mixnet_*``,
``efficientnet_es*`` / ``tf_efficientnet_es*`` (EdgeTPU), ``efficientnetv2_*`` /
``tf_efficientnetv2_*``, ``mnasnet_*``, ``convnext_*``, ``resnet*`` / ``seresnet*`` (timm)
and torchvision's ``resnet*``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

from causalvis.models import CausalvisModel
from causalvis.stimuli import occlusion_incremental
from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep, Unsupported
from causalvis.stimuli.sweep import sweep_layers

timm = pytest.importorskip("timm")

SIZE = 64
BLOCKS = ["blocks.0.0", "blocks.2.0"]
# arch -> (layers, module type that forces the full sweep; None = incremental engine)
ARCHS: dict[str, tuple[list[str], str | None]] = {
    "efficientnet_lite0": (BLOCKS, None),
    "tf_efficientnet_lite0": (BLOCKS, None),  # Conv2dSame ('same' padding)
    "mobilenetv2_035": (BLOCKS, None),
    "tf_mobilenetv3_small_minimal_100": (BLOCKS, None),
    "mnasnet_small": (BLOCKS, None),
    "efficientnet_b0": (BLOCKS, "SqueezeExcite"),
    "mobilenetv3_small_050": (BLOCKS, "SqueezeExcite"),
    "mobilenetv4_conv_small_035": (["blocks.1.1.bn1", "blocks.2.0"], "ConvBnAct"),
    "mixnet_s": (["blocks.1.0", "blocks.2.0"], "MixedConv2d"),
    "efficientnet_es": (BLOCKS, "EdgeResidual"),
    "tf_efficientnetv2_b0": (["blocks.1.0", "blocks.2.0"], "ConvBnAct"),
    "convnext_atto": (["stages.0", "stages.1"], None),
    # ResNets: block outputs and plain BatchNorm2d norm layers (the shortcut's included)
    "resnet18": (["bn1", "layer1.0", "layer2.0.downsample.1", "layer2.1.bn2", "layer4.1"],
                 None),
    "resnet50": (["layer1.0", "layer2.0", "layer3.1.bn3"], None),
    "torchvision:resnet18": (["layer1.1", "layer2.0", "layer3.0.bn1", "layer4.0"], None),
    "resnet10t": (["layer1.0", "layer2.0"], "AvgPool2d"),  # deep stem fine; avg-pool shortcut
    "seresnet18": (["layer1.0"], "SEModule"),
}


def _model(arch: str) -> CausalvisModel:
    torch.manual_seed(0)
    if arch.startswith("torchvision:"):
        import torchvision

        net = torchvision.models.get_model(arch.split(":", 1)[1], weights=None)
    else:
        net = timm.create_model(arch, pretrained=False)
    for m in net.modules():  # BN statistics off the defaults, so BN is not the identity
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            if arch.startswith(("resnet", "torchvision:")):  # timm zero-inits the last BN
                m.weight.data.uniform_(0.5, 1.5)
    return CausalvisModel(arch, net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), SIZE)


def _occluder() -> Occluder:
    image = np.random.default_rng(1).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Occluder(image, Grid(SIZE, 24, 20))  # offsets 0, 20, 40: 9 positions


def _first_block_type(model: CausalvisModel, name: str) -> str:
    return type(model.net.get_submodule(name)).__name__


@pytest.mark.parametrize("arch", list(ARCHS))
def test_auto_equals_the_full_sweep(arch, caplog, monkeypatch):
    layers, blocker = ARCHS[arch]
    model = _model(arch)
    occ = _occluder()
    monkeypatch.setattr(occlusion_incremental, "_LOGGED", set())
    with caplog.at_level(logging.INFO, logger="causalvis.occlusion"):
        if blocker is None:
            IncrementalSweep(model, layers)  # really on the fast path
        else:
            with pytest.raises(Unsupported) as info:
                IncrementalSweep(model, layers)
            assert info.value.module_type == blocker
        auto = sweep_layers(model, occ, layers, "auto", 4)
        sweep_layers(model, occ, layers, "auto", 4)  # a second image: no second line
    ref = occlusion_sweep(model, occ, layers, batch_size=9)
    lines = [r.getMessage() for r in caplog.records if "incremental engine" in r.getMessage()]
    assert len(lines) == (0 if blocker is None else 1)
    assert all(blocker in line for line in lines)
    for layer in layers:
        assert auto.acts[layer].shape == ref.acts[layer].shape
        scale = float(np.abs(ref.acts[layer]).max()) + 1e-6
        assert np.allclose(auto.acts[layer], ref.acts[layer], rtol=1e-4, atol=1e-5 * scale), \
            (arch, layer)
        assert np.allclose(auto.base[layer], ref.base[layer], rtol=1e-4, atol=1e-5 * scale)


def test_a_spatial_module_that_is_no_conv_is_never_taken_for_pointwise():
    # Before: any non-Conv2d module counted as pointwise, so a stride-1 pooling inside a
    # block was applied to the window alone, silently wrong near its edges.
    model = _model("efficientnet_lite0")
    model.net.blocks[1][0].aa = nn.AvgPool2d(3, 1, 1)
    layers = ["blocks.1.0"]
    with pytest.raises(Unsupported, match="AvgPool2d at blocks.1.0.aa"):
        IncrementalSweep(model, layers)
    occ = _occluder()
    auto = sweep_layers(model, occ, layers, "auto", 9)
    ref = occlusion_sweep(model, occ, layers, batch_size=9)
    assert np.allclose(auto.acts["blocks.1.0"], ref.acts["blocks.1.0"], rtol=1e-4, atol=1e-6)


def test_unknown_parts_of_a_known_block_are_refused():
    model = _model("mobilenetv2_035")
    block = model.net.blocks[1][0]
    block.extra = nn.Conv2d(4, 4, 3, padding=1)  # a part the engine does not know
    with pytest.raises(Unsupported, match="unknown parts"):
        IncrementalSweep(model, ["blocks.1.0"])
    assert _first_block_type(model, "blocks.1.0") == "InvertedResidual"


def test_a_dictionary_on_a_resnet_block_is_incremental():
    from causalvis.models.dictionary import Dictionary

    model = _model("resnet18")
    g = torch.Generator().manual_seed(3)
    model.derived["sae"] = Dictionary("layer2.0", torch.randn(128, 32, generator=g) * 0.2,
                                      torch.zeros(32), torch.zeros(128))
    layers = ["sae", "layer2.0"]
    occ = _occluder()
    inc = sweep_layers(model, occ, layers, "incremental", 4)
    ref = occlusion_sweep(model, occ, layers, batch_size=9)
    assert inc.engine == "incremental"
    for layer in layers:
        scale = float(np.abs(ref.acts[layer]).max()) + 1e-6
        assert np.allclose(inc.acts[layer], ref.acts[layer], rtol=1e-4, atol=1e-5 * scale)
        assert np.allclose(inc.base[layer], ref.base[layer], rtol=1e-4, atol=1e-5 * scale)


def test_resnet_layers_outside_blocks_and_norms_are_refused():
    model = _model("resnet18")
    with pytest.raises(NotImplementedError, match="layer1.0.conv1"):
        IncrementalSweep(model, ["layer1.0.conv1"])  # a conv, not a catalogue layer
    with pytest.raises(Unsupported, match="unknown parts"):
        model.net.layer1[0].extra = nn.Conv2d(64, 64, 3, padding=1)
        IncrementalSweep(model, ["layer1.0"])


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_the_folded_engine_equals_the_model_as_loaded(arch):
    """The engine runs on the BatchNorm-folded copy by default; the ResNet path's own
    conv + BN folding must not scale a folded pair a second time."""
    layers = ARCHS[arch][0][:2]
    model, occ = _model(arch), _occluder()
    folded = IncrementalSweep(model, layers).run(occ, batch_size=4)
    plain = IncrementalSweep(model, layers, fold_norms=False).run(occ, batch_size=4)
    for layer in layers:
        scale = float(np.abs(plain.acts[layer]).max()) + 1e-6
        assert np.allclose(folded.acts[layer], plain.acts[layer], rtol=1e-4,
                           atol=1e-5 * scale), (arch, layer)
