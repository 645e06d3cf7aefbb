"""Random, differentiable, batched image transforms (Lucid's transformation robustness).

Each transform is an affine map in pixel coordinates; a pipeline composes all of them
and resamples the batch *once* with ``grid_sample`` (one interpolation per step instead of
one per transform, and every image gets its own random draw in the same call). Draws come
from per-image generators, so an image's transforms do not depend on its batch mates.

Conventions: pixel centres at integer coordinates, ``align_corners=False``. Jitter crops
``d`` pixels (random offset 0..d, as Lucid's random crop), so the canvas shrinks; scale and
rotation act about the centre and keep the size (Lucid resizes the canvas instead; with a
per-image scale the batch must share one size). Outside the canvas is filled by reflection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _randint(g: torch.Generator, high_inclusive: int) -> int:
    return int(torch.randint(0, high_inclusive + 1, (1,), generator=g)) if high_inclusive > 0 else 0


def _choice(g: torch.Generator, values: Sequence[float]) -> float:
    return float(values[int(torch.randint(0, len(values), (1,), generator=g))])


def translation(tx: float, ty: float) -> torch.Tensor:
    return torch.tensor([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]], dtype=torch.float64)


def about_centre(m: torch.Tensor, size: float) -> torch.Tensor:
    """Linear map ``m`` (3x3) applied about the centre of a ``size`` canvas."""
    c = (size - 1) / 2.0
    return translation(c, c) @ m @ translation(-c, -c)


def scaling(s: float) -> torch.Tensor:
    return torch.diag(torch.tensor([s, s, 1.0], dtype=torch.float64))


def rotation(degrees: float) -> torch.Tensor:
    a = math.radians(degrees)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def apply_affine(
    x: torch.Tensor, out_to_in: torch.Tensor, out_size: int, padding_mode: str = "reflection"
) -> torch.Tensor:
    """Resample ``x`` ``[N, C, H, W]`` on an ``out_size`` grid; ``out_to_in`` ``[N, 3, 3]``
    maps output pixel coordinates to input pixel coordinates (differentiable in ``x``)."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(out_size, dtype=torch.float64),
        torch.arange(out_size, dtype=torch.float64),
        indexing="ij",
    )
    base = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(-1, 3)  # [P, 3]
    src = torch.einsum("pk,njk->npj", base, out_to_in.to(torch.float64))[..., :2]
    gx = (src[..., 0] + 0.5) / w * 2.0 - 1.0
    gy = (src[..., 1] + 0.5) / h * 2.0 - 1.0
    grid = torch.stack([gx, gy], dim=-1).reshape(n, out_size, out_size, 2)
    grid = grid.to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def pad(x: torch.Tensor, width: int, mode: str = "constant", value: float = 0.5) -> torch.Tensor:
    """Pad every side by ``width`` (Lucid pads with constant 0.5 or reflection)."""
    if width <= 0:
        return x
    if mode == "constant":
        return F.pad(x, (width,) * 4, mode="constant", value=value)
    return F.pad(x, (width,) * 4, mode=mode)


@dataclass(frozen=True)
class TransformSpec:
    """Lucid-style robustness transforms, in order: pad, jitter, scale, rotate, jitter.

    ``out_size`` (optional) resizes the result, folded into the same resampling: the render
    loop uses it so the model sees content at the scale of the final, model-size image.
    """

    pad: int = 0
    pad_mode: str = "constant"
    jitter: int = 16
    scales: tuple[float, ...] = (1.0, 0.975, 1.025, 0.95, 1.05)
    rotate_degrees: float = 5.0
    jitter_after: int = 8
    out_size: int | None = None
    padding_mode: str = "reflection"

    def angles(self) -> list[float]:
        """Lucid draws whole degrees from a list: -r..r."""
        r = int(math.floor(self.rotate_degrees))
        return [float(a) for a in range(-r, r + 1)] or [0.0]

    def cropped_size(self, size: int) -> int:
        return size + 2 * self.pad - self.jitter - self.jitter_after

    def draw(self, size: int, gens: Sequence[torch.Generator]) -> tuple[torch.Tensor, int]:
        """Per-image output->input maps ``[N, 3, 3]`` (for the padded canvas) and out size."""
        canvas = size + 2 * self.pad
        mid = canvas - self.jitter
        final = mid - self.jitter_after
        if final < 8:
            raise ValueError(f"transforms leave only {final} px of a {size} px canvas")
        out = self.out_size or final
        angles = self.angles()
        mats = []
        for g in gens:
            o1 = _randint(g, self.jitter)
            s = _choice(g, self.scales) if self.scales else 1.0
            a = _choice(g, angles)
            o2 = _randint(g, self.jitter_after)
            # output pixel -> resized-away coordinates -> second crop -> rotation^-1 ->
            # scale^-1 -> first crop -> canvas
            resize = translation(-0.5, -0.5) @ scaling(final / out) @ translation(0.5, 0.5)
            m = (
                translation(o1, o1)
                @ about_centre(scaling(1.0 / s), mid)
                @ about_centre(rotation(-a), mid)
                @ translation(o2, o2)
                @ resize
            )
            mats.append(m)
        return torch.stack(mats), out

    def __call__(self, x: torch.Tensor, gens: Sequence[torch.Generator]) -> torch.Tensor:
        """Transform a batch ``[N, 3, S, S]`` with one random draw per image."""
        if len(gens) != x.shape[0]:
            raise ValueError("need one generator per image")
        mats, out = self.draw(x.shape[-1], gens)
        x = pad(x, self.pad, self.pad_mode)
        return apply_affine(x, mats, out, self.padding_mode)


def jitter(x: torch.Tensor, d: int, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """Random crop of ``S - d`` pixels per image (offset 0..d)."""
    return TransformSpec(jitter=d, scales=(), rotate_degrees=0, jitter_after=0)(x, gens)


def random_scale(
    x: torch.Tensor, scales: Sequence[float], gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """Zoom each image about its centre by a factor drawn from ``scales`` (same size)."""
    return TransformSpec(jitter=0, scales=tuple(scales), rotate_degrees=0, jitter_after=0)(
        x, gens
    )


def random_rotate(
    x: torch.Tensor, degrees: float, gens: Sequence[torch.Generator]
) -> torch.Tensor:
    """Rotate each image about its centre by whole degrees drawn from -degrees..degrees."""
    return TransformSpec(jitter=0, scales=(), rotate_degrees=degrees, jitter_after=0)(x, gens)
