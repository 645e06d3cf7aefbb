"""Stage ``exemplars``: per unit, the ranked images and the query / reference image sets.

Reads the scan, re-measures the extreme ranks exactly (:func:`refine_extremes`), plans the
image sets with the configured scheme (:mod:`causalvis.stimuli.exemplars`) and writes
``exemplars/<unit>.json`` (:mod:`causalvis.store.exemplars`) and the natural references as
PNGs (``references/natural/<unit>/``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from causalvis.images.groups import ImageGroups, source_groups
from causalvis.stimuli.exemplars import exemplar_record, groups_apply, plan_for_unit
from causalvis.store.activations import ActivationTable
from causalvis.store.exemplars import ExemplarRecord, RankedImage, write_exemplars
from causalvis.store.layout import (
    StudyPaths,
    atomic_write,
    stamp_matches,
    write_json,
    write_stamp,
)
from causalvis.store.units import UnitEntry, read_units

log = logging.getLogger("causalvis.exemplars")


def _reference_files(record: ExemplarRecord) -> list[dict]:
    """Natural reference images to write: ``set<b>-<i>.png`` (max side) and, for the imi
    scheme, ``set<b>-min-<i>.png`` (min side)."""
    from causalvis.pipeline.methods import reference_file

    files = []
    for s in record.image_sets:
        b = s.image_set
        for side, refs in (("max", s.references), ("min", s.min_references)):
            for i, ref in enumerate(refs):
                files.append({"file": reference_file(i, b, side), "image_set": b, "index": i,
                              "role": side, **_ref_fields(ref)})
    return files


def _ref_fields(ref: RankedImage) -> dict:
    return {"image_id": ref.image_id, "rank": ref.rank, "scan_activation": ref.activation}


def write_natural_references(ctx, unit: UnitEntry, record: ExemplarRecord) -> None:
    """PNGs of the unit's natural references + meta.json with probe-measured activations
    of the exact stored bytes."""
    from causalvis.images.preprocess import pil_to_tensor
    from causalvis.models import probe_tensor
    from causalvis.store.assets import encode_png

    folder = ctx.paths.reference_dir("natural", unit.key)
    if folder.exists():
        shutil.rmtree(folder)
    files = _reference_files(record)
    cache: dict[str, bytes] = {}
    tensors = []
    for item in files:
        if item["image_id"] not in cache:
            cache[item["image_id"]] = encode_png(ctx.source.load(item["image_id"]))
        data = cache[item["image_id"]]
        atomic_write(folder / item["file"], data)
        with Image.open(io.BytesIO(data)) as img:
            tensors.append(pil_to_tensor(img))
    acts = probe_tensor(ctx.model, _stack(tensors), [unit.layer])[unit.layer][:, unit.channel]
    for item, act in zip(files, acts.tolist(), strict=True):
        item["activation"] = act
    write_json(ctx.paths.reference_meta("natural", unit.key),
               {"unit": unit.key, "layer": unit.layer, "channel": unit.channel,
                "method": "natural", "images": files})


def _ranks_needed(cfg, n_images: int) -> tuple[int, int]:
    """How many top / bottom ranks must be exact for the scheme (one past the last used
    rank, so the tie check at the bin boundary compares exact values too)."""
    if cfg.scheme == "rank_bins":
        return min(n_images, cfg.n_top + 1), 0
    # imi: the reference pool and the easy query window below it (hard windows lie deep
    # in the ranking, where the scan's precision decides nothing the tie check looks at).
    return (min(n_images, cfg.n_image_sets * (cfg.n_references + 1) + 1),
            min(n_images, cfg.n_image_sets * (cfg.n_min_references + 1) + 1))


def refine_extremes(
    ctx, unit: UnitEntry, ids: Sequence[str], acts: np.ndarray, needed: tuple[int, int],
    batch: int = 32,
) -> np.ndarray:
    """Exact (float32) activations for every image that could hold one of the needed top
    or bottom ranks.

    The scan stores float16 (about three significant digits), which creates ties that
    are not in the model: ranks near a bin boundary could be decided by rounding. Every
    image whose stored value lies within two float16 steps of the k-th value is measured
    again, so the k extreme images by exact value are all among the re-measured ones.
    """
    from causalvis.images.preprocess import pil_to_tensor
    from causalvis.models import probe_tensor

    acts = np.asarray(acts, dtype=np.float64).copy()
    n_top, n_bottom = needed
    candidates: set[int] = set()
    order = np.sort(acts)
    for k, side in ((n_top, "top"), (n_bottom, "bottom")):
        if k <= 0:
            continue
        kth = order[-k] if side == "top" else order[k - 1]
        tol = 2 * float(np.spacing(np.float16(abs(kth)))) + 1e-6
        mask = acts >= kth - tol if side == "top" else acts <= kth + tol
        candidates.update(np.flatnonzero(mask).tolist())
    idx = sorted(candidates)
    for start in range(0, len(idx), batch):
        chunk = idx[start : start + batch]
        images = _stack([pil_to_tensor(ctx.source.load(ids[i])) for i in chunk])
        exact = probe_tensor(ctx.model, images, [unit.layer])[unit.layer][:, unit.channel]
        acts[chunk] = exact.double().numpy()
    return acts


def study_groups(ctx, ids: Sequence[str]) -> ImageGroups | None:
    """The scanned images' groups (``images.groups``); a relative ``images.groups_csv`` is
    read as a relative ``images.source`` is (from the working directory if it exists
    there, else from the study folder)."""
    images = ctx.config.images
    csv_path = images.groups_csv
    if csv_path and not Path(csv_path).is_absolute() and not Path(csv_path).exists():
        csv_path = str(ctx.paths.root / csv_path)
    return source_groups(images.source, images.groups, csv_path, ids)


def _stack(tensors):
    import torch

    return torch.stack(tensors)


def run_exemplars_stage(ctx) -> None:
    """Exemplar sets + natural reference PNGs for every unit (main and practice)."""
    paths: StudyPaths = ctx.paths
    cfg = ctx.config.exemplars
    units = read_units(paths)
    table = ActivationTable(paths)
    base = f"{ctx.config.digest('exemplars', 'model', 'images')}:{table.digest}"
    groups = study_groups(ctx, table.ids) if cfg.exclude_query_group else None
    by_image = None if groups is None else groups.for_ids(table.ids)
    if groups_apply(cfg, by_image):
        base += f":groups={groups.digest}"
        log.info("exemplars: no reference from its query's group (%s, %d groups)",
                 groups.grouping, len(set(groups.by_id.values())))
    todo = []
    for unit in units:
        digest = hashlib.sha256(f"{base}:{unit.spec}:{unit.seed}".encode()).hexdigest()[:16]
        out = paths.exemplar(unit.key)
        meta = paths.reference_meta("natural", unit.key)
        name = f"exemplars-{unit.key}"
        if not (stamp_matches(paths, name, digest) and out.is_file() and meta.is_file()):
            todo.append((unit, digest, name))
    if len(todo) < len(units):
        log.info("exemplars: %d of %d units already done", len(units) - len(todo), len(units))
    ids = table.ids if todo else []
    for unit, digest, name in tqdm(todo, desc="exemplars", unit="unit",
                                        disable=not ctx.progress):
        acts = table.column(unit.layer, unit.channel)
        acts = refine_extremes(ctx, unit, ids, acts, _ranks_needed(cfg, len(acts)))
        plan = plan_for_unit(acts, cfg, [cfg.seed, unit.seed], unit.spec, by_image)
        record = exemplar_record(unit, acts, ids, plan, cfg, by_image,
                                 groups.grouping if groups else "groups")
        rule = record.exclude_query_group
        if rule is not None and (rule.reused or rule.same_group):
            log.warning("exemplars: unit %s: too few images outside the queries' groups: "
                        "%d references reused within their bin, %d share the query's group",
                        unit.spec, rule.reused, rule.same_group)
        write_exemplars(paths, record)
        write_natural_references(ctx, unit, record)
        write_stamp(paths, name, digest)
