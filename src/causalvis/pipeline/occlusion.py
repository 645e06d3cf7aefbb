"""Stage ``occlusion``: activation maps over patch positions per (unit, image set).

For every unit of ``units.json`` (main and practice) and every image set of its
``exemplars/<unit>.json`` the stage sweeps the set's query image (plus, with
``trials.candidate_queries > 1``, further top-bin images, see :func:`candidate_queries`)
and writes ``occlusion/<unit>/set<b>.npz`` (:mod:`causalvis.store.occlusion`: the maps
and unoccluded activations of all K candidates, index 0 = the set's query, and the grid).

Sweeps are grouped per query image: one truncated pass computes every channel of every
layer needed on that image, so units sharing a layer and a query never recompute.
``occlusion.engine`` picks exact incremental inference where the architecture allows it
(``auto``, the default) or the plain sweep (``full``), see :mod:`causalvis.stimuli.sweep`.
Each group of targets sharing query images is one work item (:mod:`causalvis.compute`),
so sweeps run on any executor; the ``.npz`` bytes are deterministic (fixed zip times).
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from causalvis.compute import ItemContext, WorkItem, input_digest, run_stage_items
from causalvis.stimuli.sweep import sweep_layers
from causalvis.store.exemplars import ExemplarRecord, read_exemplars
from causalvis.store.layout import StudyPaths
from causalvis.store.occlusion import OcclusionResult, encode_occlusion
from causalvis.store.units import Unit, read_units

log = logging.getLogger("causalvis.occlusion")


@dataclass(frozen=True)
class Candidate:
    image_id: str
    rank: int


@dataclass(frozen=True)
class OcclusionTarget:
    """One ``occlusion/<unit>/set<b>.npz``: a unit and its image set's candidate queries."""

    unit: Unit
    image_set: int
    candidates: tuple[Candidate, ...]

    @property
    def key(self) -> str:
        return self.unit.key


def candidate_queries(
    exemplars: ExemplarRecord, position: int, k: int, bin_size: int
) -> list[Candidate]:
    """The image set's query, then up to ``k - 1`` unused images of the top rank bin.

    The top bin holds ranks 1..bin_size; image-set queries use some of them. The others
    are handed out disjointly, nearest rank to the queries first (set at list position
    ``position`` takes the ``position``-th slice), so no two image sets share a query and
    no candidate is a reference (references come from lower bins).
    """
    sets = exemplars.image_sets
    query = sets[position].query
    out = [Candidate(query.image_id, query.rank)]
    if k <= 1:
        return out
    used = {s.query.rank for s in sets}
    by_rank = {e.rank: e.image_id for e in exemplars.top}
    spare = sorted((r for r in by_rank if r <= bin_size and r not in used), reverse=True)
    extra = spare[position * (k - 1) : (position + 1) * (k - 1)]
    out += [Candidate(by_rank[r], r) for r in extra]
    return out


def plan(paths: StudyPaths, config) -> list[OcclusionTarget]:
    k = config.trials.candidate_queries
    ex_cfg = config.exemplars
    bin_size = ex_cfg.n_top // ex_cfg.n_bins if ex_cfg.scheme == "rank_bins" else 0
    items = []
    for unit in read_units(paths):
        ex = read_exemplars(paths, unit.key)
        for pos, image_set in enumerate(ex.image_sets):
            cands = candidate_queries(ex, pos, k, bin_size)
            items.append(OcclusionTarget(unit.unit, image_set.image_set, tuple(cands)))
    return items

def _digest(config, item: OcclusionTarget) -> str:
    sections = ["model", "images", "occlusion"]
    if config.dictionaries:
        sections.append("dictionaries")
    if config.occlusion.fill == "blur":
        sections.append("blur")
    ids = ",".join(f"{c.image_id}@{c.rank}" for c in item.candidates)
    return f"{config.digest(*sections)}|{item.unit.spec}|{ids}"


def make_occluder(image: np.ndarray, config, size: int):
    """The study's occluder for one query (same fill everywhere: sweep and served bytes)."""
    from causalvis.stimuli.occlusion import Grid, Occluder

    occ = config.occlusion
    return Occluder(
        image, Grid.for_config(size, occ.patch_fraction, occ.stride), fill=occ.fill,
        blur_kernel=config.blur.kernel, blur_sigma=config.blur.sigma, seed=occ.seed,
    )


ITEM_FUNC = "causalvis.pipeline.occlusion:occlusion_item"


