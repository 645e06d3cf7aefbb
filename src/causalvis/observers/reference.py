"""Reference-based observers: a simulated participant who uses the references.

A human in a reference condition looks at what each occlusion hides and asks whether
that is "the thing" the references show. We simulate this in the feature space of a
*perceptual* network that is not the studied one (embedded lite1 when the study uses
lite0, lite0 otherwise), so the observer cannot read the studied unit's weights.

* ``reference_patch``: embed the content each occlusion removes (the unoccluded query
  cropped to the box) and compare it with the references: the option whose removed
  content resembles the references *less* keeps more activation.
  Δ = s(removed_b, R) − s(removed_a, R).
* ``reference_image``: embed each occluded option image: the one that still resembles
  the references *more* keeps more activation. Δ = s(option_a, R) − s(option_b, R).

s(x, R) is the mean similarity of x to the reference embeddings (as in MIS): cosine for
model features and DreamSim, −distance for LPIPS (``observers.similarity``).
Trials without references (condition ``none``) get Δ = NaN: not applicable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from causalvis.errors import CausalvisError
from causalvis.observers.trials import AssetReader, Box, Trial

DEFAULT_DEPTHS = (0.35, 0.65, 0.9)


EMBEDDED = ("lite0", "lite1", "lite2")


def perceptual_model_for(*studied: str) -> str:
    """An embedded network that is none of the studied ones (the first free of lite0,
    lite1, lite2); lite1 when all of them are studied (then one model is judged in its own
    feature space, which the MIS output flags)."""
    return next((m for m in EMBEDDED if m not in studied), "lite1")


def default_layers(model, depths: Sequence[float] = DEFAULT_DEPTHS) -> list[str]:
    """Block outputs at a few relative depths (all layers if the net has no blocks)."""
    from causalvis.models import list_layers

    infos = [i for i in list_layers(model) if i.supported]
    if not infos:
        raise CausalvisError(
            f"{model.name}: no layer with a supported tensor layout for perceptual features"
        )
    blocks = [i for i in infos if i.is_block] or infos
    picks = [blocks[min(len(blocks) - 1, int(round(d * (len(blocks) - 1))))].name for d in depths]
    return list(dict.fromkeys(picks))


def to_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 HWC RGB -> float CHW in [0, 1] at ``size`` × ``size`` (bilinear, antialiased)."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float() / 255.0
    if x.shape[1:] != (size, size):
        x = F.interpolate(x[None], size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)[0]
    return x


class CachingEmbedder:
    """What every perceptual similarity offers: ``embed`` (``[N, D]``), caching by key, the
    ``metric`` its embeddings are compared with and ``describe()`` for the outputs."""

    metric = "cosine"  # or "neg_sq_euclidean"

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def embed_keyed(self, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Embed images by key, caching across calls (queries/references repeat a lot)."""
        todo = [k for k in items if k not in self._cache]
        if todo:
            for key, vec in zip(todo, self.embed([items[k] for k in todo]), strict=True):
                self._cache[key] = vec
        return {k: self._cache[k] for k in items}

    def embed_lazy(self, keys: Sequence[str], load: Callable[[str], np.ndarray]) -> np.ndarray:
        """``[len(keys), D]`` embeddings; ``load(key)`` decodes only keys not cached yet
        (a scan-sampled MIS touches the same few hundred images for every unit)."""
        todo = {k: load(k) for k in dict.fromkeys(keys) if k not in self._cache}
        if todo:
            self.embed_keyed(todo)
        return np.stack([self._cache[k] for k in keys])


