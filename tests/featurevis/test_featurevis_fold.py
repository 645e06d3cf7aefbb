"""BatchNorm folded into the convs for the render loop: same optimisation up to rounding,
the user's model untouched, the copy cached per model and rebuilt when weights change."""

from __future__ import annotations

import pytest
import torch

from causalvis.featurevis import (
    FourierParam,
    MacoSettings,
    RenderSettings,
    TransformSpec,
    render,
    render_maco,
    unit_objective,
)
from causalvis.featurevis.render import evaluate
from causalvis.models import ActivationProbe, load_model
from causalvis.models.fold import as_shifted_same, foldable_pairs, folded_model

SMALL = TransformSpec(jitter=4, scales=(1.0, 0.95, 1.05), rotate_degrees=5, jitter_after=2,
                      out_size=48)


@pytest.fixture(scope="module")
def resnet():
    """torchvision ResNet-18, random weights with non-trivial BatchNorm statistics."""
    torch.manual_seed(0)  # the conv weights too: the trajectories must not depend on the run
    model = load_model("torchvision:resnet18", weights="random")
    model.input_size = 48
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
    return model


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _run(model, layer, fold):
    seeds = [5, 6]
    settings = RenderSettings(steps=4, transforms=SMALL, crop=2, fold_norms=fold)
    return render(model, unit_objective(layer, [1, 2], 1), FourierParam(seeds, 40), seeds,
                  settings)


@pytest.mark.parametrize(("name", "layer"), [
    ("lite0", "blocks.1.1"),  # block output
    ("lite0", "blocks.2.0.bn1"),  # a BatchNormAct2d norm layer (its act's input)
    ("resnet", "layer2.0.bn2"),  # a plain BatchNorm2d norm layer (before the residual add)
    ("resnet", "layer2.1"),  # block output
])
def test_folded_render_matches_the_unfolded_one(name, layer, request):
    model = request.getfixturevalue(name)
    before = _state(model)
    a, b = _run(model, layer, True), _run(model, layer, False)
    assert a.history == pytest.approx(b.history, rel=2e-3, abs=1e-4)
    assert float((a.images - b.images).abs().max()) < 5e-3
    # the recorded values are the original model's
    again = evaluate(model, unit_objective(layer, [1, 2], 1), a.images)
    assert torch.allclose(a.values, again, rtol=1e-5, atol=1e-6), (a.values, again)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("forward" in vars(m) for m in model.modules())
    assert all(not p.requires_grad for p in folded_model(model).parameters())


def test_every_norm_after_a_conv_folds_and_taps_the_same_tensor(lite0, resnet):
    for model, count in ((lite0, 49), (resnet, 20)):
        assert len(foldable_pairs(model)) == count
        copy = folded_model(model)
        assert copy is not model and folded_model(model) is copy  # cached
        copy_bn = dict(copy.net.named_modules())
        for _conv, norm in foldable_pairs(model):
            assert "forward" in vars(copy_bn[norm])  # bypassed in the copy only
        norms = [n for _c, n in foldable_pairs(model)][::4]
        x = torch.rand(2, 3, 48, 48)
        with ActivationProbe(model, norms, mode="map", truncate=False) as probe:
            want = probe.run(x)
        with ActivationProbe(copy, norms, mode="map", truncate=False) as probe:
            got = probe.run(x)
        for n in norms:
            assert torch.allclose(got[n], want[n], rtol=1e-4, atol=1e-4 * want[n].abs().max())


def test_the_copy_is_rebuilt_when_the_weights_change(resnet):
    first = folded_model(resnet)
    bn = resnet.net.layer1[0].bn1
    saved = bn.running_mean.clone()
    with torch.no_grad():
        bn.running_mean.add_(1.0)
    try:
        second = folded_model(resnet)
        assert second is not first
        x = torch.rand(1, 3, 48, 48)
        with ActivationProbe(resnet, ["layer1.0.bn1"], mode="map") as probe:
            want = probe.run(x)["layer1.0.bn1"]
        with ActivationProbe(second, ["layer1.0.bn1"], mode="map") as probe:
            got = probe.run(x)["layer1.0.bn1"]
        assert torch.allclose(got, want, atol=1e-4)
    finally:
        with torch.no_grad():
            bn.running_mean.copy_(saved)


def test_maco_folds_too(lite0):
    magnitude = torch.rand(3, 40, 40)
    runs = [render_maco(lite0, unit_objective("blocks.1.1", [3], 1), magnitude, [9],
                        MacoSettings(steps=2, fold_norms=fold)) for fold in (True, False)]
    # the first step sees the same image; NAdam at lr 1 on phases then amplifies rounding
    assert runs[0].history[0] == pytest.approx(runs[1].history[0], rel=1e-4)
    assert runs[0].history[1] == pytest.approx(runs[1].history[1], rel=2e-2)


@pytest.mark.parametrize(("kernel", "stride", "groups"), [(3, 2, 4), (5, 2, 4), (4, 2, 1), (3, 1, 1)])
def test_same_convs_run_without_the_padded_copy_exactly(kernel, stride, groups):
    import copy
    import importlib

    same_cls = importlib.import_module("timm.layers.conv2d_same").Conv2dSame
    torch.manual_seed(1)
    conv = same_cls(4, 8, kernel, stride, groups=groups, bias=True)
    shifted = copy.deepcopy(conv)
    as_shifted_same(shifted)
    for hw in ((17, 20), (16, 16)):  # odd / even: one more pad after, or symmetric
        x = torch.randn(2, 4, *hw, requires_grad=True)
        want, got = conv(x), shifted(x)
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-6)
        gw, = torch.autograd.grad(want.square().sum(), x)
        gg, = torch.autograd.grad(got.square().sum(), x)
        assert torch.allclose(gg, gw, atol=1e-5)


def test_the_copy_runs_lites_same_convs_shifted(lite0):
    copy_modules = dict(folded_model(lite0).net.named_modules())
    same = [n for n, m in lite0.net.named_modules() if type(m).__name__ == "Conv2dSame"]
    assert len(same) == 5
    assert all("forward" in vars(copy_modules[n]) for n in same)
