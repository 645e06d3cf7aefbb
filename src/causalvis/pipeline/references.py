"""Stage ``references``: generated reference images (feature visualizations, user methods).

For every generated method the study needs (``methods.generated_methods``) and every unit
of units.json (main and practice), the method renders ``n`` images; many units of one
layer share a batch (``featurevis.batch_units``). Each image is stored as a lossless PNG at
the model's input size; meta.json records per image the objective value reached and the
unit's activation measured by the ActivationProbe on the *decoded PNG* (what participants
see). Each chunk of units is one work item (:mod:`causalvis.compute`), so methods render on
any executor and a rerun skips finished chunks.

A ``two_afc`` study needs both sides: every method renders the maximizing images
(``<i>.png``) and the minimizing ones (``min-<i>.png``, negated objective; per-image-set
methods ``set<b>-min-<i>.png``), and each meta.json image entry carries ``"role"``
(``max``/``min``). Causal-occlusion studies render the max side only, as before.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from itertools import product

import numpy as np
import torch
from PIL import Image

from causalvis.compute import ItemContext, WorkItem, cached, run_stage_items
from causalvis.errors import CausalvisError
from causalvis.images.preprocess import pil_to_tensor, tensor_to_pil
from causalvis.models import ActivationProbe
from causalvis.pipeline.items import item_model, item_source, model_spec, source_spec
from causalvis.pipeline.methods import (
    FEATUREVIS_METHODS,
    MIXED_OWN,
    GenerateBatch,
    Generated,
    ImageLike,
    ReferenceMethod,
    UnitRequest,
    generated_methods,
    get_method,
    method_dir_name,
    natural_reference_paths,
    reference_file,
)
from causalvis.pipeline.registry import get_task
from causalvis.store.assets import encode_png
from causalvis.store.units import UnitEntry, read_units


def _to_pil(img: ImageLike, size: int, where: str) -> Image.Image:
    if isinstance(img, torch.Tensor):
        img = tensor_to_pil(img)
    elif isinstance(img, np.ndarray):
        arr = img
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        img = Image.fromarray(arr, mode="RGB")
    if not isinstance(img, Image.Image):
        raise CausalvisError(f"{where}: a method returned {type(img).__name__}, not an image")
    img = img.convert("RGB")
    if img.size != (size, size):
        raise CausalvisError(
            f"{where}: image is {img.size[0]}x{img.size[1]}, the model input size is {size}"
        )
    return img


def _chunks(units: list[UnitEntry], size: int) -> list[list[UnitEntry]]:
    """Units grouped by layer (in first-seen order), then cut into batches of ``size``."""
    by_layer: dict[str, list[UnitEntry]] = {}
    for u in units:
        by_layer.setdefault(u.layer, []).append(u)
    return [
        group[i : i + size] for group in by_layer.values() for i in range(0, len(group), size)
    ]


def _measure(model, layer: str, channels: Sequence[int], pngs: Sequence[bytes]) -> list[float]:
    """Unit activation of each decoded PNG (image k belongs to ``channels[k]``)."""
    if not pngs:
        return []
    batch = torch.stack([pil_to_tensor(Image.open(io.BytesIO(b))) for b in pngs])
    with ActivationProbe(model, [layer]) as probe:
        acts = probe.run_batches(batch[i : i + 32] for i in range(0, len(batch), 32))[layer]
    return [float(acts[k, c]) for k, c in enumerate(channels)]


def reference_sides(cfg) -> list[str]:
    """Reference sides the study's task shows: max only, or max and min (``two_afc``)."""
    return list(get_task(cfg.task).sides)


def _unit_entries(
    image_set: int | None, gen: Generated, n: int, activations: list[float],
    side: str = "max", with_role: bool = False,
) -> list[dict]:
    entries = []
    for i in range(n):
        entry = {"file": reference_file(i, image_set, side), "activation": activations[i]}
        if with_role:
            entry["role"] = side
        if image_set is not None:
            entry["image_set"] = image_set
        if gen.objective is not None:
            entry["objective"] = float(gen.objective[i])
        if gen.extra is not None:
            entry.update(gen.extra[i])
        entries.append(entry)
    return entries