def _groups(targets: list[OcclusionTarget]) -> list[list[OcclusionTarget]]:
    """Targets connected through shared candidate images, in plan order.

    Every group is one work item: each of its query images is swept once for all layers
    its targets need, and no target needs an image of another group. With one candidate
    per image set a group is exactly the targets sharing one query image."""
    parent = list(range(len(targets)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, t in enumerate(targets):
        for cand in t.candidates:
            j = owner.setdefault(cand.image_id, i)
            ri, rj = find(i), find(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[OcclusionTarget]] = defaultdict(list)
    for i, t in enumerate(targets):
        groups[find(i)].append(t)
    return [groups[r] for r in sorted(groups)]


def _item_name(group: list[OcclusionTarget]) -> str:
    """Stable, path-safe name from the group's query images (ids may hold any character)."""
    images = sorted({c.image_id for t in group for c in t.candidates})
    return "occlusion/query-" + hashlib.sha256("\n".join(images).encode()).hexdigest()[:16]


def _target_kwargs(t: OcclusionTarget) -> dict:
    return {"key": t.key, "layer": t.unit.layer, "channel": t.unit.channel,
            "image_set": t.image_set,
            "candidates": [[c.image_id, c.rank] for c in t.candidates]}


def occlusion_items(ctx) -> list[WorkItem]:
    """One work item per group of targets sharing query images (see :func:`_groups`)."""
    from causalvis.pipeline.items import model_spec, source_spec

    paths, config = ctx.paths, ctx.config
    occ = config.occlusion
    params = {
        "model": model_spec(config),
        "source": source_spec(paths, config),
        "occlusion": {"patch_fraction": occ.patch_fraction, "stride": occ.stride,
                      "fill": occ.fill, "seed": occ.seed, "engine": occ.engine,
                      "batch_size": occ.batch_size},
        "blur": {"kernel": config.blur.kernel, "sigma": config.blur.sigma},
    }
    items = []
    for group in _groups(plan(paths, config)):
        items.append(WorkItem(
            name=_item_name(group),
            func=ITEM_FUNC,
            kwargs={**params, "targets": [_target_kwargs(t) for t in group]},
            digest=input_digest(sorted(_digest(config, t) for t in group)),
        ))
    return items


def occlusion_item(ctx: ItemContext, *, model: dict, source: str, occlusion: dict,
                   blur: dict, targets: list[dict]) -> dict:
    """Work item: sweep each query image of the group once (all layers it needs) and write
    every target's ``set<b>.npz``."""
    from causalvis.pipeline.items import item_model, item_source
    from causalvis.stimuli.occlusion import Grid, Occluder

    net = item_model(model, ctx.device)
    images = item_source(source, net)
    layers_of: dict[str, set[str]] = defaultdict(set)
    for t in targets:
        for image_id, _rank in t["candidates"]:
            layers_of[image_id].add(t["layer"])
    grid = Grid.for_config(net.input_size, occlusion["patch_fraction"], occlusion["stride"])
    found: dict[tuple[str, str, int], tuple[np.ndarray, float]] = {}
    engines: dict[tuple[str, str], str] = {}
    for image_id, layers in layers_of.items():
        occluder = Occluder(
            images.load_array(image_id), grid, fill=occlusion["fill"],
            blur_kernel=blur["kernel"], blur_sigma=blur["sigma"], seed=occlusion["seed"],
        )
        sweep = sweep_layers(net, occluder, sorted(layers), occlusion["engine"],
                             occlusion["batch_size"])
        for layer in layers:
            engines[(image_id, layer)] = sweep.engine
        for t in targets:
            if any(image_id == c[0] for c in t["candidates"]):
                found[(image_id, t["layer"], t["channel"])] = (
                    sweep.unit_map(t["layer"], t["channel"]).copy(),
                    float(sweep.base[t["layer"]][t["channel"]]),
                )
    for t in targets:
        got = [found[(c[0], t["layer"], t["channel"])] for c in t["candidates"]]
        result = OcclusionResult(
            maps=np.stack([m for m, _ in got]), bases=np.asarray([b for _, b in got]),
            image_ids=[c[0] for c in t["candidates"]], ranks=[c[1] for c in t["candidates"]],
            offsets=grid.offsets, size=grid.size, patch=grid.patch, stride=grid.stride,
            fill=occlusion["fill"],
            # "incremental" only when every candidate's sweep was; else "full" ran somewhere
            engine=min(engines[(c[0], t["layer"])] for c in t["candidates"]),
        )
        path = ctx.paths.occlusion_result(t["key"], t["image_set"])
        ctx.write_bytes(path.relative_to(ctx.paths.root), encode_occlusion(result))
    log.info("occlusion: %s engine for %d query image(s)",
             "+".join(sorted(set(engines.values()))), len(layers_of))
    return {"images": len(layers_of), "targets": len(targets),
            "engines": sorted(set(engines.values()))}


def run_occlusion_stage(ctx) -> None:
    """Sweep every (unit, image set) as work items, one pass per query image."""
    items = occlusion_items(ctx)
    n_targets = sum(len(item.kwargs["targets"]) for item in items)
    log.info("occlusion: %d (unit, image set) maps in %d work items", n_targets, len(items))
    run_stage_items(ctx, items, desc="occlusion")
