"""Stage ``exemplars``: per unit, the ranked images and the query / reference image sets.

Reads the scan, re-measures the extreme ranks exactly (:func:`refine_extremes`, one pass
shared by all units), plans the image sets with the configured scheme
(:mod:`causalvis.stimuli.exemplars`) and writes ``exemplars/<unit>.json``
(:mod:`causalvis.store.exemplars`) and the natural references as PNGs
(``references/natural/<unit>/``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
from collections.abc import Callable, Hashable, Sequence
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


def write_natural_references(ctx, records: Sequence[tuple[UnitEntry, ExemplarRecord]]) -> None:
    """PNGs of the units' natural references + meta.json with probe-measured activations
    of the exact stored bytes: every distinct image encoded, decoded and measured once
    for all units, each only as deep as the deepest of its units' layers."""
    from causalvis.images.preprocess import pil_to_tensor
    from causalvis.store.assets import encode_png

    files = {unit.key: _reference_files(record) for unit, record in records}
    pngs: dict[str, bytes] = {}
    for items in files.values():
        for item in items:
            if item["image_id"] not in pngs:
                pngs[item["image_id"]] = encode_png(ctx.source.load(item["image_id"]))

    def load(image_id: str):
        with Image.open(io.BytesIO(pngs[image_id])) as img:  # the served bytes, decoded
            return pil_to_tensor(img)

    needs = {(unit.layer, item["image_id"]) for unit, _ in records for item in files[unit.key]}
    exact = exact_means(ctx.model, needs, load)
    for unit, _ in records:
        folder = ctx.paths.reference_dir("natural", unit.key)
        if folder.exists():
            shutil.rmtree(folder)
        for item in files[unit.key]:
            atomic_write(folder / item["file"], pngs[item["image_id"]])
            item["activation"] = float(exact[unit.layer, item["image_id"]][unit.channel])
        write_json(ctx.paths.reference_meta("natural", unit.key),
                   {"unit": unit.key, "layer": unit.layer, "channel": unit.channel,
                    "method": "natural", "images": files[unit.key]})


def exact_means(model, needs: set[tuple[str, Hashable]], load: Callable[[Hashable], object],
                batch: int = 32) -> dict[tuple[str, Hashable], np.ndarray]:
    """All-channel spatial means (float32) for each needed ``(layer, image)``.

    Each image is loaded once and forwarded once, truncated after the deepest layer any
    of its needs names (images grouped by that layer, in a deterministic order), instead
    of one truncated pass per unit: units that share images or layers share the work."""
    from causalvis.models import probe_tensor

    layers = sorted({layer for layer, _ in needs})
    if not needs:
        return {}
    by_image: dict[Hashable, set[str]] = {}
    for layer, image in needs:
        by_image.setdefault(image, set()).add(layer)
    depth = {name: i for i, name in enumerate(_fire_order(model, layers, load(
        min(by_image))))}
    groups: dict[str, list[Hashable]] = {}
    for image, wanted in by_image.items():
        groups.setdefault(max(wanted, key=depth.__getitem__), []).append(image)
    out: dict[tuple[str, Hashable], np.ndarray] = {}
    for deepest in sorted(groups, key=depth.__getitem__):
        images = sorted(groups[deepest])
        read = [name for name in layers if depth[name] <= depth[deepest]
                and any(name in by_image[i] for i in images)]
        for start in range(0, len(images), batch):
            chunk = images[start : start + batch]
            acts = probe_tensor(model, _stack([load(i) for i in chunk]), read)
            for name in read:
                values = acts[name].float().numpy()
                for row, image in enumerate(chunk):
                    if name in by_image[image]:
                        out[name, image] = values[row]
    return out


def _fire_order(model, layers: list[str], image) -> list[str]:
    """The layers in the order a forward pass reaches them (one image, one pass)."""
    from causalvis.models import ActivationProbe

    with ActivationProbe(model, layers, truncate=False) as probe:
        return list(probe.run(image[None]))


def _ranks_needed(cfg, n_images: int) -> tuple[int, int]:
    """How many top / bottom ranks must be exact for the scheme (one past the last used
    rank, so the tie check at the bin boundary compares exact values too)."""
    if cfg.scheme == "rank_bins":
        return min(n_images, cfg.n_top + 1), 0
    # imi: the reference pool and the easy query window below it (hard windows lie deep
    # in the ranking, where the scan's precision decides nothing the tie check looks at).
    return (min(n_images, cfg.n_image_sets * (cfg.n_references + 1) + 1),
            min(n_images, cfg.n_image_sets * (cfg.n_min_references + 1) + 1))


def extreme_candidates(acts: np.ndarray, needed: tuple[int, int]) -> list[int]:
    """Indices of every image that could hold one of the needed top or bottom ranks.

    The scan stores float16 (about three significant digits), which creates ties that
    are not in the model: ranks near a bin boundary could be decided by rounding. Every
    image whose stored value lies within two float16 steps of the k-th value is measured
    again (:func:`exact_means`), so the k extreme images by exact value are all among the
    re-measured ones.
    """
    acts = np.asarray(acts, dtype=np.float64)
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
    return sorted(candidates)


def refine_extremes(ctx, units: Sequence[UnitEntry], table: ActivationTable,
                    needed: tuple[int, int]) -> dict[str, np.ndarray]:
    """Each unit's scan column with its extreme candidates re-measured in float32, for
    all units in one shared pass (:func:`exact_means`)."""
    from causalvis.images.preprocess import pil_to_tensor

    ids = table.ids
    columns = {u.key: np.asarray(table.column(u.layer, u.channel), dtype=np.float64).copy()
               for u in units}
    chosen = {u.key: extreme_candidates(columns[u.key], needed) for u in units}
    needs = {(u.layer, i) for u in units for i in chosen[u.key]}
    exact = exact_means(ctx.model, needs, lambda i: pil_to_tensor(ctx.source.load(ids[i])))
    for u in units:
        col = columns[u.key]
        for i in chosen[u.key]:
            col[i] = float(exact[u.layer, i][u.channel])
    return columns


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
    if not todo:
        return
    # every unit's candidates, not only the unfinished ones': the shared pass (and with
    # it each value's last float bits) then does not depend on what a crash left done
    exact = refine_extremes(ctx, units, table, _ranks_needed(cfg, len(table.ids)))
    done = []
    for unit, _, _ in tqdm(todo, desc="exemplars", unit="unit", disable=not ctx.progress):
        acts = exact[unit.key]
        plan = plan_for_unit(acts, cfg, [cfg.seed, unit.seed], unit.spec, by_image)
        record = exemplar_record(unit, acts, table.ids, plan, cfg, by_image,
                                 groups.grouping if groups else "groups")
        rule = record.exclude_query_group
        if rule is not None and (rule.reused or rule.same_group):
            log.warning("exemplars: unit %s: too few images outside the queries' groups: "
                        "%d references reused within their bin, %d share the query's group",
                        unit.spec, rule.reused, rule.same_group)
        write_exemplars(paths, record)
        done.append((unit, record))
    write_natural_references(ctx, done)
    for _, digest, name in todo:
        write_stamp(paths, name, digest)
