"""Stage ``scan``: every channel's spatial-mean activation over the whole image source.

One truncated forward pass per batch records all configured layers at once
(:class:`ActivationProbe`). Results go to float16 shards of ``scan.shard_size`` images,
each written atomically and stamped with the hash of its inputs, so a killed scan resumes
at the first unfinished shard and memory stays bounded by one shard however large the
image set. Images that cannot be decoded are skipped, logged and listed in ``index.json``.
Each shard is one work item (:mod:`causalvis.compute`), so shards run on any executor;
the driver writes ``index.json`` once every shard is done.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from causalvis.compute import ItemContext, WorkItem, item_done, run_stage_items
from causalvis.errors import CausalvisError
from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import ActivationProbe, list_layers
from causalvis.pipeline.items import item_model, item_source, model_spec, source_spec
from causalvis.store.layout import StudyPaths, read_json, write_json

log = logging.getLogger("causalvis.scan")

INDEX_NAME = "index.json"


# -- which layers --------------------------------------------------------------------------

def scan_layers(config, model) -> list[str]:
    """``scan.layers``; else the unit layers (incl. explicit units' layers); else every
    block-kind layer of the model. Validated against the model's catalogue."""
    from causalvis.models import parse_unit, resolve_layer

    layers = list(config.scan.layers)
    if not layers:
        layers = list(config.units.layers)
        if config.units.mode == "explicit":
            layers += [parse_unit(spec)[0] for spec in config.units.explicit]
    if not layers:
        layers = [info.name for info in list_layers(model) if info.kind == "block"]
        if not layers:
            raise CausalvisError(
                f"model {model.name} has no block layers: set scan.layers in study.toml"
            )
    layers = list(dict.fromkeys(layers))
    for layer in layers:
        resolve_layer(model, layer)
    return layers


# -- numeric core --------------------------------------------------------------------------

def probe_arrays(probe: ActivationProbe, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Spatial means ``{layer: float16 [B, C]}`` for a batch of uint8 ``[S, S, 3]`` images.

    The batch travels to the device as uint8 (a quarter of the float bytes) and becomes
    ``x / 255`` there, exactly as :func:`uint8_to_tensor` computes it on the CPU."""
    device = probe.model.device
    if device.type == "cpu":
        batch = uint8_to_tensor(np.stack(arrays))
    else:
        u8 = torch.from_numpy(np.stack(arrays)).pin_memory().to(device, non_blocking=True)
        batch = u8.permute(0, 3, 1, 2).float().div_(255.0)
    out = probe.run(batch)
    return {name: value.float().cpu().numpy().astype(np.float16) for name, value in out.items()}


def _batched(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True)
class ShardResult:
    ids: list[str]
    acts: dict[str, np.ndarray]
    skipped: list[dict[str, str]]


def _scan_shard(
    probe: ActivationProbe,
    source,
    ids: list[str],
    *,
    batch_size: int,
    workers: int,
    channels: dict[str, int],
    bar=None,
) -> ShardResult:
    """Probe one shard's images; undecodable ones are skipped and returned as such."""
    done_ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in channels}
    n_skipped_before = len(source.skipped)
    seen = 0
    for batch in _batched(source.iter_images(ids, workers=workers), batch_size):
        acts = probe_arrays(probe, [arr for _, arr in batch])
        for name, value in acts.items():
            parts[name].append(value)
        done_ids.extend(image_id for image_id, _ in batch)
        n_skipped = len(source.skipped) - n_skipped_before
        if bar is not None:
            bar.update(len(done_ids) + n_skipped - seen)
        seen = len(done_ids) + n_skipped
    skipped = [
        {"image_id": s.image_id, "reason": s.reason} for s in source.skipped[n_skipped_before:]
    ]
    if bar is not None:
        bar.update(len(ids) - seen)
    for item in skipped:
        log.warning("scan: skipped unreadable image %s", item["reason"])
    result = {
        name: np.concatenate(value) if value else np.zeros((0, channels[name]), np.float16)
        for name, value in parts.items()
    }
    return ShardResult(done_ids, result, skipped)


# -- shard files ---------------------------------------------------------------------------

def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def _layer_file(layer: str) -> str:
    return f"{layer}.npy"


def _write_shard(folder: Path, result: ShardResult) -> None:
    """Write a shard folder atomically (temp folder + rename)."""
    tmp = folder.with_name(f".{folder.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "ids.txt").write_text("".join(f"{i}\n" for i in result.ids))
    for name, value in result.acts.items():
        np.save(tmp / _layer_file(name), value)
    (tmp / "skipped.json").write_text(json.dumps(result.skipped, indent=1))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


# -- the stage -----------------------------------------------------------------------------

ITEM_FUNC = "causalvis.pipeline.scan:scan_shard_item"


def scan_items(ctx) -> tuple[list[WorkItem], dict]:
    """One work item per shard (``scan/shard-00000``), plus the run's shared description.

    The shard digest hashes the model, preprocessing, source, layers and the shard's image
    ids, so changing ``images.max_images`` redoes only the shards whose ids changed."""
    cfg = ctx.config
    model = ctx.model
    layers = scan_layers(cfg, model)
    infos = {i.name: i for i in list_layers(model)}
    channels = {name: infos[name].channels for name in layers}
    ids = list(ctx.source.ids)
    if cfg.images.max_images is not None:
        ids = ids[: cfg.images.max_images]
    if not ids:
        raise CausalvisError(f"image source {ctx.source.describe()} holds no images")
    base = {
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "input_size": model.input_size,
        "crop_pct": model.crop_pct,
        "source": cfg.images.source,
        "layers": layers,
    }
    common = {
        "model": model_spec(cfg),
        "source": source_spec(ctx.paths, cfg),
        "channels": channels,
        "batch_size": cfg.scan.batch_size,
        "workers": cfg.scan.workers,
    }
    size = cfg.scan.shard_size
    items = []
    for k, start in enumerate(range(0, len(ids), size)):
        shard_ids = ids[start : start + size]
        items.append(WorkItem(
            name=f"scan/{shard_name(k)}",
            func=ITEM_FUNC,
            kwargs={**common, "shard": shard_name(k), "ids": shard_ids},
            digest=_digest({**base, "ids": shard_ids}),
        ))
    return items, {"layers": layers, "channels": channels, "base": base}


def scan_shard_item(
    ctx: ItemContext,
    *,
    model: dict,
    source: str,
    channels: dict[str, int],
    batch_size: int,
    workers: int,
    shard: str,
    ids: list[str],
) -> dict:
    """Work item: probe one shard's images and write ``activations/<shard>/`` atomically."""
    net = item_model(model, ctx.device)
    images = item_source(source, net)
    with ActivationProbe(net, list(channels)) as probe:
        result = _scan_shard(
            probe, images, list(ids), batch_size=batch_size, workers=workers, channels=channels
        )
    folder = ctx.paths.activations / shard
    _write_shard(folder, result)
    files = ["ids.txt", "skipped.json", *(_layer_file(name) for name in result.acts)]
    ctx.outputs.extend(f"activations/{shard}/{f}" for f in files)
    return {"n_images": len(result.ids), "n_skipped": len(result.skipped)}


def run_scan_stage(ctx) -> None:
    """Scan the image source into ``activations/`` (resumable, see module docstring)."""
    paths: StudyPaths = ctx.paths
    items, info = scan_items(ctx)
    root = paths.activations
    root.mkdir(parents=True, exist_ok=True)
    if not all(item_done(paths, item) for item in items):
        # an index from an earlier run must not describe a half-rewritten scan
        (root / INDEX_NAME).unlink(missing_ok=True)
    run_stage_items(ctx, items, desc="scan")
    shards = [(item.kwargs["shard"], item.kwargs["ids"], item.digest) for item in items]
    _remove_stale_shards(root, {s[0] for s in shards})
    _write_index(paths, info["layers"], info["channels"], shards, info["base"])


def _remove_stale_shards(root: Path, keep: set[str]) -> None:
    for folder in root.glob("shard-*"):
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder)


def _write_index(paths: StudyPaths, layers, channels, shards, base) -> None:
    root = paths.activations
    entries, skipped = [], []
    for name, _ids, digest in shards:
        n = sum(1 for _ in (root / name / "ids.txt").open())
        entries.append({"name": name, "n_images": n, "digest": digest})
        skipped_file = root / name / "skipped.json"
        if skipped_file.is_file():
            skipped.extend(read_json(skipped_file))
    index = {
        "model": base["model"],
        "source": base["source"],
        "input_size": base["input_size"],
        "layers": layers,
        "channels": channels,
        "dtype": "float16",
        "n_images": sum(e["n_images"] for e in entries),
        "shards": entries,
        "skipped": skipped,
        "digest": _digest([e["digest"] for e in entries]),
    }
    index_file = root / INDEX_NAME
    if not (index_file.is_file() and read_json(index_file) == index):  # a rerun: untouched
        write_json(index_file, index)
    if skipped:
        log.warning("scan: %d unreadable image(s) skipped (listed in %s)", len(skipped),
                    root / INDEX_NAME)
    log.info("scan: %d images x %d layers in %s", index["n_images"], len(layers), root)


# -- reading -------------------------------------------------------------------------------

class ActivationTable:
    """Read access to a finished scan: ids, whole matrices, or single columns.

    Shards are memory-mapped, so :meth:`column` and :meth:`channel_range` need memory for
    one column only, even for millions of images.
    """

    def __init__(self, paths: StudyPaths | str | Path) -> None:
        if not isinstance(paths, StudyPaths):
            paths = StudyPaths(Path(paths))
        self.root = paths.activations
        index_file = self.root / INDEX_NAME
        if not index_file.is_file():
            raise CausalvisError(
                f"no dataset scan in {self.root}: run `causalvis build STUDY --stage scan` first"
            )
        self.index = read_json(index_file)
        self.layers: list[str] = list(self.index["layers"])
        self.channels: dict[str, int] = dict(self.index["channels"])
        self.digest: str = self.index["digest"]
        self.n_images: int = int(self.index["n_images"])
        self._ids: list[str] | None = None

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            ids: list[str] = []
            for shard in self.index["shards"]:
                ids.extend((self.root / shard["name"] / "ids.txt").read_text().splitlines())
            self._ids = ids
        return self._ids

    def _check(self, layer: str) -> None:
        if layer not in self.channels:
            raise CausalvisError(
                f"layer {layer!r} was not scanned (scanned: {', '.join(self.layers)}); add it "
                "to scan.layers or units.layers and rerun `causalvis build STUDY --stage scan`"
            )

    def shards(self, layer: str) -> Iterator[np.ndarray]:
        """Memory-mapped float16 ``[n, C]`` arrays, shard by shard."""
        self._check(layer)
        for shard in self.index["shards"]:
            yield np.load(self.root / shard["name"] / _layer_file(layer), mmap_mode="r")

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
                f"unit {layer}:{channel}: layer has channels 0..{self.channels[layer] - 1}"
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
