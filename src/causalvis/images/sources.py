"""Image sources: a folder on disk, or ``samples`` (the embedded natural-image set).

A source is an ordered list of string ids plus ``load(id)`` returning a model-size RGB
image. Loading never crashes a run: :meth:`ImageSource.iter_images` skips files that
cannot be decoded and records them in ``source.skipped``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from causalvis.errors import CausalvisError, CorruptImageError
from causalvis.images.preprocess import load_image_file, prepare_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


@dataclass(frozen=True)
class SkippedImage:
    image_id: str
    reason: str


class ImageSource:
    """Base class: ordered ids, ``load(id)``, and robust batched iteration."""

    name: str = "source"
    # where ``images.groups = "auto"`` takes groups from (causalvis.images.groups)
    natural_grouping: str = "none"

    def __init__(self, size: int, crop_pct: float = 0.875) -> None:
        self.size = int(size)
        self.crop_pct = float(crop_pct)
        self.skipped: list[SkippedImage] = []

    @property
    def ids(self) -> list[str]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def load_raw(self, image_id: str) -> Image.Image:
        raise NotImplementedError

    def load(self, image_id: str) -> Image.Image:
        """The model-size RGB image for ``image_id`` (raises CorruptImageError)."""
        return prepare_image(self.load_raw(image_id), self.size, self.crop_pct)

    def load_array(self, image_id: str) -> np.ndarray:
        return np.asarray(self.load(image_id), dtype=np.uint8)

    def iter_images(
        self, ids: list[str] | None = None, workers: int = 2, lookahead: int | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(id, uint8 [S, S, 3])`` in order, skipping (and recording) bad files.

        Decoding runs in a small thread pool (PIL releases the GIL) with a bounded
        look-ahead (``lookahead`` images decoded or in flight beyond the one yielded;
        default ``max(8, 4 * workers)``), so memory stays flat however many images there
        are. A consumer that batches should ask for at least one batch, so the next batch
        decodes while it computes on this one (the scan does).
        """
        ids = self.ids if ids is None else ids

        def work(image_id: str) -> tuple[str, np.ndarray | None, str | None]:
            try:
                return image_id, self.load_array(image_id), None
            except CorruptImageError as exc:
                return image_id, None, str(exc)
            except Exception as exc:  # noqa: BLE001 - never crash a scan on one file
                return image_id, None, f"{image_id}: {type(exc).__name__}: {exc}"

        lookahead = max(1, lookahead if lookahead is not None else max(8, 4 * workers))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending: deque = deque()
            it = iter(ids)
            for image_id in it:
                pending.append(pool.submit(work, image_id))
                if len(pending) >= lookahead:
                    break
            while pending:
                image_id, arr, err = pending.popleft().result()
                nxt = next(it, None)
                if nxt is not None:
                    pending.append(pool.submit(work, nxt))
                if arr is None:
                    self.skipped.append(SkippedImage(image_id, err or "unreadable"))
                    continue
                yield image_id, arr

    def describe(self) -> str:
        return f"{self.name} ({len(self)} images)"


class FolderSource(ImageSource):
    """Every image file under a folder, recursively, in sorted path order."""

    # A folder is often sorted by class: grouping by subfolder would keep a query's class
    # out of its references, which the papers did not do; ask for it (groups = "subfolder").
    natural_grouping = "none"

    def __init__(self, root: str | Path, size: int, crop_pct: float = 0.875) -> None:
        super().__init__(size, crop_pct)
        self.root = Path(root).expanduser()
        if not self.root.exists():
            raise CausalvisError(f"image folder not found: {self.root}")
        if not self.root.is_dir():
            raise CausalvisError(f"not a folder: {self.root}")
        self.name = f"folder {self.root}"
        self._ids: list[str] | None = None

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            found: list[str] = []
            for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
                dirnames.sort()
                rel = os.path.relpath(dirpath, self.root)
                for fname in sorted(filenames):
                    if fname.lower().endswith(IMAGE_SUFFIXES) and not fname.startswith("."):
                        found.append(fname if rel == "." else f"{rel}/{fname}".replace(os.sep, "/"))
            if not found:
                raise CausalvisError(
                    f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {self.root}"
                )
            self._ids = found
        return self._ids

    def path(self, image_id: str) -> Path:
        return self.root / image_id

    def load_raw(self, image_id: str) -> Image.Image:
        return load_image_file(self.path(image_id))


