"""Feature visualization engine: transforms, objectives, render loop, MACO."""

from __future__ import annotations

import torch

from causalvis.featurevis import (
    ChannelMean,
    Direction,
    Diversity,
    FourierParam,
    MacoParam,
    MacoSettings,
    Neuron,
    PixelParam,
    RenderSettings,
    TransformSpec,
    natural_magnitude,
    render,
    render_maco,
    unit_objective,
)
from causalvis.featurevis.objectives import pairwise_gram_similarity
from causalvis.featurevis.param import make_generators
from causalvis.featurevis.transforms import jitter, random_rotate, random_scale
from causalvis.images import pil_to_tensor
from causalvis.models import probe_tensor

LAYER = "blocks.1.1"
SMALL = TransformSpec(jitter=4, scales=(1.0, 0.95, 1.05), rotate_degrees=5, jitter_after=2, out_size=48)


def _acts(model, x, layer=LAYER):
    from causalvis.models import ActivationProbe

    with ActivationProbe(model, [layer], mode="map", grad=True) as probe:
        return probe.run(x)


# -- transforms ---------------------------------------------------------------------------

def test_transforms_keep_gradients_per_image():
    x = torch.rand(3, 3, 40, 40, requires_grad=True)
    gens = make_generators([1, 2, 3])
    for fn in (
        lambda t: jitter(t, 6, gens),
        lambda t: random_scale(t, [0.9, 1.1], gens),
        lambda t: random_rotate(t, 10, gens),
        lambda t: SMALL(t, gens),
    ):
        x.grad = None
        y = fn(x)
        y.square().sum().backward()
        assert y.shape[0] == 3
        assert all(float(x.grad[i].abs().sum()) > 0 for i in range(3))


def test_identity_and_integer_jitter_are_exact():
    x = torch.rand(2, 3, 20, 20)
    ident = TransformSpec(jitter=0, scales=(), rotate_degrees=0, jitter_after=0)
    torch.testing.assert_close(ident(x, make_generators([0, 1])), x, atol=1e-6, rtol=0)
    gens = make_generators([5, 6])
    y = jitter(x, 4, gens)
    assert y.shape[-1] == 16
    for i in range(2):  # each image is some exact 16 px crop of itself
        crops = [x[i, :, a : a + 16, b : b + 16] for a in range(5) for b in range(5)]
        assert any(torch.allclose(y[i], c, atol=1e-5) for c in crops)


def test_draws_do_not_depend_on_batch_mates():
    x = torch.rand(2, 3, 32, 32)
    alone = SMALL(x[:1], make_generators([11]))
    together = SMALL(x, make_generators([11, 99]))
    torch.testing.assert_close(alone[0], together[0])


# -- objectives ---------------------------------------------------------------------------

def test_batched_objective_gives_each_image_its_own_unit_gradient(lite0):
    channels, seeds = [3, 7, 12], [21, 22, 23]

    def grads(chs, sds):
        param = FourierParam(sds, 40)
        x = SMALL(param(), make_generators(sds))
        obj = unit_objective(LAYER, chs, 1)
        (-obj(_acts(lite0, x)).sum()).backward()
        return param.spectrum.grad

    batched = grads(channels, seeds)
    for k, (c, s) in enumerate(zip(channels, seeds, strict=True)):
        single = grads([c], [s])
        torch.testing.assert_close(batched[k], single[0], rtol=1e-4, atol=1e-7)
    # and not some other unit's gradient
    assert not torch.allclose(batched[0], grads([channels[1]], [seeds[0]])[0], rtol=1e-2)


def test_objective_algebra_and_kinds():
    a = torch.randn(4, 6, 5, 5)
    acts = {"l": a}
    cm = ChannelMean("l", [0, 1, 2, 3])
    torch.testing.assert_close(cm(acts), torch.stack([a[i, i].mean() for i in range(4)]))
    torch.testing.assert_close((2 * cm - cm)(acts), cm(acts))
    torch.testing.assert_close(Neuron("l", 1)(acts), a[:, 1, 2, 2])
    v = torch.randn(6)
    torch.testing.assert_close(Direction("l", v)(acts), torch.einsum("nchw,c->n", a, v) / 25)
    div = Diversity("l", [0, 0, 1, 1])(acts)
    sim = pairwise_gram_similarity(a)
    # each image is coupled to its own group only
    torch.testing.assert_close(div, -torch.stack([sim[0, 1], sim[0, 1], sim[2, 3], sim[2, 3]]) / 2)


