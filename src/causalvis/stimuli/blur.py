"""Stage ``blur``: natural references blurred everywhere except their best window.

For each natural reference (max side), the image is Gaussian-blurred (kernel
``blur.kernel``) and one square window of the occlusion's size (``occlusion.
patch_fraction`` of the side) on the occlusion's grid (``occlusion.stride``, plus the
border position; ``blur.stride`` may coarsen the search) is kept sharp: the window whose
sharp copy gives the unit's highest activation (the paper's "blurred" condition). All
composites are uint8, so the activations are those of the exact PNG bytes written; they
are measured in batched, truncated passes (:class:`ActivationProbe`).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from causalvis.errors import CausalvisError
from causalvis.images.preprocess import uint8_to_tensor
from causalvis.stimuli.occlusion import Grid, blur_image
from causalvis.study.layout import (
    StudyPaths,
    atomic_write,
    read_json,
    stamp_matches,
    write_json,
    write_stamp,
)

log = logging.getLogger("causalvis.blur")


# -- pure parts ------------------------------------------------------------------------------

def composite(
    sharp: np.ndarray, blurred: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray:
    """``blurred`` with the window ``box = (x0, y0, x1, y1)`` taken from ``sharp``."""
    x0, y0, x1, y1 = box
    out = blurred.copy()
    out[y0:y1, x0:x1] = sharp[y0:y1, x0:x1]
    return out


def best_sharp_window(
    model,
    sharp: np.ndarray,
    blurred: np.ndarray,
    layer: str,
    channel: int,
    *,
    patch: int,
    stride: int,
    engine: str = "auto",
    batch_size: int = 64,
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The window whose sharp copy maximises the unit, and the unit's activation at every
    grid position ``[n_y, n_x]`` (the occlusion's :class:`Grid`, border included).

    This is an occlusion sweep in reverse: the base image is the blurred one and the
    "patch" shows the sharp pixels, so the same engine (exact incremental inference where
    the architecture allows it) computes it. Ties go to the first position (row-major)."""
    from causalvis.stimuli.occlusion import Occluder
    from causalvis.stimuli.occlusion_stage import sweep_layers

    grid = Grid(sharp.shape[0], patch, stride)
    occluder = Occluder(blurred, grid, fill="canvas", canvas=sharp)
    sweep = sweep_layers(model, occluder, [layer], engine, batch_size)
    values = sweep.unit_map(layer, channel)
    return grid.box(int(np.argmax(values))), values


# -- the stage -------------------------------------------------------------------------------

def blur_unit(ctx, unit, probe) -> None:
    """Blurred references of one unit from its natural references."""
    from causalvis.study.assets import encode_png

    cfg = ctx.config
    natural = ctx.paths.reference_dir("natural", unit.key)
    meta_file = natural / "meta.json"
    if not meta_file.is_file():
        raise CausalvisError(
            f"no natural references in {natural}: run `causalvis build STUDY --stage exemplars`"
        )
    meta = read_json(meta_file)
    out_dir = ctx.paths.reference_dir("blur", unit.key)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    size = ctx.model.input_size
    stride = cfg.blur.stride or cfg.occlusion.stride
    patch = Grid.for_config(size, cfg.occlusion.patch_fraction, stride).patch
    images = []
    for item in meta["images"]:
        if item.get("role", "max") != "max":
            continue
        with Image.open(natural / item["file"]) as img:
            sharp = np.array(img.convert("RGB"), dtype=np.uint8)
        if sharp.shape[:2] != (size, size):
            raise CausalvisError(f"{natural / item['file']}: expected {size}x{size} pixels")
        blurred = blur_image(sharp, cfg.blur.kernel, cfg.blur.sigma)
        box, grid = best_sharp_window(
            ctx.model, sharp, blurred, unit.layer, unit.channel, patch=patch, stride=stride,
            engine=cfg.occlusion.engine, batch_size=cfg.occlusion.batch_size,
        )
        data = encode_png(Image.fromarray(composite(sharp, blurred, box)))
        atomic_write(out_dir / item["file"], data)
        with Image.open(io.BytesIO(data)) as img:
            final = uint8_to_tensor(np.array(img.convert("RGB"), dtype=np.uint8))
        ends = probe.run(torch.stack([final, uint8_to_tensor(blurred)]))[unit.layer][
            :, unit.channel
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
    write_json(out_dir / "meta.json", {
        "unit": unit.key, "layer": unit.layer, "channel": unit.channel, "method": "blur",
        "kernel": cfg.blur.kernel, "sigma": cfg.blur.sigma, "patch": patch,
        "stride": stride, "images": images,
    })


def run_blur_stage(ctx) -> None:
    """Blurred references for every unit (skips units whose inputs are unchanged)."""
    from causalvis.models import ActivationProbe
    from causalvis.stimuli.units import load_units

    paths: StudyPaths = ctx.paths
    units = load_units(paths)
    base = ctx.config.digest("blur", "model")
    occ = ctx.config.occlusion
    todo = []
    for unit in units:
        natural_meta = paths.reference_dir("natural", unit.key) / "meta.json"
        natural_hash = (
            hashlib.sha256(natural_meta.read_bytes()).hexdigest()[:16]
            if natural_meta.is_file() else "missing"
        )
        digest = hashlib.sha256(
            f"{base}:{occ.patch_fraction}:{occ.stride}:{natural_hash}".encode()
        ).hexdigest()[:16]
        out = paths.reference_dir("blur", unit.key) / "meta.json"
        name = f"blur-{unit.key}"
        if not (stamp_matches(paths, name, digest) and out.is_file()):
            todo.append((unit, digest, name))
    if len(todo) < len(units):
        log.info("blur: %d of %d units already done", len(units) - len(todo), len(units))
    for unit, digest, name in tqdm(todo, desc="blur", unit="unit", disable=not ctx.progress):
        with ActivationProbe(ctx.model, [unit.layer]) as probe:
            blur_unit(ctx, unit, probe)
        write_stamp(paths, name, digest)