# -- the embedded natural-image set ------------------------------------------------------


def _photo_loaders() -> dict[str, callable]:
    import skimage.data as data

    def sklearn_image(fname: str):
        def load():
            # The JPEG that sklearn.datasets.load_sample_image decodes (same PIL decoder,
            # same pixels), read from the package folder: importing sklearn.datasets
            # costs ~2 s per process, longer than a quick study's whole units stage.
            spec = importlib.util.find_spec("sklearn")
            if spec is None or not spec.submodule_search_locations:
                raise FileNotFoundError("scikit-learn is not installed")
            root = Path(next(iter(spec.submodule_search_locations)))
            with Image.open(root / "datasets" / "images" / fname) as im:
                return np.asarray(im.convert("RGB"))

        return load

    def motorcycle(side: int):
        def load():
            return data.stereo_motorcycle()[side]

        return load

    return {
        "astronaut": data.astronaut,
        "chelsea": data.chelsea,
        "coffee": data.coffee,
        "rocket": data.rocket,
        "motorcycle": motorcycle(0),
        "hubble": data.hubble_deep_field,
        "ihc": data.immunohistochemistry,
        "retina": data.retina,
        "china": sklearn_image("china.jpg"),
        "flower": sklearn_image("flower.jpg"),
    }


@functools.lru_cache(maxsize=16)
def _photo(name: str) -> Image.Image | None:
    try:
        arr = _photo_loaders()[name]()
    except Exception:  # noqa: BLE001 - a photo that needs a download is simply absent
        return None
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] < 3:
        return None
    return Image.fromarray(arr[..., :3].astype(np.uint8), mode="RGB")


# Crop side as a fraction of the photo's short side, and crops per axis at that scale.
_SCALES: tuple[tuple[float, int], ...] = (
    (1.0, 1),
    (0.8, 2),
    (0.6, 3),
    (0.45, 4),
    (0.33, 5),
)


class SampleSource(ImageSource):
    """``samples``: deterministic multi-scale crops of the colour photos shipped by
    scikit-image and scikit-learn (no download): 55 crops per photo at five scales.

    Ids look like ``chelsea/s0.60/r1c2``; every crop is resized to the model size.
    """

    name = "samples"
    natural_grouping = "photo"  # crops of one photo are one group

    def __init__(self, size: int, crop_pct: float = 0.875) -> None:
        super().__init__(size, crop_pct)
        self._ids: list[str] | None = None

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            ids = []
            for photo in _photo_loaders():
                if _photo(photo) is None:
                    continue
                for scale, n in _SCALES:
                    for r in range(n):
                        for c in range(n):
                            ids.append(f"{photo}/s{scale:.2f}/r{r}c{c}")
            self._ids = ids
        return self._ids

    def load_raw(self, image_id: str) -> Image.Image:
        return self.load(image_id)

    def load(self, image_id: str) -> Image.Image:
        try:
            photo_name, scale_s, rc = image_id.split("/")
            scale = float(scale_s[1:])
            r, c = (int(v) for v in rc[1:].split("c"))
            n = dict(_SCALES)[scale]
        except (ValueError, KeyError) as exc:
            raise CorruptImageError(f"not a sample id: {image_id!r}") from exc
        photo = _photo(photo_name)
        if photo is None:
            raise CorruptImageError(f"sample photo {photo_name!r} is not available")
        w, h = photo.size
        side = int(round(min(w, h) * scale))
        xs = np.linspace(0, w - side, n).round().astype(int) if n > 1 else [(w - side) // 2]
        ys = np.linspace(0, h - side, n).round().astype(int) if n > 1 else [(h - side) // 2]
        x0, y0 = int(xs[c]), int(ys[r])
        crop = photo.crop((x0, y0, x0 + side, y0 + side))
        return crop.resize((self.size, self.size), Image.BICUBIC)


def open_source(spec: str | Path, size: int, crop_pct: float = 0.875) -> ImageSource:
    """``"samples"`` -> the embedded set; anything else is a folder path."""
    if str(spec) == "samples":
        return SampleSource(size, crop_pct)
    return FolderSource(spec, size, crop_pct)