def _unit_meta(cfg, method: ReferenceMethod, unit: UnitRequest, entries: list[dict]) -> dict:
    meta = {
        "method": method.name,
        "layer": unit.layer,
        "channel": unit.channel,
        "key": unit.key,
        "role": unit.role,
        "activation_measured_on": "decoded PNG at the model input size",
        "images": sorted(entries, key=lambda e: (e.get("image_set", -1), e["file"])),
    }
    if method.name in FEATUREVIS_METHODS:
        meta["featurevis"] = cfg.featurevis.model_dump(mode="json")
    return meta


def _digest(cfg, name: str, n: int) -> str:
    """Inputs a method's images depend on: the model, the featurevis settings (not the list
    of extra methods), the image source for MACO's spectrum, and the image count."""
    fv = cfg.featurevis.model_dump(mode="json")
    fv.pop("also_render", None)
    parts = {"model": cfg.model.model_dump(mode="json"), "featurevis": fv, "method": name, "n": n}
    if reference_sides(cfg) != ["max"]:  # only then: causal-occlusion digests stay as they were
        parts["sides"] = reference_sides(cfg)
    if cfg.dictionaries:
        parts["dictionaries"] = cfg.dictionaries
    if name == "synthetic-maco":
        parts["images"] = cfg.images.model_dump(mode="json")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


ITEM_FUNC = "causalvis.pipeline.references:references_chunk_item"


def _n_images(cfg, name: str) -> int:
    if name == MIXED_OWN:  # its own batch: the diversity term over these images only
        return max(1, cfg.conditions.mixed_synthetic)
    n = cfg.conditions.n_references
    if name in ("synthetic", "synthetic-maco"):
        n = cfg.featurevis.n_images
        if n < cfg.conditions.n_references:
            raise CausalvisError(
                f"featurevis.n_images ({n}) < conditions.n_references "
                f"({cfg.conditions.n_references}): not enough synthetic references"
            )
    return n


def method_items(ctx, name: str, units: list[UnitEntry]) -> list[WorkItem]:
    """One item per fixed chunk of up to ``featurevis.batch_units`` units of one layer
    (cut over all units in units.json order, so chunks never change with progress); the
    item digest combines the chunk's per-unit digests. Per-image-set methods render all
    image sets of a chunk in one item, so each unit's meta.json has a single writer."""
    method = get_method(name)
    cfg = ctx.config
    n = _n_images(cfg, name)
    digest = _digest(cfg, name, n)
    image_sets: list[int | None] = (
        list(range(cfg.exemplars.n_image_sets)) if method.per_image_set else [None]
    )
    batch_size = cfg.featurevis.batch_units if method.batch_units else 1
    model, source = model_spec(cfg), source_spec(ctx.paths, cfg)
    items = []
    counters: dict[str, int] = {}
    for chunk in _chunks(units, batch_size):
        layer = chunk[0].layer
        index = counters[layer] = counters.get(layer, -1) + 1
        unit_digests = [
            f"{digest}/{u.layer}/{u.channel}/{u.seed}/{b}" for u in chunk for b in image_sets
        ]
        items.append(WorkItem(
            name=f"references/{method_dir_name(name)}/{layer}/{index:04d}",
            func=ITEM_FUNC,
            kwargs={
                "method": name,
                "config": cfg.model_dump(mode="json"),
                "model": model,
                "source": source,
                "n": n,
                "image_sets": image_sets,
                "sides": reference_sides(cfg),
                "units": [
                    {"layer": u.layer, "channel": u.channel, "key": u.key, "seed": u.seed,
                     "role": u.role}
                    for u in chunk
                ],
            },
            digest=hashlib.sha256("|".join(unit_digests).encode()).hexdigest()[:16],
        ))
    return items


