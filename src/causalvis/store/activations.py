"""``activations/``: the dataset scan, as float16 shards plus ``index.json``.

A shard ``activations/<shard>/`` holds ``ids.txt`` (one image id per line), one
``<layer>.npy`` ``[n, C]`` per scanned layer (float16 by default; float32 with
``scan.dtype = "float32"``, or per layer and shard where float16 would lose the values,
with ``"auto"``: :func:`shard_dtype`) and ``skipped.json`` (images that
could not be decoded). ``index.json`` lists the shards in order and is written last, so
its presence means the scan is complete. Everything here is written and read only
through this module (numpy only); :class:`ActivationTable` is the reader stages use.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, read_json, read_json_file, write_json
from causalvis.store.units import Unit

DTYPE = "float16"
SCAN_DTYPES = ("float16", "float32", "auto")
_F16 = np.finfo(np.float16)


def float16_loss(values: np.ndarray) -> str | None:
    """Why float16 storage would corrupt these float32 ``[n, C]`` values, or None.

    Overflow (beyond float16's largest value), or a channel that varies but whose values
    are all below float16's smallest normal number (flushed to 0 or a few subnormal
    steps) or collapse to one float16 value: such a unit would be called dead, or ranked
    on rounding noise."""
    if values.size == 0:
        return None
    finite = values[np.isfinite(values)]
    if finite.size and float(np.abs(finite).max()) > float(_F16.max):
        return "values beyond float16's range (overflow to inf)"
    lo, hi = values.min(axis=0), values.max(axis=0)
    varying = hi > lo
    tiny = np.abs(values).max(axis=0) < float(_F16.tiny)
    half = values.astype(np.float16)
    collapsed = ~(half.max(axis=0) > half.min(axis=0))
    bad = varying & (tiny | collapsed)
    if bad.any():
        return f"{int(bad.sum())} varying channel(s) below float16's resolution"
    return None


def shard_dtype(values: np.ndarray, mode: str) -> str:
    """The storage dtype of one layer's shard for ``scan.dtype = mode``."""
    if mode not in SCAN_DTYPES:
        raise CausalvisError(f"scan.dtype must be one of {', '.join(SCAN_DTYPES)}")
    if mode != "auto":
        return mode
    return "float32" if float16_loss(values) else "float16"


def shard_layer_dtype(paths: StudyPaths, name: str, layer: str) -> str:
    """The dtype a written shard stores ``layer`` in (read from the .npy header)."""
    return str(np.load(paths.shard_layer(name, layer), mmap_mode="r").dtype)


@dataclass(frozen=True)
class ShardEntry:
    name: str
    n_images: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "n_images": self.n_images, "digest": self.digest}