class PerceptualEmbedder(CachingEmbedder):
    """Spatially pooled activations at a few layers, each L2-normalized, concatenated.

    Per-layer normalization gives every layer the same weight in the cosine similarity.
    Inputs of any size are resized (bilinear, antialiased) to the network's input size.
    """

    def __init__(self, model, layers: Sequence[str] | None = None, batch_size: int = 32) -> None:
        super().__init__()
        self.model = model
        self.layers = list(layers) if layers else default_layers(model)
        self.batch_size = batch_size

    def _to_tensor(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image, self.model.input_size)

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """``[N, D]`` unit-norm embeddings."""
        from causalvis.models import ActivationProbe

        if not images:
            return np.zeros((0, 0))
        parts = []
        with ActivationProbe(self.model, self.layers) as probe:
            for start in range(0, len(images), self.batch_size):
                chunk = images[start : start + self.batch_size]
                batch = torch.stack([self._to_tensor(im) for im in chunk])
                acts = probe.run(batch)
                feats = [F.normalize(acts[name].float().cpu(), dim=1) for name in self.layers]
                parts.append(F.normalize(torch.cat(feats, dim=1), dim=1).numpy())
        return np.concatenate(parts)

    def describe(self) -> dict:
        return {"similarity": "model features", "model": self.model.name,
                "layers": list(self.layers),
                "features": "spatial mean per layer, L2-normalized per layer, cosine"}


def metric_of(embedder) -> str:
    return getattr(embedder, "metric", "cosine")


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    rows, cols = box.slices()
    return image[rows, cols]


def similarity(x: np.ndarray, refs: np.ndarray, metric: str = "cosine") -> float:
    """Mean similarity of one embedding to a set: cosine (embeddings are unit-norm), or
    minus the squared distance (LPIPS)."""
    if metric == "neg_sq_euclidean":
        return float(-((refs - x) ** 2).sum(axis=1).mean())
    return float((refs @ x).mean())


class _ReferenceObserver:
    uses_references = True

    def __init__(self, embedder: CachingEmbedder) -> None:
        self.embedder = embedder

    def _ref_embeddings(
        self, trials: Sequence[Trial], reader: AssetReader
    ) -> dict[str, np.ndarray]:
        refs = {r: reader(r) for t in trials for r in t.references}
        return self.embedder.embed_keyed({f"img:{k}": v for k, v in refs.items()})

    def _items(self, trial: Trial, reader: AssetReader) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _delta(self, trial: Trial, emb: dict[str, np.ndarray], refs: np.ndarray,
               metric: str) -> float:
        raise NotImplementedError

    def deltas(self, trials: Sequence[Trial], reader: AssetReader) -> np.ndarray:
        usable = [t for t in trials if t.references]
        ref_emb = self._ref_embeddings(usable, reader)
        items: dict[str, np.ndarray] = {}
        for t in usable:
            items.update(self._items(t, reader))
        emb = self.embedder.embed_keyed(items)
        out = np.full(len(trials), np.nan)
        for i, t in enumerate(trials):
            if t.references:
                refs = np.stack([ref_emb[f"img:{r}"] for r in t.references])
                out[i] = self._delta(t, emb, refs, metric_of(self.embedder))
        return out


class ReferencePatchObserver(_ReferenceObserver):
    """Δ = s(removed_b, R) − s(removed_a, R)."""

    name = "reference_patch"

    @staticmethod
    def _key(query: str, box: Box) -> str:
        return f"crop:{query}:{box.x0},{box.y0},{box.x1},{box.y1}"

    def _items(self, trial: Trial, reader: AssetReader) -> dict[str, np.ndarray]:
        query = reader(trial.query)
        return {self._key(trial.query, b): crop(query, b) for b in (trial.box_a, trial.box_b)}

    def _delta(self, trial: Trial, emb: dict[str, np.ndarray], refs: np.ndarray,
               metric: str) -> float:
        sa = similarity(emb[self._key(trial.query, trial.box_a)], refs, metric)
        sb = similarity(emb[self._key(trial.query, trial.box_b)], refs, metric)
        return sb - sa


class ReferenceImageObserver(_ReferenceObserver):
    """Δ = s(option_a, R) − s(option_b, R)."""

    name = "reference_image"

    def _items(self, trial: Trial, reader: AssetReader) -> dict[str, np.ndarray]:
        return {f"img:{a}": reader(a) for a in (trial.option_a, trial.option_b)}

    def _delta(self, trial: Trial, emb: dict[str, np.ndarray], refs: np.ndarray,
               metric: str) -> float:
        return similarity(emb[f"img:{trial.option_a}"], refs, metric) - similarity(
            emb[f"img:{trial.option_b}"], refs, metric
        )
