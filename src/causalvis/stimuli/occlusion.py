"""The occlusion sweep: every channel of a layer for every patch position, in one pass.

Pure numeric core (arrays in, arrays out; the model is the only object). A square patch
of side ``round(patch_fraction * S)`` is placed at every position of a stride grid whose
last position ``S - P`` is always included, so the right and bottom borders are covered.
Occluded images are built in **uint8 pixel space**, exactly as they are later saved as
PNG (the mean colour is rounded to uint8), so the sweep's numbers are the numbers of the
bytes a participant is served. Each occluded image is computed once, through a forward
pass truncated after the layer (``ActivationProbe``), and all channels are read from it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from causalvis.malloc import heap_allocations
from causalvis.models import ActivationProbe, CausalvisModel

FILLS = ("mean", "grey", "blur", "noise")
GREY_U8 = 128  # 0.5 in [0, 1], rounded half up to uint8


def patch_side(size: int, fraction: float) -> int:
    """Patch side in pixels: ``round(fraction * size)`` (90 px for 40 % of 224)."""
    side = int(np.floor(fraction * size + 0.5))
    if not 1 <= side <= size:
        raise ValueError(f"patch fraction {fraction} gives a {side}px patch on a {size}px image")
    return side


def grid_offsets(size: int, patch: int, stride: int) -> np.ndarray:
    """Patch offsets along one axis: ``0, stride, ...`` plus the border offset ``size - patch``."""
    if stride < 1:
        raise ValueError("stride must be >= 1")
    last = size - patch
    offsets = list(range(0, last + 1, stride))
    if offsets[-1] != last:
        offsets.append(last)
    return np.asarray(offsets, dtype=np.int64)


@dataclass(frozen=True)
class Grid:
    """All patch positions of an ``size`` image: row-major over (y, x) offsets."""

    size: int
    patch: int
    stride: int

    @property
    def offsets(self) -> np.ndarray:
        return grid_offsets(self.size, self.patch, self.stride)

    @property
    def shape(self) -> tuple[int, int]:
        n = len(self.offsets)
        return n, n

    def positions(self) -> np.ndarray:
        """``[n_positions, 2]`` (y, x) top-left corners, row-major."""
        off = self.offsets
        ys, xs = np.meshgrid(off, off, indexing="ij")
        return np.stack([ys.ravel(), xs.ravel()], axis=1)

    def box(self, index: int) -> tuple[int, int, int, int]:
        """Box ``(x0, y0, x1, y1)`` in pixels (x1/y1 exclusive) of flat position ``index``."""
        off = self.offsets
        iy, ix = divmod(int(index), len(off))
        y, x = int(off[iy]), int(off[ix])
        return x, y, x + self.patch, y + self.patch

    @classmethod
    def for_config(cls, size: int, patch_fraction: float, stride: int) -> Grid:
        return cls(size, patch_side(size, patch_fraction), stride)


# -- fills -------------------------------------------------------------------------------

def patch_means(image: np.ndarray, positions: np.ndarray, patch: int) -> np.ndarray:
    """Mean RGB of the pixels under each patch, rounded half up to uint8: ``[N, 3]``.

    Computed exactly with an integer summed-area table (no float accumulation error).
    """
    img = np.asarray(image, dtype=np.int64)
    sat = np.zeros((img.shape[0] + 1, img.shape[1] + 1, 3), dtype=np.int64)
    sat[1:, 1:] = img.cumsum(0).cumsum(1)
    y0, x0 = positions[:, 0], positions[:, 1]
    y1, x1 = y0 + patch, x0 + patch
    sums = sat[y1, x1] - sat[y0, x1] - sat[y1, x0] + sat[y0, x0]
    area = patch * patch
    # round half up in integers: floor((2*sum + area) / (2*area))
    return ((2 * sums + area) // (2 * area)).astype(np.uint8)


def blur_image(image: np.ndarray, kernel: int = 21, sigma: float | None = None) -> np.ndarray:
    """Gaussian blur of a uint8 image (OpenCV's sigma rule from the kernel when None)."""
    return cv2.GaussianBlur(np.ascontiguousarray(image), (kernel, kernel), sigma or 0)


def noise_image(size: int, seed: int) -> np.ndarray:
    """A seeded uniform-noise uint8 canvas; a patch shows the canvas pixels under it."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@dataclass
class Occluder:
    """Builds occluded uint8 images of one query for any set of patch positions."""

    image: np.ndarray  # uint8 [S, S, 3]
    grid: Grid
    fill: str = "mean"
    blur_kernel: int = 21
    blur_sigma: float | None = None
    seed: int = 0
    canvas: np.ndarray | None = None  # fill="canvas": the patch shows these pixels

    def __post_init__(self) -> None:
        if self.fill == "canvas":
            if self.canvas is None or self.canvas.shape != np.shape(self.image):
                raise ValueError("fill='canvas' needs a canvas with the image's shape")
        elif self.fill not in FILLS:
            raise ValueError(f"unknown fill {self.fill!r}: choose one of {', '.join(FILLS)}")
        self.image = np.array(self.image, dtype=np.uint8, copy=True, order="C")
        s = self.grid.size
        if self.image.shape != (s, s, 3):
            raise ValueError(f"query image must be {s}x{s}x3 uint8, got {self.image.shape}")
        self._positions = self.grid.positions()
        self._canvas: np.ndarray | None = None
        self._means: np.ndarray | None = None
        if self.fill == "canvas":
            self._canvas = np.array(self.canvas, dtype=np.uint8, copy=True, order="C")
        elif self.fill == "blur":
            self._canvas = blur_image(self.image, self.blur_kernel, self.blur_sigma)
        elif self.fill == "noise":
            self._canvas = noise_image(s, self.seed)
        elif self.fill == "mean":
            self._means = patch_means(self.image, self._positions, self.grid.patch)

    @property
    def positions(self) -> np.ndarray:
        return self._positions

    def __len__(self) -> int:
        return len(self._positions)

    def fill_values(self, indices: np.ndarray) -> np.ndarray:
        """Per-position fill: ``[n, 3]`` colours (mean, grey) or a full canvas (blur, noise)."""
        if self._means is not None:
            return self._means[indices]
        if self._canvas is not None:
            return self._canvas
        return np.full((len(indices), 3), GREY_U8, dtype=np.uint8)

    def build(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """Occluded images ``[n, S, S, 3]`` uint8 for flat position ``indices``."""
        return self.build_tensor(indices, torch.device("cpu")).permute(0, 2, 3, 1).numpy()

    def build_tensor(
        self, indices: Sequence[int] | np.ndarray, device: torch.device
    ) -> torch.Tensor:
        """Occluded images ``[n, 3, S, S]`` uint8 on ``device`` (vectorized with a mask)."""
        base = torch.from_numpy(self.image).to(device).permute(2, 0, 1).unsqueeze(0)
        return self._where(indices, base, lambda t: t, None)

    def build_float(
        self, indices: Sequence[int] | np.ndarray, device: torch.device
    ) -> torch.Tensor:
        """``to_float(build_tensor(indices))``, bit for bit, built in one pass straight into a
        channels-last float batch (what the network reads): the sweep's input costs one
        write per value instead of a uint8 image, its float copy and a layout copy."""
        base = to_float(torch.from_numpy(self.image).to(device).permute(2, 0, 1).unsqueeze(0))
        n = len(np.asarray(indices))
        s = self.grid.size
        out = torch.empty((n, 3, s, s), dtype=torch.float32, device=device,
                          memory_format=torch.channels_last)
        return self._where(indices, base, to_float, out)

    def _where(self, indices, base: torch.Tensor, cast, out: torch.Tensor | None) -> torch.Tensor:
        idx = np.asarray(indices, dtype=np.int64)
        s, p = self.grid.size, self.grid.patch
        device = base.device
        values = cast(torch.from_numpy(np.ascontiguousarray(self.fill_values(idx))).to(device))
        canvas = values.dim() == 3  # a canvas [S, S, 3], else colours [n, 3]
        fill = values.permute(2, 0, 1).unsqueeze(0) if canvas else values[:, :, None, None]
        if device.type == "cpu" and out is not None:
            return self._paste(idx, base, fill, canvas, out)
        pos = torch.from_numpy(self._positions[idx]).to(device)
        ar = torch.arange(s, device=device)
        rows = (ar[None, :] >= pos[:, :1]) & (ar[None, :] < pos[:, :1] + p)  # [n, S]
        cols = (ar[None, :] >= pos[:, 1:]) & (ar[None, :] < pos[:, 1:] + p)
        mask = (rows[:, :, None] & cols[:, None, :]).unsqueeze(1)  # [n, 1, S, S]
        if out is None:
            return torch.where(mask, fill, base)
        return torch.where(mask, fill, base, out=out)

    def _paste(self, idx: np.ndarray, base: torch.Tensor, fill: torch.Tensor, canvas: bool,
               out: torch.Tensor) -> torch.Tensor:
        """What the masked ``torch.where`` gives, as one copy of the image per row and one
        block copy per patch: on a CPU ~10x cheaper than building and reading a full-size
        mask (40-80 ms per 100 images at 224 px, ~10 % of the truncated forward)."""
        s, p = self.grid.size, self.grid.patch
        out.copy_(base.expand(len(idx), -1, -1, -1))
        for b, (r, c) in enumerate(self._positions[idx].tolist()):
            r0, r1, c0, c1 = max(r, 0), min(r + p, s), max(c, 0), min(c + p, s)
            if r1 > r0 and c1 > c0:
                out[b, :, r0:r1, c0:c1] = fill[0, :, r0:r1, c0:c1] if canvas else fill[b]
        return out

    def build_patches(
        self, indices: Sequence[int] | np.ndarray, device: torch.device
    ) -> torch.Tensor:
        """The patch pixels alone, ``[n, 3, P, P]`` uint8: what ``build_tensor`` puts under
        each patch (the incremental engine needs nothing else of an occluded image)."""
        idx = np.asarray(indices, dtype=np.int64)
        p = self.grid.patch
        values = torch.from_numpy(np.ascontiguousarray(self.fill_values(idx))).to(device)
        if values.dim() == 2:  # colours [n, 3]
            return values[:, :, None, None].expand(len(idx), 3, p, p)
        pos = torch.from_numpy(self._positions[idx]).to(device)
        ar = torch.arange(p, device=device)
        rows, cols = pos[:, :1] + ar, pos[:, 1:] + ar  # [n, P]
        return values[rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # canvas [S, S, 3]


# -- the sweep ---------------------------------------------------------------------------

@dataclass
class Sweep:
    """Activations of every channel of each layer at every patch position of one query."""

    grid: Grid
    acts: dict[str, np.ndarray]  # layer -> float32 [ny, nx, C]
    base: dict[str, np.ndarray]  # layer -> float32 [C], the unoccluded query
    engine: str = "full"  # which engine computed it: "full" | "incremental"

    def unit_map(self, layer: str, channel: int) -> np.ndarray:
        return self.acts[layer][:, :, channel]


def to_float(images_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``[n, 3, S, S]`` -> [0, 1] float, the exact decode of the saved bytes."""
    return images_u8.float().div_(255.0)


def occlusion_sweep(
    model: CausalvisModel,
    occluder: Occluder,
    layers: Sequence[str],
    *,
    batch_size: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> Sweep:
    """One batched, truncated pass over all positions; all channels of all ``layers``.
    On the CPU the batches' buffers come from the malloc heap (:mod:`causalvis.malloc`):
    a batch of 64 occluded images is 38 MB, above glibc's largest mmap threshold."""
    device = model.device
    n = len(occluder)
    ny, nx = occluder.grid.shape
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with heap_allocations(device.type == "cpu"), ActivationProbe(model, list(layers)) as probe:
        base_img = torch.from_numpy(occluder.image).permute(2, 0, 1).unsqueeze(0).to(device)
        base = {k: v[0].float().cpu().numpy() for k, v in probe.run(to_float(base_img)).items()}
        for start in range(0, n, batch_size):
            idx = np.arange(start, min(n, start + batch_size))
            acts = probe.run(occluder.build_float(idx, device))
            for layer in layers:
                out[layer].append(acts[layer].float().cpu())
            if on_batch is not None:
                on_batch(len(idx))
    maps = {
        layer: torch.cat(parts).numpy().reshape(ny, nx, -1).astype(np.float32)
        for layer, parts in out.items()
    }
    return Sweep(occluder.grid, maps, base)