def test_diversity_lowers_pairwise_similarity(lite0):
    spec = TransformSpec(jitter=4, jitter_after=2, out_size=48)

    def mean_similarity(weight: float) -> float:
        seeds = [31, 32, 33]
        param = PixelParam(seeds, 40, sd=0.01)
        obj = unit_objective(LAYER, [5], 3, diversity=weight)
        settings = RenderSettings(steps=25, lr=0.05, transforms=spec, crop=0)
        result = render(lite0, obj, param, seeds, settings)
        x = torch.nn.functional.interpolate(result.images, size=48, mode="bilinear")
        with torch.no_grad():
            sim = pairwise_gram_similarity(_acts(lite0, x)[LAYER])
        return float(sim[~torch.eye(3, dtype=torch.bool)].mean())

    assert mean_similarity(100.0) < mean_similarity(0.0) - 0.02


# -- render loop --------------------------------------------------------------------------

def test_render_is_exactly_reproducible_and_leaves_the_model_clean(lite0):
    def run():
        seeds = [41, 42]
        param = FourierParam(seeds, 40)
        settings = RenderSettings(steps=6, transforms=SMALL, crop=2, thresholds=(3,))
        return render(lite0, unit_objective(LAYER, [1, 2], 1), param, seeds, settings)

    a, b = run(), run()
    assert torch.equal(a.images, b.images)
    assert a.history == b.history
    assert set(a.snapshots) == {3} and a.images.shape == (2, 3, lite0.input_size, lite0.input_size)
    assert all(p.grad is None and not p.requires_grad for p in lite0.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in lite0.modules())


def test_rendered_images_activate_their_unit_far_above_natural_images(lite0, samples):
    layer, channels = "blocks.1.1", [0, 5]
    ids = samples.ids[::12][:40]
    natural = torch.stack([pil_to_tensor(samples.load(i)) for i in ids])
    nat = probe_tensor(lite0, natural, [layer])[layer][:, channels]
    seeds = [51, 52]
    param = FourierParam(seeds, 96)  # quick-preset-like: 80 px shown at 224
    settings = RenderSettings(steps=16, crop=8, transforms=TransformSpec(jitter=4, jitter_after=2))
    result = render(lite0, unit_objective(layer, channels, 1), param, seeds, settings)
    # measured on 8-bit images at the model's input size, as participants see them
    shown = torch.stack([pil_to_tensor(_to_pil(im)) for im in result.images])
    act = probe_tensor(lite0, shown, [layer])[layer][[0, 1], channels]
    assert torch.all(act > nat.mean(0) + 2 * nat.std(0)), (act, nat.mean(0), nat.std(0))
    assert torch.all(act > nat.max(0).values)


def _to_pil(x):
    from causalvis.images import tensor_to_pil

    return tensor_to_pil(x)


def test_early_stop_stops(lite0):
    seeds = [61]
    param = FourierParam(seeds, 32)
    settings = RenderSettings(
        steps=200, lr=1e-9, transforms=SMALL, crop=0, early_stop=3, early_stop_tol=0.5
    )
    result = render(lite0, unit_objective(LAYER, [0], 1), param, seeds, settings)
    assert result.steps_run == 4  # step 1 sets the best, three steps without progress
    # while the objective still rises fast, patience is never used up
    param = FourierParam(seeds, 32)
    settings = RenderSettings(steps=10, lr=0.05, transforms=SMALL, crop=0, early_stop=4,
                              early_stop_tol=0.0)
    result = render(lite0, unit_objective(LAYER, [0], 1), param, seeds, settings)
    assert result.steps_run > 4


# -- MACO ---------------------------------------------------------------------------------

def test_maco_keeps_the_magnitude_spectrum_fixed(lite0, samples):
    arrays = [samples.load_array(i) for i in samples.ids[::40][:8]]
    mag = natural_magnitude(arrays, 48)
    assert mag.shape == (3, 48, 48)
    # natural images: power falls with frequency
    assert float(mag[:, 1, 1].mean()) > 5 * float(mag[:, 24, 24].mean())
    seeds = [71, 72]
    param = MacoParam(seeds, mag)
    before = param.phase.detach().clone()
    opt = torch.optim.Adam(param.params, lr=0.5)
    obj = unit_objective(LAYER, [3, 4], 1)
    for _ in range(3):
        opt.zero_grad()
        (-obj(_acts(lite0, param())).sum()).backward()
        opt.step()
    assert not torch.allclose(param.phase, before)
    with torch.no_grad():
        spatial = param.spatial()
        got = torch.fft.fft2(spatial.double(), norm="ortho").abs().float()
    torch.testing.assert_close(got, mag.expand_as(got), rtol=1e-4, atol=1e-4)


def test_render_maco_raises_the_objective(lite0, samples):
    arrays = [samples.load_array(i) for i in samples.ids[::40][:8]]
    mag = natural_magnitude(arrays, 64)
    obj = unit_objective(LAYER, [3], 1)
    result = render_maco(lite0, obj, mag, [81], MacoSettings(steps=6))
    assert result.images.shape == (1, 3, lite0.input_size, lite0.input_size)
    assert result.history[-1] > result.history[0]
