"""Image parameterizations: what the optimizer actually changes.

Feature visualizations optimize a *parameterization* of the image rather than its pixels:
Lucid's Fourier basis with 1/f spectrum scaling equalizes the learning rate across
frequencies (so high frequencies do not dominate), and decorrelated colour does the same
across colour directions. A sigmoid maps everything into valid [0, 1] RGB.

Every image of a batch draws its initial values from its own seeded generator, so an
image renders identically alone or inside a batch of other units.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

# Square root of the ImageNet colour-correlation matrix (Lucid's ``color_correlation_svd_sqrt``).
COLOR_CORRELATION_SVD_SQRT = np.asarray(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=np.float32
)
_MAX_NORM_SVD_SQRT = float(np.max(np.linalg.norm(COLOR_CORRELATION_SVD_SQRT, axis=0)))
COLOR_CORRELATION_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / _MAX_NORM_SVD_SQRT


def make_generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per image: per-image draws independent of the batch layout."""
    gens = []
    for seed in seeds:
        g = torch.Generator(device="cpu")
        g.manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
        gens.append(g)
    return gens


def per_image_randn(shape: Sequence[int], gens: Sequence[torch.Generator]) -> torch.Tensor:
    """``[N, *shape]`` standard normal values, image n drawn from ``gens[n]``."""
    return torch.stack([torch.randn(*shape, generator=g) for g in gens])


def recorrelate_colors(x: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour channels ``[N, 3, H, W]`` to correlated RGB (pre-sigmoid)."""
    m = torch.as_tensor(COLOR_CORRELATION_NORMALIZED, dtype=x.dtype, device=x.device)
    return torch.einsum("nchw,dc->ndhw", x, m)


def decorrelate_colors(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`recorrelate_colors`."""
    m = torch.as_tensor(COLOR_CORRELATION_NORMALIZED, dtype=torch.float64)
    inv = torch.linalg.inv(m).to(dtype=x.dtype, device=x.device)
    return torch.einsum("nchw,dc->ndhw", x, inv)


def rfft2d_freqs(h: int, w: int) -> np.ndarray:
    """Spatial frequency magnitude of each ``rfft2`` bin, ``[h, w // 2 + 1]``."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    return np.sqrt(fx * fx + fy * fy)


class ImageParam:
    """Base class: ``params`` for the optimizer, ``__call__()`` -> ``[N, 3, H, W]`` in [0, 1]."""

    params: list[torch.Tensor]
    size: int

    def __call__(self) -> torch.Tensor:
        return torch.sigmoid(self.raw())

    def raw(self) -> torch.Tensor:
        """The pre-sigmoid image."""
        raise NotImplementedError

    def __len__(self) -> int:
        return int(self.params[0].shape[0])


class FourierParam(ImageParam):
    """Lucid's FFT parameterization: spectrum scaled by 1/f, inverse rFFT, colour, sigmoid."""

    MAGIC = 4.0  # Lucid divides the spatial image by 4 so the sigmoid starts unsaturated

    def __init__(
        self,
        seeds: Sequence[int],
        size: int,
        *,
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.size = int(size)
        self.decorrelate = decorrelate
        freqs = rfft2d_freqs(self.size, self.size)
        scale = 1.0 / np.maximum(freqs, 1.0 / self.size) ** decay_power
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=device)[None, None]
        init = per_image_randn((3, self.size, self.size // 2 + 1, 2), make_generators(seeds)) * sd
        self.spectrum = init.to(device).requires_grad_(True)
        self.params = [self.spectrum]

    def raw(self) -> torch.Tensor:
        spec = torch.view_as_complex(self.spectrum) * self.scale
        img = torch.fft.irfft2(spec, s=(self.size, self.size), norm="ortho") / self.MAGIC
        return recorrelate_colors(img) if self.decorrelate else img


class PixelParam(ImageParam):
    """Plain pixels (optionally in decorrelated colour), for comparison with the Fourier basis."""

    def __init__(
        self,
        seeds: Sequence[int],
        size: int,
        *,
        sd: float = 0.01,
        decorrelate: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.size = int(size)
        self.decorrelate = decorrelate
        init = per_image_randn((3, self.size, self.size), make_generators(seeds)) * sd
        self.pixels = init.to(device).requires_grad_(True)
        self.params = [self.pixels]

    def raw(self) -> torch.Tensor:
        return recorrelate_colors(self.pixels) if self.decorrelate else self.pixels


def make_param(
    kind: str, seeds: Sequence[int], size: int, *, decorrelate: bool = True, device="cpu"
) -> ImageParam:
    if kind == "fourier":
        return FourierParam(seeds, size, decorrelate=decorrelate, device=device)
    if kind == "pixel":
        return PixelParam(seeds, size, decorrelate=decorrelate, device=device)
    raise ValueError(f"unknown parameterization {kind!r} (fourier or pixel)")
