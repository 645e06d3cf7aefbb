"""No-reference heuristic observers (PROTOCOL.md "Machine baselines").

Each one scores how much occluding a patch should hurt the unit, from the unoccluded
query alone, and predicts that the option whose patch hurts less keeps more activation:

* ``center``: occluding nearer the image centre hurts more. Distances are between the
  TRUE patch centre ((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2) and the image centre; the
  original code passed (x_start, x_end) and so ignored the column.
* ``variance``: occluding a low-variance (featureless) patch hurts less.
* ``saliency``: occluding a less salient patch hurts less (OpenCV's spectral-residual
  saliency; ``saliency_fine`` uses OpenCV's fine-grained static saliency).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.observers.trials import AssetReader, Box, Trial


def center_distance(box: Box, width: int, height: int) -> float:
    """Euclidean distance (px) from the box's true centre to the image centre."""
    cx, cy = box.center
    return float(np.hypot(cx - (width - 1) / 2.0, cy - (height - 1) / 2.0))


def patch_std(image: np.ndarray, box: Box) -> float:
    """Standard deviation of all pixel values (RGB, [0, 1]) inside the patch."""
    rows, cols = box.slices()
    patch = image[rows, cols].astype(np.float64) / 255.0
    if patch.size == 0:
        raise CausalvisError(f"box {box} lies outside the {image.shape[1]}x{image.shape[0]} query")
    return float(patch.std())


def saliency_map(image: np.ndarray, method: str = "spectral") -> np.ndarray:
    """A saliency map in [0, 1] of the query's size."""
    import cv2

    if method == "spectral":
        algo = cv2.saliency.StaticSaliencySpectralResidual_create()
    elif method == "fine":
        algo = cv2.saliency.StaticSaliencyFineGrained_create()
    else:
        raise CausalvisError(f"unknown saliency method {method!r}: spectral or fine")
    bgr = np.ascontiguousarray(image[..., ::-1])
    ok, sal = algo.computeSaliency(bgr)
    if not ok:
        raise CausalvisError("OpenCV could not compute a saliency map")
    sal = np.asarray(sal, dtype=np.float64)
    if sal.shape != image.shape[:2]:
        sal = cv2.resize(sal, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    span = sal.max() - sal.min()
    return (sal - sal.min()) / span if span > 0 else np.zeros_like(sal)


class CenterObserver:
    """Δ = (distance of a − distance of b) / image side: the farther patch keeps more."""

    name = "center"
    uses_references = False

    def deltas(self, trials: Sequence[Trial], reader: AssetReader) -> np.ndarray:
        out = np.empty(len(trials))
        for i, t in enumerate(trials):
            h, w = reader(t.query).shape[:2]
            da = center_distance(t.box_a, w, h)
            db = center_distance(t.box_b, w, h)
            out[i] = (da - db) / max(w, h)
        return out


class VarianceObserver:
    """Δ = std under b − std under a: the flatter patch keeps more."""

    name = "variance"
    uses_references = False

    def deltas(self, trials: Sequence[Trial], reader: AssetReader) -> np.ndarray:
        out = np.empty(len(trials))
        for i, t in enumerate(trials):
            img = reader(t.query)
            out[i] = patch_std(img, t.box_b) - patch_std(img, t.box_a)
        return out


class SaliencyObserver:
    """Δ = mean saliency under b − under a: the less salient patch keeps more."""

    uses_references = False

    def __init__(self, method: str = "spectral") -> None:
        self.method = method
        self.name = "saliency" if method == "spectral" else f"saliency_{method}"
        self._cache: dict[str, np.ndarray] = {}

    def _map(self, reader: AssetReader, query: str) -> np.ndarray:
        if query not in self._cache:
            self._cache[query] = saliency_map(reader(query), self.method)
        return self._cache[query]

    def deltas(self, trials: Sequence[Trial], reader: AssetReader) -> np.ndarray:
        out = np.empty(len(trials))
        for i, t in enumerate(trials):
            sal = self._map(reader, t.query)
            ra, ca = t.box_a.slices()
            rb, cb = t.box_b.slices()
            out[i] = float(sal[rb, cb].mean() - sal[ra, ca].mean())
        return out
