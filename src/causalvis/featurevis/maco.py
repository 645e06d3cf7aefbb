"""MACO: magnitude-constrained optimization (Fel et al., 2023).

The Fourier *magnitude* of the image is fixed to the mean magnitude spectrum of natural
images; only the *phase* is optimized. The image thus keeps natural-image power at every
frequency, which avoids the high-frequency patterns of unconstrained visualizations. Each
step shows the model random crops of a larger canvas (plus a little noise); the final
image is the whole canvas resized to the model's input size.

The magnitude is estimated from the study's own natural images (nothing is downloaded).
The phase field is antisymmetrized (phi(-k) = -phi(k)), so the spectrum is Hermitian and
the image is real: the magnitude of the rendered image is *exactly* the fixed one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from causalvis.featurevis.objectives import Objective
from causalvis.featurevis.param import (
    ImageParam,
    decorrelate_colors,
    make_generators,
    per_image_randn,
    recorrelate_colors,
)
from causalvis.featurevis.render import (
    RenderResult,
    evaluate,
    frozen,
    image_seed,
    memory_format,
)
from causalvis.malloc import heap_allocations
from causalvis.models import ActivationProbe, CausalvisModel
from causalvis.models.fold import inference_model


def natural_magnitude(images: Iterable[np.ndarray], size: int) -> torch.Tensor:
    """Mean ``|fft2|`` ``[3, size, size]`` of uint8 RGB images (decorrelated colour space),
    each resized to ``size``; raises ValueError if there are no images."""
    total, n = None, 0
    # A Hann window removes the wrap-around edges of the (non-periodic) photos, which would
    # otherwise put a bright cross on the spectrum axes and grid lines into every image.
    hann = torch.hann_window(size, periodic=False, dtype=torch.float64)
    window = torch.outer(hann, hann)
    window = window / window.square().mean().sqrt()
    for arr in images:
        x = torch.from_numpy(np.array(arr, dtype=np.uint8)).permute(2, 0, 1)[None].float() / 255.0
        if x.shape[-1] != size or x.shape[-2] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        x = decorrelate_colors(x - x.mean(dim=(2, 3), keepdim=True))
        mag = torch.fft.fft2(x[0].double() * window, norm="ortho").abs()
        total = mag if total is None else total + mag
        n += 1
    if not n:
        raise ValueError("no natural images to estimate the magnitude spectrum from")
    mag = total / n
    return mag.float()


def antisymmetric(p: torch.Tensor) -> torch.Tensor:
    """``(p(k) - p(-k)) / 2`` over the last two axes (indices taken modulo the size)."""
    flipped = torch.roll(torch.flip(p, dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    return 0.5 * (p - flipped)


class MacoParam(ImageParam):
    """Fixed magnitude ``[3, S, S]``, optimized phase per image."""

    def __init__(
        self, seeds: Sequence[int], magnitude: torch.Tensor, *, device="cpu"
    ) -> None:
        self.size = int(magnitude.shape[-1])
        self.magnitude = magnitude.to(device=device, dtype=torch.float32)
        init = per_image_randn(tuple(magnitude.shape), make_generators(seeds)) * math.pi
        self.phase = init.to(device).requires_grad_(True)
        self.params = [self.phase]

    def spatial(self) -> torch.Tensor:
        """The real image whose ``|fft2|`` is exactly the fixed magnitude (decorrelated)."""
        phi = antisymmetric(self.phase)
        spectrum = torch.polar(self.magnitude.expand_as(phi), phi)
        return torch.fft.ifft2(spectrum, norm="ortho").real

    def raw(self) -> torch.Tensor:
        x = self.spatial()
        x = (x - x.mean(dim=(1, 2, 3), keepdim=True)) / (x.std(dim=(1, 2, 3), keepdim=True) + 1e-6)
        return recorrelate_colors(x)


@dataclass
class MacoSettings:
    steps: int = 256
    lr: float = 1.0
    crop_range: tuple[float, float] = (0.6, 1.0)  # crop side / canvas side
    noise: float = 0.05
    fold_norms: bool | None = None  # as RenderSettings.fold_norms
    heap_allocations: bool = True  # as RenderSettings.heap_allocations
    progress: bool = False
    desc: str = "maco"


def _random_crops(
    x: torch.Tensor, gens: Sequence[torch.Generator], rng: tuple[float, float], out: int
) -> torch.Tensor:
    """One random square crop per image, resized to ``out`` (one batched grid_sample)."""
    n, _, s, _ = x.shape
    thetas = []
    for g in gens:
        u = torch.rand(3, generator=g).tolist()
        frac = rng[0] + (rng[1] - rng[0]) * u[0]
        cx = (2 * u[1] - 1) * (1 - frac)
        cy = (2 * u[2] - 1) * (1 - frac)
        thetas.append([[frac, 0.0, cx], [0.0, frac, cy]])
    theta = torch.tensor(thetas, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, [n, 3, out, out], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def render_maco(
    model: CausalvisModel,
    objective: Objective,
    magnitude: torch.Tensor,
    seeds: Sequence[int],
    settings: MacoSettings,
) -> RenderResult:
    """Optimize the phases of ``len(seeds)`` images (one per seed) to maximize ``objective``."""
    device = model.device
    param = MacoParam(seeds, magnitude, device=device)
    gens = make_generators([image_seed(s, "maco-crops") for s in seeds])
    noise_gens = make_generators([image_seed(s, "maco-noise") for s in seeds])
    opt = torch.optim.NAdam(param.params, lr=settings.lr)
    history: list[float] = []
    size = model.input_size
    net = inference_model(model, settings.fold_norms)
    probe = ActivationProbe(net, objective.layers, mode="map", grad=True, channels_last=True)
    with heap_allocations(settings.heap_allocations and device.type == "cpu"), frozen(net), \
            memory_format(net, True), probe:
        bar = tqdm(range(1, settings.steps + 1), desc=settings.desc, disable=not settings.progress)
        for _ in bar:
            opt.zero_grad(set_to_none=True)
            x = _random_crops(param(), gens, settings.crop_range, size)
            if settings.noise:
                x = x + settings.noise * per_image_randn((3, size, size), noise_gens).to(device)
            values = objective({k: v.float() for k, v in probe.run(x).items()})
            (-values.sum()).backward()
            opt.step()
            history.append(float(values.detach().mean()))
        bar.close()
    with torch.no_grad():
        images = param()
        if images.shape[-1] != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        images = images.clamp(0, 1)
    values = evaluate(model, objective, images)
    return RenderResult(images.cpu(), values, {}, len(history), history)
