"""``occlusion/<unit key>/set<b>.npz``: one (unit, image set)'s occlusion maps.

Arrays (docs/study-folder.md): ``map`` ``[ny, nx]`` float32 and ``base`` (unoccluded
activation) of the set's query; ``maps`` ``[K, ny, nx]``, ``bases`` ``[K]``,
``image_ids`` ``[K]``, ``ranks`` ``[K]`` for all K candidate queries (index 0 = the set's
query); ``offsets`` (grid offsets along each axis), ``size``, ``patch``, ``stride``,
``fill``; ``engine`` (``full`` | ``incremental``: which sweep computed the maps; absent in
files written before it was recorded). Encoded by :func:`encode_occlusion` (byte-deterministic) and decoded by
:func:`read_occlusion` only; numpy only.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.layout import npz_bytes

ARRAYS = ("maps", "bases", "image_ids", "ranks", "offsets", "size", "patch", "stride", "fill")


@dataclass
class OcclusionResult:
    """One ``set<b>.npz``, decoded."""

    maps: np.ndarray  # [K, ny, nx]
    bases: np.ndarray  # [K]
    image_ids: list[str]
    ranks: list[int]
    offsets: np.ndarray
    size: int
    patch: int
    stride: int
    fill: str
    engine: str = ""  # "full" | "incremental" ("" = not recorded)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the file (see the module docstring)."""
        maps = np.asarray(self.maps, dtype=np.float32)
        bases = np.asarray(self.bases, dtype=np.float32)
        return {
            "map": maps[0],
            "base": bases[0],
            "maps": maps,
            "bases": bases,
            "image_ids": np.asarray(self.image_ids),
            "ranks": np.asarray(self.ranks, dtype=np.int64),
            "offsets": self.offsets,
            "size": np.int64(self.size),
            "patch": np.int64(self.patch),
            "stride": np.int64(self.stride),
            "fill": np.asarray(self.fill),
            **({"engine": np.asarray(self.engine)} if self.engine else {}),
        }


def encode_occlusion(result: OcclusionResult) -> bytes:
    """The file's bytes: the same arrays always give the same bytes."""
    return npz_bytes(**result.arrays())


def read_occlusion(path: str | Path) -> OcclusionResult:
    """Decode one ``set<b>.npz``; a missing, unreadable or inconsistent file is one clear
    error naming it."""
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(f"{path} not found: run `causalvis build --stage occlusion` first")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [name for name in ARRAYS if name not in z.files]
            if missing:
                raise CausalvisError(f"{path}: missing arrays {', '.join(missing)}")
            result = OcclusionResult(
                maps=z["maps"], bases=z["bases"], image_ids=[str(s) for s in z["image_ids"]],
                ranks=[int(r) for r in z["ranks"]], offsets=z["offsets"],
                size=int(z["size"]), patch=int(z["patch"]), stride=int(z["stride"]),
                fill=str(z["fill"]),
                engine=str(z["engine"]) if "engine" in z.files else "",
            )
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise CausalvisError(f"{path}: not a readable occlusion result ({exc})") from exc
    k = len(result.image_ids)
    n = len(result.offsets)
    if (
        result.maps.ndim != 3 or result.maps.shape != (k, n, n)
        or result.bases.shape != (k,) or len(result.ranks) != k or k == 0
    ):
        raise CausalvisError(
            f"{path}: inconsistent shapes (maps {result.maps.shape}, bases "
            f"{result.bases.shape}, {k} image ids, {len(result.ranks)} ranks, {n} offsets)"
        )
    return result
