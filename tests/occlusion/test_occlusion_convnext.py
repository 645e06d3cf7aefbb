"""Exact incremental inference on timm ConvNeXt (issue 22): equals the full sweep.

96 px input, a 12 px patch at 9 positions: the changed window stays smaller than the map
through stage 0 and the stage-1 downsample (a 7x7 depthwise conv grows it by 6 a block),
then covers the whole map; random weights with a large layer scale, so the blocks'
residual branches matter.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from causalvis.models import CausalvisModel
from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import Unsupported
from causalvis.stimuli.sweep import IncrementalSweep, sweep_layers

timm = pytest.importorskip("timm")

SIZE = 96
# an early block, a stage output after a downsample, an inner norm, a late block
LAYERS = ["stem.1", "stages.0.blocks.0", "stages.1.downsample.0", "stages.1",
          "stages.1.blocks.0.norm", "stages.3.blocks.1"]


def _model(arch: str = "convnext_atto", **kw) -> CausalvisModel:
    torch.manual_seed(0)
    net = timm.create_model(arch, pretrained=False, **kw)
    for m in net.modules():
        if getattr(m, "gamma", None) is not None:  # default 1e-6 would hide the branch
            m.gamma.data.uniform_(0.5, 1.5)
    return CausalvisModel(arch, net, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), SIZE)


@pytest.fixture(scope="module")
def models() -> dict[bool, CausalvisModel]:
    return {conv_mlp: _model(conv_mlp=conv_mlp) for conv_mlp in (True, False)}


@pytest.fixture(scope="module")
def occ() -> Occluder:
    image = np.random.default_rng(2).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    return Occluder(image, Grid(SIZE, 12, 42))  # offsets 0, 42, 84


# convnext_atto runs its MLP as 1x1 convs (conv_mlp); conv_mlp=False is the channels-last
# Linear MLP of convnext_tiny and up, whose internal layers are read permuted
@pytest.mark.parametrize("conv_mlp, extra", [(True, "stages.2.blocks.1.mlp"),
                                             (False, "stages.2.blocks.1.mlp.fc1")])
def test_convnext_incremental_equals_the_full_sweep(models, occ, conv_mlp, extra):
    model = models[conv_mlp]
    layers = [*LAYERS, extra]
    auto = sweep_layers(model, occ, layers, "auto", 4)
    assert auto.engine == "incremental"  # auto picks it
    ref = occlusion_sweep(model, occ, layers, batch_size=9)
    for layer in layers:
        assert auto.acts[layer].shape == ref.acts[layer].shape, layer
        scale = float(np.abs(ref.acts[layer]).max()) + 1e-6
        assert np.allclose(auto.acts[layer], ref.acts[layer], rtol=1e-4, atol=1e-5 * scale), \
            layer
        assert np.allclose(auto.base[layer], ref.base[layer], rtol=1e-4, atol=1e-5 * scale)


def test_the_window_is_smaller_than_the_map_in_stage_0(models, occ):
    # the test above really exercises the window arithmetic, not whole-map convolutions
    inc = IncrementalSweep(models[True], ["stages.0"])
    seen: list[int] = []
    orig = inc._conv

    def spy(conv, win, off, base_in, i):
        seen.append(win.shape[-1] - base_in.shape[-1])
        return orig(conv, win, off, base_in, i)

    inc._conv = spy
    inc.run(occ, batch_size=9)
    assert seen and all(d < 0 for d in seen[1:])  # after the stem: windows, not maps


def test_global_or_unknown_parts_fall_back(models, monkeypatch):
    with pytest.raises(Unsupported) as info:  # ConvNeXt-V2: global response norm
        IncrementalSweep(_model("convnextv2_atto"), ["stages.0"])
    assert info.value.module_type == "GlobalResponseNormMlp"
    model = models[False]
    with pytest.raises(NotImplementedError, match="conv_dw"):  # not a catalogue layer
        IncrementalSweep(model, ["stages.1.blocks.0.conv_dw"])
    block = model.net.stages[1].blocks[0]
    monkeypatch.setattr(block.conv_dw, "dilation", (2, 2))  # as output_stride=16 builds
    with pytest.raises(Unsupported, match="dilated"):
        IncrementalSweep(model, ["stages.1"])
    monkeypatch.undo()
    monkeypatch.setattr(block, "shortcut", nn.Conv2d(80, 80, 1))
    with pytest.raises(Unsupported, match="shortcut"):
        IncrementalSweep(model, ["stages.1"])
