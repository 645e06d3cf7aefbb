"""Objectives: per-image values to *maximize*, computed from recorded layer activations.

An objective maps ``{layer: [N, C, H, W]}`` to a value per image ``[N]``. Objectives index
the batch (image n optimizes ``channels[n]``), so many units of one layer render in one
batch: the loss is the sum over images, and the gradient each image receives comes only
from its own term (diversity couples images of the same group only). Objectives add,
subtract, negate and scale like numbers: ``ChannelMean(...) + 100 * Diversity(...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

Acts = Mapping[str, torch.Tensor]


class Objective:
    """Base class; subclasses implement :meth:`values` and list the ``layers`` they read."""

    layers: tuple[str, ...] = ()

    def values(self, acts: Acts) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, acts: Acts) -> torch.Tensor:
        return self.values(acts)

    def __add__(self, other: Objective | float) -> Objective:
        if isinstance(other, int | float):
            return self if other == 0 else _Lambda(self.layers, lambda a: self(a) + other)
        return Sum([self, other])

    __radd__ = __add__

    def __mul__(self, k: float) -> Objective:
        if not isinstance(k, int | float):
            return NotImplemented
        return Scaled(self, float(k))

    __rmul__ = __mul__

    def __neg__(self) -> Objective:
        return Scaled(self, -1.0)

    def __sub__(self, other: Objective) -> Objective:
        return self + (-other)


class _Lambda(Objective):
    def __init__(self, layers: Sequence[str], fn: Callable[[Acts], torch.Tensor]) -> None:
        self.layers = tuple(layers)
        self.fn = fn

    def values(self, acts: Acts) -> torch.Tensor:
        return self.fn(acts)


class Sum(Objective):
    def __init__(self, parts: Sequence[Objective]) -> None:
        flat: list[Objective] = []
        for p in parts:
            flat.extend(p.parts if isinstance(p, Sum) else [p])
        self.parts = flat
        self.layers = tuple(dict.fromkeys(layer for p in flat for layer in p.layers))

    def values(self, acts: Acts) -> torch.Tensor:
        out = self.parts[0](acts)
        for p in self.parts[1:]:
            out = out + p(acts)
        return out


class Scaled(Objective):
    def __init__(self, inner: Objective, k: float) -> None:
        self.inner, self.k = inner, k
        self.layers = inner.layers

    def values(self, acts: Acts) -> torch.Tensor:
        return self.k * self.inner(acts)


def _index(channels: Sequence[int] | int, n: int, device) -> torch.Tensor:
    if isinstance(channels, int):
        channels = [channels] * n
    if len(channels) != n:
        raise ValueError(f"objective has {len(channels)} channels for a batch of {n} images")
    return torch.as_tensor(list(channels), dtype=torch.long, device=device)


class ChannelMean(Objective):
    """Spatial mean of channel ``channels[n]`` for image n (the unit activation)."""

    def __init__(self, layer: str, channels: Sequence[int] | int) -> None:
        self.layer = layer
        self.channels = channels
        self.layers = (layer,)

    def values(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layer]
        idx = _index(self.channels, a.shape[0], a.device)
        picked = a[torch.arange(a.shape[0], device=a.device), idx]  # [N, H, W]
        return picked.float().mean(dim=(1, 2))


class Neuron(ChannelMean):
    """One spatial position (default: the centre) of channel ``channels[n]``."""

    def __init__(
        self, layer: str, channels: Sequence[int] | int, y: int | None = None, x: int | None = None
    ) -> None:
        super().__init__(layer, channels)
        self.y, self.x = y, x

    def values(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layer]
        idx = _index(self.channels, a.shape[0], a.device)
        y = a.shape[2] // 2 if self.y is None else self.y
        x = a.shape[3] // 2 if self.x is None else self.x
        return a[torch.arange(a.shape[0], device=a.device), idx, y, x].float()


class Direction(Objective):
    """Mean over positions of the dot product of the activation vector with a direction
    (``[C]`` shared, or ``[N, C]`` per image), as Lucid's ``direction``."""

    def __init__(self, layer: str, vectors: torch.Tensor) -> None:
        self.layer = layer
        self.vectors = torch.as_tensor(vectors, dtype=torch.float32)
        self.layers = (layer,)

    def values(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layer].float()
        v = self.vectors.to(a.device)
        if v.dim() == 1:
            v = v.expand(a.shape[0], -1)
        return torch.einsum("nchw,nc->n", a, v) / (a.shape[2] * a.shape[3])


class Diversity(Objective):
    """Negative Gram-matrix cosine similarity between images of the same group (Lucid's
    diversity). Image n gets ``-sum_{m != n, same group} cos(G_n, G_m) / group_size``; the
    sum over a group equals Lucid's diversity term for that group's batch."""

    def __init__(self, layer: str, groups: Sequence[int]) -> None:
        self.layer = layer
        self.groups = list(groups)
        self.layers = (layer,)

    def values(self, acts: Acts) -> torch.Tensor:
        a = acts[self.layer].float()
        n, c = a.shape[:2]
        if len(self.groups) != n:
            raise ValueError(f"diversity has {len(self.groups)} groups for {n} images")
        flat = a.reshape(n, c, -1)
        gram = torch.bmm(flat, flat.transpose(1, 2)).reshape(n, -1)
        gram = F.normalize(gram, dim=1)
        sim = gram @ gram.T  # [N, N] cosine similarities
        g = torch.as_tensor(self.groups, device=a.device)
        same = (g[:, None] == g[None, :]) & ~torch.eye(n, dtype=torch.bool, device=a.device)
        size = (g[:, None] == g[None, :]).sum(dim=1).float()
        return -(sim * same).sum(dim=1) / size


def pairwise_gram_similarity(acts: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of Gram matrices between all images ``[N, N]`` (for diagnostics)."""
    a = acts.float()
    flat = a.reshape(a.shape[0], a.shape[1], -1)
    gram = F.normalize(torch.bmm(flat, flat.transpose(1, 2)).reshape(a.shape[0], -1), dim=1)
    return gram @ gram.T


def unit_objective(
    layer: str,
    channels: Sequence[int],
    n_images: int,
    diversity: float = 0.0,
    sign: float = 1.0,
) -> Objective:
    """The paper's objective for several units of one layer: image ``u * n_images + i`` shows
    unit ``channels[u]``; channel mean (``sign=-1`` minimizes) + diversity within each unit."""
    per_image = [c for c in channels for _ in range(n_images)]
    # Lucid's channel objective is the mean over the unit's batch, hence 1 / n_images: this
    # keeps the diversity weight (100) on the paper's scale relative to the channel term.
    obj: Objective = ChannelMean(layer, per_image) * (sign / n_images)
    if diversity > 0 and n_images > 1:
        groups = [u for u in range(len(channels)) for _ in range(n_images)]
        obj = obj + diversity * Diversity(layer, groups)
    return obj
