"""Stage ``scan``: every channel's spatial-mean activation over the whole image source.

One truncated forward pass per batch records all configured layers at once
(:class:`ActivationProbe`). Results go to shards of ``scan.shard_size`` images (float16
unless ``scan.dtype`` says otherwise: ``"auto"`` keeps float32 for a layer whose values
float16 would flush to zero or overflow, decided per shard),
each written atomically and stamped with the hash of its inputs, so a killed scan resumes
at the first unfinished shard and memory stays bounded by one shard however large the
image set. Images that cannot be decoded are skipped, logged and listed in ``index.json``.
Decoding overlaps the forward pass: CPU threads keep one batch decoded ahead (a bounded
queue), and on CUDA with a folder of JPEGs the file bytes are read ahead and decoded by
nvjpeg on the GPU (:mod:`causalvis.images.gpu_decode`; pixels within a few levels of
libjpeg's, so activations agree within ``benchmarks/gpu_suite.py``'s tolerance, not bitwise).
Each shard is one work item (:mod:`causalvis.compute`), so shards run on any executor;
the driver writes ``index.json`` once every shard is done. The files and their reader
(:class:`~causalvis.store.activations.ActivationTable`) are in
:mod:`causalvis.store.activations`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from causalvis.compute import ItemContext, WorkItem, item_done, run_stage_items
from causalvis.errors import CausalvisError
from causalvis.images.gpu_decode import gpu_decode_reason, iter_gpu_batches
from causalvis.images.preprocess import uint8_to_tensor
from causalvis.malloc import heap_allocations
from causalvis.models import ActivationProbe, list_layers
from causalvis.pipeline.items import item_model, item_source, model_spec, source_spec
from causalvis.store.activations import (
    DTYPE,
    ActivationIndex,
    ShardEntry,
    float16_loss,
    read_shard_ids,
    read_shard_skipped,
    remove_index,
    remove_stale_shards,
    shard_dtype,
    shard_layer_dtype,
    write_index,
    write_shard,
)
from causalvis.store.layout import StudyPaths

log = logging.getLogger("causalvis.scan")


# -- which layers --------------------------------------------------------------------------

def scan_layers(config, model) -> list[str]:
    """``scan.layers``; else the unit layers (incl. explicit units' layers); else every
    block-kind layer of the model. Validated against the model's catalogue, and so are
    explicit units (layer and channel range) before any image is scanned."""
    from causalvis.models import parse_unit, resolve_layer

    if config.units.mode == "explicit":
        for spec in config.units.explicit:
            parse_unit(spec, model)
    layers = list(config.scan.layers)
    if not layers:
        layers = list(config.units.layers)
        if config.units.mode == "explicit":
            layers += [parse_unit(spec)[0] for spec in config.units.explicit]
    if not layers:
        layers = [info.name for info in list_layers(model) if info.is_block]
        if not layers:
            raise CausalvisError(
                f"model {model.name} has no block layers: set scan.layers in study.toml"
            )
    layers = list(dict.fromkeys(layers))
    for layer in layers:
        resolve_layer(model, layer)
    return layers


# -- numeric core --------------------------------------------------------------------------

def probe_arrays(
    probe: ActivationProbe, arrays: Sequence[np.ndarray], dtype: type = np.float16
) -> dict[str, np.ndarray]:
    """Spatial means ``{layer: [B, C]}`` (``dtype``) for a batch of uint8 ``[S, S, 3]`` images.

    The batch travels to the device as uint8 (a quarter of the float bytes) and becomes
    ``x / 255`` there, exactly as :func:`uint8_to_tensor` computes it on the CPU."""
    device = probe.model.device
    if device.type == "cpu":
        batch = uint8_to_tensor(np.stack(arrays))
    else:  # stacked straight into pinned memory: one host copy, an asynchronous upload
        pinned = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.uint8,
                             pin_memory=True)  # fmt: skip
        np.stack(arrays, out=pinned.numpy())
        u8 = pinned.to(device, non_blocking=True)
        batch = u8.permute(0, 3, 1, 2).float().div_(255.0)
    return _means(probe.run(batch), dtype)


def _means(out: dict[str, torch.Tensor], dtype: type) -> dict[str, np.ndarray]:
    return {name: value.float().cpu().numpy().astype(dtype) for name, value in out.items()}


def _probe_batches(
    probe: ActivationProbe, source, ids: list[str], batch_size: int, workers: int,
    decode: str = "auto",
) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:  # fmt: skip
    """``(ids, float32 means)`` per batch. Decoding overlaps the forward: CPU threads keep
    one batch decoded ahead (bounded: constant memory), or, on CUDA with a JPEG folder,
    the bytes are read ahead and nvjpeg decodes on the GPU (:mod:`causalvis.images.gpu_decode`;
    ``decode = "cpu"`` forces the CPU path)."""
    device = probe.model.device
    if gpu_decode_reason(source, device, ids, decode) is None:
        for names, batch in iter_gpu_batches(source, ids, batch_size, device, workers):
            yield names, _means(probe.run(batch), np.float32)
        return
    if decode == "gpu":
        log.info("scan: decoding on the CPU (%s)", gpu_decode_reason(source, device, ids))
    lookahead = max(batch_size, 4 * workers)
    for batch in _batched(source.iter_images(ids, workers=workers, lookahead=lookahead),
                          batch_size):  # fmt: skip
        yield [i for i, _ in batch], probe_arrays(probe, [arr for _, arr in batch], np.float32)


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
    dtype: str = DTYPE,
    decode: str = "auto",
) -> ShardResult:
    """Probe one shard's images; undecodable ones are skipped and returned as such.
    Values are gathered in float32 and stored per layer as :func:`shard_dtype` says for
    ``dtype`` (``scan.dtype``); the float16 cast is elementwise, so the default bytes do
    not depend on where it happens. ``decode``: see :func:`_probe_batches`."""
    done_ids: list[str] = []
    parts: dict[str, list[np.ndarray]] = {name: [] for name in channels}
    n_skipped_before = len(source.skipped)
    seen = 0
    # the whole loop on the malloc heap (decode, batch conversion and forward alike): with
    # mmap back on between forwards, the next batch's maps land on fresh pages
    with heap_allocations(probe.model.device.type == "cpu"):
        for names, acts in _probe_batches(probe, source, ids, batch_size, workers, decode):
            for name, value in acts.items():
                parts[name].append(value)
            done_ids.extend(names)
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
    result = {}
    for name, value in parts.items():
        full = np.concatenate(value) if value else np.zeros((0, channels[name]), np.float32)
        store = shard_dtype(full, dtype)
        if store == "float16" and (loss := float16_loss(full)):
            log.warning("scan: layer %s: %s in float16 storage; set scan.dtype = \"auto\" "
                        "(or \"float32\") to keep them", name, loss)
        result[name] = full.astype(store)
    return ShardResult(done_ids, result, skipped)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


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
    from causalvis.models import resolve_layer
    from causalvis.models.dictionary import dictionary_digest

    infos = {name: resolve_layer(model, name) for name in layers}
    channels = {name: info.channels for name, info in infos.items()}
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
    if cfg.scan.dtype != DTYPE:  # default studies keep their digests
        base["dtype"] = cfg.scan.dtype
    if any(infos[name].layout == "tokens" for name in layers):  # CNN studies keep theirs
        base["tokens"] = cfg.model.tokens
    derived = {n: dictionary_digest(p) for n, p in cfg.dictionaries.items() if n in layers}
    if derived:  # the features change with the dictionary's files
        base["dictionaries"] = derived
    common = {
        "model": model_spec(cfg),
        "source": source_spec(ctx.paths, cfg),
        "channels": channels,
        "batch_size": cfg.scan.batch_size,
        "workers": cfg.scan.workers,
    }
    if cfg.scan.dtype != DTYPE:
        common["dtype"] = cfg.scan.dtype
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
    dtype: str = DTYPE,
) -> dict:
    """Work item: probe one shard's images and write ``activations/<shard>/`` atomically."""
    net = item_model(model, ctx.device)
    images = item_source(source, net)
    with ActivationProbe(net, list(channels)) as probe:
        result = _scan_shard(
            probe, images, list(ids), batch_size=batch_size, workers=workers, channels=channels,
            dtype=dtype,
        )
    ctx.outputs.extend(write_shard(ctx.paths, shard, result.ids, result.acts, result.skipped))
    return {"n_images": len(result.ids), "n_skipped": len(result.skipped)}


def run_scan_stage(ctx) -> None:
    """Scan the image source into ``activations/`` (resumable, see module docstring)."""
    paths: StudyPaths = ctx.paths
    items, info = scan_items(ctx)
    paths.activations.mkdir(parents=True, exist_ok=True)
    if not all(item_done(paths, item) for item in items):
        remove_index(paths)
    run_stage_items(ctx, items, desc="scan")
    shards = [(item.kwargs["shard"], item.digest) for item in items]
    remove_stale_shards(paths, {name for name, _ in shards})
    _write_index(paths, info["layers"], info["channels"], shards, info["base"])


def _write_index(paths: StudyPaths, layers, channels, shards, base) -> None:
    entries = [ShardEntry(name, len(read_shard_ids(paths, name)), digest)
               for name, digest in shards]
    skipped = [s for name, _ in shards for s in read_shard_skipped(paths, name)]
    dtypes = {}
    if base.get("dtype", DTYPE) != DTYPE:
        for layer in layers:
            found = {shard_layer_dtype(paths, name, layer) for name, _ in shards}
            dtypes[layer] = found.pop() if len(found) == 1 else "mixed"
    overall = set(dtypes.values()) or {DTYPE}
    index = ActivationIndex(
        model=base["model"],
        source=base["source"],
        input_size=base["input_size"],
        layers=tuple(layers),
        channels=dict(channels),
        shards=tuple(entries),
        skipped=tuple(skipped),
        digest=_digest([e.digest for e in entries]),
        dtype=overall.pop() if len(overall) == 1 else "mixed",
        dtypes=dtypes or None,
        tokens=base.get("tokens"),
    )
    write_index(paths, index)
    if skipped:
        log.warning("scan: %d unreadable image(s) skipped (listed in %s)", len(skipped),
                    paths.activations_index)
    log.info("scan: %d images x %d layers in %s", index.n_images, len(layers), paths.activations)
