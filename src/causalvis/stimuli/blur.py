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
from collections.abc import Callable

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
    sharp: np.ndarray,
    blurred: np.ndarray,
    score: Callable[[torch.Tensor], torch.Tensor],
    *,
    patch: int,
    stride: int,
    batch_size: int = 64,
) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The window whose sharp copy maximises ``score`` (images ``[B, 3, S, S]`` in [0, 1]
    -> ``[B]``), and the score of every grid position ``[n_y, n_x]`` (the occlusion's
    :class:`Grid`, border included). Ties go to the first position in row-major order."""
    grid = Grid(sharp.shape[0], patch, stride)
    boxes = [grid.box(i) for i in range(len(grid.positions()))]
    sharp_t = uint8_to_tensor(sharp)
    blurred_t = uint8_to_tensor(blurred)
    scores = []
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        batch = blurred_t.unsqueeze(0).repeat(len(chunk), 1, 1, 1)
        for k, (x0, y0, x1, y1) in enumerate(chunk):
            batch[k, :, y0:y1, x0:x1] = sharp_t[:, y0:y1, x0:x1]
        scores.append(score(batch).detach().float().cpu())
    values = torch.cat(scores).numpy().reshape(grid.shape)
    return boxes[int(np.argmax(values))], values


# -- the stage -------------------------------------------------------------------------------

def _unit_score(probe, layer: str, channel: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def score(batch: torch.Tensor) -> torch.Tensor:
        return probe.run(batch)[layer][:, channel]

    return score


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
    score = _unit_score(probe, unit.layer, unit.channel)
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
            sharp, blurred, score, patch=patch, stride=stride,
            batch_size=cfg.occlusion.batch_size,
        )
        data = encode_png(Image.fromarray(composite(sharp, blurred, box)))
        atomic_write(out_dir / item["file"], data)
        with Image.open(io.BytesIO(data)) as img:
            final = uint8_to_tensor(np.array(img.convert("RGB"), dtype=np.uint8))
        ends = score(torch.stack([final, uint8_to_tensor(blurred)])).tolist()
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
