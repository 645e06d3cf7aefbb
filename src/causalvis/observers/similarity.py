"""The perceptual similarity behind MIS and the reference observers, pluggable.

* a model name (``lite1``, ``timm:…``, anything ``models.load_model`` takes; the offline
  default picks an embedded net that is not the studied one): cosine of spatially pooled
  features at a few depths (``reference.PerceptualEmbedder``);
* ``dreamsim`` (``dreamsim:TYPE``, TYPE default ``ensemble``): DreamSim (Fu et al. 2023),
  the MIS paper's choice; cosine of its embeddings (DreamSim distance = 1 − cosine);
* ``lpips`` (``lpips:alex`` default, ``lpips:vgg``, ``lpips:squeeze``): LPIPS (Zhang et al.
  2018) at its native 64 px; similarity = −LPIPS distance, computed exactly from
  per-image features (the weighted, channel-normalised maps), see :class:`LpipsEmbedder`.

``dreamsim`` and ``lpips`` are optional packages (``pip install 'causalvis[perceptual]'``),
imported only when asked for; their weights are read from a local cache and never
downloaded here: a missing package or missing weights is one ``CausalvisError`` line.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from causalvis.errors import CausalvisError
from causalvis.observers.reference import CachingEmbedder, to_tensor

EXTERNAL = ("dreamsim", "lpips")
DREAMSIM_CACHE_ENV = "CAUSALVIS_DREAMSIM_CACHE"
DREAMSIM_TYPES = ("ensemble", "dino_vitb16", "open_clip_vitb32", "clip_vitb32",
                  "dinov2_vitb14", "synclr_vitb16", "dino_vitb16_patch", "dinov2_vitb14_patch")
LPIPS_NETS = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth",
              "squeeze": "squeezenet1_1-b8a52dc0.pth"}


def is_external(name: str | None) -> bool:
    """Whether ``name`` names a similarity package rather than a model."""
    return bool(name) and name.partition(":")[0] in EXTERNAL


def _import(package: str):
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise CausalvisError(
            f"perceptual similarity {package!r} needs the {package} package, which is not "
            f"installed ({exc}): pip install 'causalvis[perceptual]' (or {package})"
        ) from exc


def dreamsim_cache_dir(weights: str | None = None) -> Path:
    """Where DreamSim's weights are looked for: ``--perceptual-weights DIR``, else
    ``$CAUSALVIS_DREAMSIM_CACHE``, else ``~/.cache/dreamsim``."""
    if weights:
        return Path(weights).expanduser()
    env = os.environ.get(DREAMSIM_CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dreamsim"


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _batched(embedder, images: Sequence[np.ndarray],
             features: Callable[[torch.Tensor], torch.Tensor]) -> np.ndarray:
    """``[N, D]``: ``features`` of batches of [0, 1] images at the embedder's input size, on
    its device, without autograd (the one loop of the package-backed similarities)."""
    if not images:
        return np.zeros((0, 0))
    out = []
    with torch.no_grad():
        for start in range(0, len(images), embedder.batch_size):
            x = torch.stack([to_tensor(im, embedder.input_size)
                             for im in images[start:start + embedder.batch_size]])
            out.append(features(x.to(embedder.device)))
    return torch.cat(out).numpy()


class DreamSimEmbedder(CachingEmbedder):
    """DreamSim embeddings (unit norm); similarity = cosine."""

    metric = "cosine"
    input_size = 224

    def __init__(self, kind: str = "ensemble", *, weights: str | None = None,
                 device: str = "cpu", batch_size: int = 16) -> None:
        super().__init__()
        if kind not in DREAMSIM_TYPES:
            raise CausalvisError(f"dreamsim: unknown type {kind!r} "
                                 f"(choose from {', '.join(DREAMSIM_TYPES)})")
        package = _import("dreamsim")
        cache = dreamsim_cache_dir(weights)
        if not cache.is_dir() or not any(p.name.startswith(kind) for p in cache.iterdir()):
            raise CausalvisError(
                f"dreamsim: no {kind} weights in {cache} and causalvis does not download: "
                f"fetch them once online (python -c \"from dreamsim import dreamsim; "
                f"dreamsim(pretrained=True, cache_dir='{cache}', dreamsim_type='{kind}')\") or "
                f"pass --perceptual-weights DIR / set {DREAMSIM_CACHE_ENV}"
            )
        try:
            self.net, _ = package.dreamsim(pretrained=True, device=device, cache_dir=str(cache),
                                           dreamsim_type=kind)
        except (OSError, RuntimeError, ValueError) as exc:  # a download attempt offline
            raise CausalvisError(f"dreamsim: cannot load the {kind} weights from {cache} "
                                 f"offline: {str(exc).splitlines()[0] if str(exc) else exc}") \
                from exc
        self.kind, self.cache, self.device, self.batch_size = kind, cache, device, batch_size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return _batched(self, images,
                        lambda x: F.normalize(self.net.embed(x).float().cpu(), dim=1))

    def describe(self) -> dict:
        return {"similarity": "dreamsim", "model": f"dreamsim:{self.kind}",
                "weights": str(self.cache),
                "features": "DreamSim embedding (224 px), cosine"}


class LpipsEmbedder(CachingEmbedder):
    """LPIPS as an embedding: per layer the channel-normalised features times √w (the
    learned non-negative channel weights), divided by √(H·W), flattened and concatenated.
    The squared Euclidean distance of two such embeddings is exactly LPIPS(x, y); the
    similarity is its negative (``metric = "neg_sq_euclidean"``)."""

    metric = "neg_sq_euclidean"
    input_size = 64  # LPIPS was trained on 64 px patches (and the embedding stays small)

    def __init__(self, net: str = "alex", *, device: str = "cpu", batch_size: int = 32) -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise CausalvisError(f"lpips: unknown network {net!r} "
                                 f"(choose from {', '.join(LPIPS_NETS)})")
        package = _import("lpips")
        ckpt = _torch_hub_checkpoints() / LPIPS_NETS[net]
        if not ckpt.is_file():
            raise CausalvisError(
                f"lpips: the {net} backbone weights are not in the torch hub cache ({ckpt}) and "
                f"causalvis does not download: fetch them once online (python -c \"import "
                f"lpips; lpips.LPIPS(net='{net}')\") or copy the file there"
            )
        try:
            self.net = package.LPIPS(net=net, verbose=False).to(device).eval()
        except (OSError, RuntimeError, ValueError) as exc:
            raise CausalvisError(f"lpips: cannot load the {net} network offline: {exc}") from exc
        self.backbone, self.device, self.batch_size = net, device, batch_size

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        return _batched(self, images, lambda x: self._features(x * 2 - 1).cpu())

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.net.net.forward(self.net.scaling_layer(x))
        parts = []
        for f, lin in zip(feats, self.net.lins, strict=True):
            f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)  # lpips.normalize_tensor
            w = lin.model[-1].weight.detach().clamp(min=0).reshape(1, -1, 1, 1)
            parts.append((f * w.sqrt() / np.sqrt(f.shape[2] * f.shape[3])).flatten(1))
        return torch.cat(parts, dim=1).float()

    def describe(self) -> dict:
        return {"similarity": "lpips", "model": f"lpips:{self.backbone}", "weights": None,
                "features": "LPIPS (64 px), similarity = -LPIPS distance"}


def make_similarity(name: str, *, weights: str | None = None, device: str = "cpu"):
    """The embedder for ``name``: ``dreamsim[:TYPE]``, ``lpips[:NET]`` or a model name."""
    package, _, variant = name.partition(":")
    if package == "dreamsim":
        return DreamSimEmbedder(variant or "ensemble", weights=weights, device=device)
    if package == "lpips":
        return LpipsEmbedder(variant or "alex", device=device)
    from causalvis.models import load_model
    from causalvis.observers.reference import PerceptualEmbedder

    return PerceptualEmbedder(load_model(name, weights=weights, device=device))
