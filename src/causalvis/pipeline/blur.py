"""Stage ``blur``: natural references blurred everywhere except their best window.

For each natural reference (max side), the image is Gaussian-blurred (kernel
``blur.kernel``) and one square window of the occlusion's size (``occlusion.
patch_fraction`` of the side) on the occlusion's grid (``occlusion.stride``, plus the
border position; ``blur.stride`` may coarsen the search) is kept sharp: the window whose
sharp copy gives the unit's highest activation (the paper's "blurred" condition). All
composites are uint8, so the activations are those of the exact PNG bytes written; they
are measured in batched, truncated passes (:class:`ActivationProbe`). The window search
is :func:`causalvis.stimuli.blur.best_sharp_window`; each unit is one work item
(:mod:`causalvis.compute`), so units run on any executor.
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil

import numpy as np
import torch
from PIL import Image

from causalvis.compute import ItemContext, WorkItem, run_stage_items
from causalvis.errors import CausalvisError
from causalvis.images.preprocess import uint8_to_tensor
from causalvis.pipeline.items import item_model, model_spec
from causalvis.stimuli.blur import best_sharp_window, composite
from causalvis.stimuli.occlusion import Grid, blur_image
from causalvis.store.layout import StudyPaths, read_json
from causalvis.store.units import read_units

log = logging.getLogger("causalvis.blur")

ITEM_FUNC = "causalvis.pipeline.blur:blur_unit_item"


def blur_unit(
    ctx: ItemContext,
    net,
    probe,
    unit: dict,
    *,
    kernel: int,
    sigma: float | None,
    patch: int,
    stride: int,
    engine: str,
    batch_size: int,
) -> None:
    """Blurred references of one unit (``{"key", "layer", "channel"}``) from its natural
    references, written through the item context (atomic, recorded in the stamp)."""
    from causalvis.store.assets import encode_png

    key, layer, channel = unit["key"], unit["layer"], int(unit["channel"])
    natural = ctx.paths.reference_dir("natural", key)
    meta_file = ctx.paths.reference_meta("natural", key)
    if not meta_file.is_file():
        raise CausalvisError(
            f"no natural references in {natural}: run `causalvis build STUDY --stage exemplars`"
        )
    meta = read_json(meta_file)
    out_dir = ctx.paths.reference_dir("blur", key)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    rel_dir = out_dir.relative_to(ctx.paths.root)
    size = net.input_size
    images = []
    for item in meta["images"]:
        if item.get("role", "max") != "max":
            continue
        with Image.open(natural / item["file"]) as img:
            sharp = np.array(img.convert("RGB"), dtype=np.uint8)
        if sharp.shape[:2] != (size, size):
            raise CausalvisError(f"{natural / item['file']}: expected {size}x{size} pixels")
        blurred = blur_image(sharp, kernel, sigma)
        box, grid = best_sharp_window(
            net, sharp, blurred, layer, channel, patch=patch, stride=stride,
            engine=engine, batch_size=batch_size,
        )
        data = encode_png(Image.fromarray(composite(sharp, blurred, box)))
        ctx.write_bytes(rel_dir / item["file"], data)
        with Image.open(io.BytesIO(data)) as img:
            final = uint8_to_tensor(np.array(img.convert("RGB"), dtype=np.uint8))
        ends = probe.run(torch.stack([final, uint8_to_tensor(blurred)]))[layer][
            :, channel
        ].tolist()
        images.append({
            "file": item["file"], "image_set": item["image_set"], "index": item["index"],
            "image_id": item["image_id"], "rank": item["rank"],
            "box": " ".join(str(v) for v in box),
            "activation": ends[0],
            "activation_sharp": item.get("activation"),
            "activation_all_blurred": ends[1],
            "grid_max": float(grid.max()),
            "grid_min": float(grid.min()),
        })
    ctx.write_json(ctx.paths.reference_meta("blur", key).relative_to(ctx.paths.root), {
        "unit": key, "layer": layer, "channel": channel, "method": "blur",
        "kernel": kernel, "sigma": sigma, "patch": patch,
        "stride": stride, "images": images,
    })


def blur_unit_item(ctx: ItemContext, *, model: dict, unit: dict, **params) -> None:
    """Work item: one unit's blurred references, on any worker (model cached per process)."""
    from causalvis.models import ActivationProbe

    net = item_model(model, ctx.device)
    with ActivationProbe(net, [unit["layer"]]) as probe:
        blur_unit(ctx, net, probe, unit, **params)


def blur_items(ctx) -> list[WorkItem]:
    """One work item per unit (``blur/<unit>``); the digest hashes the blur and model
    config, the window geometry and the unit's natural ``meta.json``."""
    paths: StudyPaths = ctx.paths
    cfg = ctx.config
    base = cfg.digest("blur", "model")
    occ = cfg.occlusion
    stride = cfg.blur.stride or occ.stride
    size = ctx.model.input_size
    params = {
        "kernel": cfg.blur.kernel,
        "sigma": cfg.blur.sigma,
        "patch": Grid.for_config(size, occ.patch_fraction, stride).patch,
        "stride": stride,
        "engine": occ.engine,
        "batch_size": occ.batch_size,
    }
    items = []
    for unit in read_units(paths):
        natural_meta = paths.reference_meta("natural", unit.key)
        natural_hash = (
            hashlib.sha256(natural_meta.read_bytes()).hexdigest()[:16]
            if natural_meta.is_file() else "missing"
        )
        digest = hashlib.sha256(
            f"{base}:{occ.patch_fraction}:{occ.stride}:{natural_hash}".encode()
        ).hexdigest()[:16]
        items.append(WorkItem(
            name=f"blur/{unit.key}",
            func=ITEM_FUNC,
            kwargs={
                "model": model_spec(cfg),
                "unit": {"key": unit.key, "layer": unit.layer, "channel": unit.channel},
                **params,
            },
            digest=digest,
        ))
    return items


def blur_used(config) -> bool:
    """Whether a condition shows blurred references (directly or in a composite)."""
    from causalvis.pipeline.methods import get_method

    def uses(name: str) -> bool:
        method = get_method(name)
        if method.kind == "composite":
            return any(uses(part) for part, _ in method.parts)
        return method.name == "blur"

    return any(uses(name) for name in config.conditions.names)


def run_blur_stage(ctx) -> None:
    """Blurred references for every unit (skips units whose inputs are unchanged); does
    nothing when no condition uses them (e.g. every 2-AFC study)."""
    if not blur_used(ctx.config):
        log.info("blur: skipped (no condition of this %s study uses blurred references)",
                 ctx.config.task)
        return
    run_stage_items(ctx, blur_items(ctx), desc="blur")