def references_chunk_item(
    ctx: ItemContext,
    *,
    method: str,
    config: dict,
    model: dict,
    source: str,
    n: int,
    image_sets: list[int | None],
    units: list[dict],
    sides: Sequence[str] = ("max",),
) -> None:
    """Work item: render one chunk of units of one layer with ``method`` and write each
    unit's PNGs and meta.json through the item context (atomic, recorded)."""
    from causalvis.config import StudyConfig

    impl = get_method(method)
    paths = ctx.paths
    cfg = StudyConfig.model_validate(config)
    net = item_model(model, ctx.device)
    # per-process cache (MACO's magnitude spectrum), keyed by what it is computed from
    cache = cached(("references-cache", source, net.input_size, net.crop_pct), dict)
    layer = units[0]["layer"]
    entries: dict[str, list[dict]] = {u["key"]: [] for u in units}
    requests: tuple[UnitRequest, ...] = ()
    with_role = list(sides) != ["max"]
    for side, b in product(sides, image_sets):
        n_natural = (cfg.exemplars.n_references if side == "max"
                     else cfg.exemplars.n_min_references)
        requests = tuple(
            UnitRequest(
                u["layer"], u["channel"], u["key"], u["seed"], u["role"],
                () if b is None else tuple(
                    natural_reference_paths(paths, u["key"], b, n_natural, side)),
            )
            for u in units
        )
        batch = GenerateBatch(
            model=net, layer=layer, units=requests, n_images=n, config=cfg, paths=paths,
            source=_LazySource(lambda: item_source(source, net)), image_set=b,
            progress=False, cache=cache, side=side,
        )
        outputs = list(impl.generate(batch))
        if len(outputs) != len(requests):
            raise CausalvisError(
                f"method {method!r} returned {len(outputs)} results for {len(requests)} units"
            )
        pngs: list[list[bytes]] = []
        for req, gen in zip(requests, outputs, strict=True):
            if len(gen.images) < n:
                raise CausalvisError(
                    f"method {method!r} returned {len(gen.images)} images for {req.key}, "
                    f"need {n}"
                )
            where = f"method {method!r}, unit {req.key}"
            pngs.append([encode_png(_to_pil(im, net.input_size, where))
                         for im in gen.images[:n]])
        flat = [p for ps in pngs for p in ps]
        channels = [req.channel for req in requests for _ in range(n)]
        acts = _measure(net, layer, channels, flat)
        for k, (req, gen) in enumerate(zip(requests, outputs, strict=True)):
            folder = paths.reference_dir(method_dir_name(method), req.key)
            rel = folder.relative_to(paths.root)
            new = _unit_entries(b, gen, n, acts[k * n : (k + 1) * n], side, with_role)
            for entry, data in zip(new, pngs[k], strict=True):
                ctx.write_bytes(rel / entry["file"], data)
            entries[req.key].extend(new)
    for req in requests:
        meta = paths.reference_meta(method_dir_name(method), req.key).relative_to(paths.root)
        ctx.write_json(meta, _unit_meta(cfg, impl, req, entries[req.key]))


def run_method(ctx, name: str, units: list[UnitEntry]) -> int:
    """Render ``name`` for every unit whose chunk is not done; returns the number of items
    run (computed, not skipped)."""
    report = run_stage_items(ctx, method_items(ctx, name, units), desc=f"references {name}")
    return report.done


class _LazySource:
    """Defers opening the image source until a user method actually touches it."""

    def __init__(self, opener) -> None:
        self._opener = opener

    def __getattr__(self, item):
        return getattr(self._opener(), item)


def run_references_stage(ctx) -> None:
    """Render every generated reference method the study needs, for every unit."""
    units = read_units(ctx.paths)
    for name in generated_methods(ctx.config):
        run_method(ctx, name, units)