@dataclass(frozen=True)
class ActivationIndex:
    """The content of ``activations/index.json``."""

    model: str
    source: str
    input_size: int
    layers: tuple[str, ...]
    channels: dict[str, int]
    shards: tuple[ShardEntry, ...]
    skipped: tuple[dict[str, str], ...]
    digest: str
    dtype: str = DTYPE  # of every layer, or "mixed"
    dtypes: Mapping[str, str] | None = None  # per layer, when not all float16
    tokens: str | None = None  # token policy (patch/cls/all) when token layers were scanned

    @property
    def n_images(self) -> int:
        return sum(s.n_images for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "input_size": self.input_size,
            "layers": list(self.layers),
            "channels": dict(self.channels),
            "dtype": self.dtype,
            **({"dtypes": dict(self.dtypes)} if self.dtypes else {}),
            **({"tokens": self.tokens} if self.tokens else {}),
            "n_images": self.n_images,
            "shards": [s.to_dict() for s in self.shards],
            "skipped": [dict(s) for s in self.skipped],
            "digest": self.digest,
        }

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ActivationIndex:
        if not isinstance(raw, Mapping):
            raise CausalvisError(f"{where}: expected an object, got {type(raw).__name__}")
        try:
            layers = tuple(str(name) for name in raw["layers"])
            channels = {str(k): int(v) for k, v in dict(raw["channels"]).items()}
            shards = tuple(
                ShardEntry(str(s["name"]), int(s["n_images"]), str(s["digest"]))
                for s in raw["shards"]
            )
            index = cls(
                model=str(raw["model"]), source=str(raw["source"]),
                input_size=int(raw["input_size"]), layers=layers, channels=channels,
                shards=shards, skipped=tuple(dict(s) for s in raw.get("skipped", [])),
                digest=str(raw["digest"]), dtype=str(raw.get("dtype", DTYPE)),
                dtypes={str(k): str(v) for k, v in dict(raw.get("dtypes") or {}).items()}
                or None,
                tokens=str(raw["tokens"]) if raw.get("tokens") else None,
            )
        except KeyError as exc:
            raise CausalvisError(f"{where}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise CausalvisError(f"{where}: malformed index ({exc})") from exc
        unknown = [name for name in layers if name not in channels]
        if unknown:
            raise CausalvisError(f"{where}: no channel count for layer(s) {', '.join(unknown)}")
        if "n_images" in raw and raw["n_images"] != index.n_images:
            raise CausalvisError(
                f"{where}: n_images = {raw['n_images']!r} but the shards hold {index.n_images}"
            )
        return index


# -- shards ----------------------------------------------------------------------------------

def write_shard(
    paths: StudyPaths,
    name: str,
    ids: Sequence[str],
    acts: Mapping[str, np.ndarray],
    skipped: Sequence[dict[str, str]],
) -> list[str]:
    """Write shard ``name`` atomically (temp folder + rename); returns its files relative
    to the study folder."""
    folder = paths.activation_shard(name)
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    ids_file, skipped_file = paths.shard_ids(name), paths.shard_skipped(name)
    layer_files = {layer: paths.shard_layer(name, layer) for layer in acts}
    (tmp / ids_file.name).write_text("".join(f"{i}\n" for i in ids))
    for layer, value in acts.items():
        np.save(tmp / layer_files[layer].name, value)
    (tmp / skipped_file.name).write_text(json.dumps(list(skipped), indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    files = [ids_file, skipped_file, *layer_files.values()]
    return [f.relative_to(paths.root).as_posix() for f in files]


def read_shard_ids(paths: StudyPaths, name: str) -> list[str]:
    path = paths.shard_ids(name)
    if not path.is_file():
        raise CausalvisError(
            f"{path} is missing: rerun `causalvis build {paths.root} --stage scan`"
        )
    return path.read_text().splitlines()


def read_shard_skipped(paths: StudyPaths, name: str) -> list[dict[str, str]]:
    """The shard's undecodable images (none when the file is absent)."""
    path = paths.shard_skipped(name)
    if not path.is_file():
        return []
    try:
        return list(read_json(path))
    except (json.JSONDecodeError, TypeError) as exc:
        raise CausalvisError(f"{path}: invalid JSON ({exc})") from exc


def remove_stale_shards(paths: StudyPaths, keep: Iterable[str]) -> None:
    """Delete shard folders a new scan no longer has."""
    keep = set(keep)
    for folder in paths.activations.glob("shard-*"):
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder)


# -- index -----------------------------------------------------------------------------------

def write_index(paths: StudyPaths, index: ActivationIndex) -> bool:
    """Write ``index.json`` unless it already holds this index (a rerun leaves it
    untouched); True if it was written."""
    path = paths.activations_index
    data = index.to_dict()
    if path.is_file():
        try:
            if read_json(path) == data:
                return False
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
    write_json(path, data)
    return True


def remove_index(paths: StudyPaths) -> None:
    """An index from an earlier run must not describe a half-rewritten scan."""
    paths.activations_index.unlink(missing_ok=True)


def read_index(paths: StudyPaths) -> ActivationIndex:
    path = paths.activations_index
    raw = read_json_file(
        path,
        f"no dataset scan in {paths.activations}: run `causalvis build STUDY --stage scan` first",
    )
    return ActivationIndex.from_dict(raw, str(path))


class ActivationTable:
    """Read access to a finished scan: ids, whole matrices, or single columns.

    Shards are memory-mapped, so :meth:`column` and :meth:`channel_range` need memory for
    one column only, even for millions of images.
    """

    def __init__(self, paths: StudyPaths | str | Path) -> None:
        if not isinstance(paths, StudyPaths):
            paths = StudyPaths(Path(paths))
        self.paths = paths
        self.root = paths.activations
        self.index = read_index(paths)
        self.layers: list[str] = list(self.index.layers)
        self.channels: dict[str, int] = dict(self.index.channels)
        self.digest: str = self.index.digest
        self.n_images: int = self.index.n_images
        self._ids: list[str] | None = None

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            ids: list[str] = []
            for shard in self.index.shards:
                ids.extend(read_shard_ids(self.paths, shard.name))
            self._ids = ids
        return self._ids

    def _check(self, layer: str) -> None:
        if layer not in self.channels:
            raise CausalvisError(
                f"layer {layer!r} was not scanned (scanned: {', '.join(self.layers)}); add it "
                "to scan.layers or units.layers and rerun `causalvis build STUDY --stage scan`"
            )

    def shards(self, layer: str) -> Iterator[np.ndarray]:
        """Memory-mapped ``[n, C]`` arrays (float16 or float32), shard by shard."""
        self._check(layer)
        for shard in self.index.shards:
            path = self.paths.shard_layer(shard.name, layer)
            try:
                yield np.load(path, mmap_mode="r")
            except (OSError, ValueError) as exc:
                raise CausalvisError(
                    f"{path}: unreadable scan shard ({exc}); rerun `causalvis build STUDY "
                    "--stage scan`"
                ) from exc

    def matrix(self, layer: str) -> np.ndarray:
        """All activations of ``layer`` as float32 ``[N, C]``."""
        parts = [np.asarray(a, dtype=np.float32) for a in self.shards(layer)]
        if not parts:
            return np.zeros((0, self.channels[layer]), np.float32)
        return np.concatenate(parts)

    def column(self, layer: str, channel: int) -> np.ndarray:
        """One unit's activation over all images, float32 ``[N]``."""
        self._check(layer)
        if not 0 <= channel < self.channels[layer]:
            raise CausalvisError(
                f"unit {Unit(layer, channel).spec}: layer has channels "
                f"0..{self.channels[layer] - 1}"
            )
        parts = [np.asarray(a[:, channel], dtype=np.float32) for a in self.shards(layer)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def channel_range(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel minimum and maximum over all images (streamed)."""
        lo = np.full(self.channels[layer], np.inf, np.float32)
        hi = np.full(self.channels[layer], -np.inf, np.float32)
        for arr in self.shards(layer):
            if len(arr):
                lo = np.minimum(lo, np.asarray(arr.min(axis=0), np.float32))
                hi = np.maximum(hi, np.asarray(arr.max(axis=0), np.float32))
        return lo, hi
