"""Stage ``occlusion``: activation maps over patch positions per (unit, image set).

For every unit of ``units.json`` (main and practice) and every image set of its
``exemplars/<unit>.json`` the stage sweeps the set's query image (plus, with
``trials.candidate_queries > 1``, further top-bin images, see :func:`candidate_queries`)
and writes ``occlusion/<unit>/set<b>.npz``:

``map`` ``[ny, nx]`` float32 and ``base`` (unoccluded activation) of the set's query;
``maps`` ``[K, ny, nx]``, ``bases`` ``[K]``, ``image_ids`` ``[K]``, ``ranks`` ``[K]`` for
all K candidates (index 0 = the set's query); ``offsets`` (grid offsets along each axis),
``size``, ``patch``, ``stride``, ``fill``.

Sweeps are grouped per query image: one truncated pass computes every channel of every
layer needed on that image, so units sharing a layer and a query never recompute.
``occlusion.engine`` picks exact incremental inference (:mod:`occlusion_incremental`)
where the architecture allows it (``auto``, the default) or the plain sweep (``full``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.study.layout import StudyPaths, read_json, stamp_matches, write_stamp

log = logging.getLogger("causalvis.occlusion")


@dataclass(frozen=True)
class Candidate:
    image_id: str
    rank: int


@dataclass(frozen=True)
class WorkItem:
    key: str
    layer: str
    channel: int
    image_set: int
    candidates: tuple[Candidate, ...]


@dataclass
class OcclusionResult:
    """One ``set<b>.npz``, decoded."""

    maps: np.ndarray  # [K, ny, nx]
    bases: np.ndarray  # [K]
    image_ids: list[str]
    ranks: list[int]
    offsets: np.ndarray
    size: int
    patch: int
    stride: int
    fill: str


def load_units(paths: StudyPaths) -> list[dict]:
    if not paths.units.is_file():
        raise CausalvisError(f"{paths.units} not found: run `causalvis build --stage units` first")
    units = read_json(paths.units).get("units", [])
    if not units:
        raise CausalvisError(f"{paths.units} lists no units")
    return units


def load_exemplars(paths: StudyPaths, key: str) -> dict:
    path = paths.exemplars / f"{key}.json"
    if not path.is_file():
        raise CausalvisError(f"{path} not found: run `causalvis build --stage exemplars` first")
    return read_json(path)


def candidate_queries(exemplars: dict, position: int, k: int, bin_size: int) -> list[Candidate]:
    """The image set's query, then up to ``k - 1`` unused images of the top rank bin.

    The top bin holds ranks 1..bin_size; image-set queries use some of them. The others
    are handed out disjointly, nearest rank to the queries first (set at list position
    ``position`` takes the ``position``-th slice), so no two image sets share a query and
    no candidate is a reference (references come from lower bins).
    """
    sets = exemplars["image_sets"]
    query = sets[position]["query"]
    out = [Candidate(query["image_id"], int(query["rank"]))]
    if k <= 1:
        return out
    used = {int(s["query"]["rank"]) for s in sets}
    by_rank = {int(e["rank"]): e["image_id"] for e in exemplars.get("top", [])}
    spare = sorted((r for r in by_rank if r <= bin_size and r not in used), reverse=True)
    extra = spare[position * (k - 1) : (position + 1) * (k - 1)]
    out += [Candidate(by_rank[r], r) for r in extra]
    return out


def plan(paths: StudyPaths, config) -> list[WorkItem]:
    k = config.trials.candidate_queries
    ex_cfg = config.exemplars
    bin_size = ex_cfg.n_top // ex_cfg.n_bins if ex_cfg.scheme == "rank_bins" else 0
    items = []
    for unit in load_units(paths):
        ex = load_exemplars(paths, unit["key"])
        for pos, image_set in enumerate(ex["image_sets"]):
            cands = candidate_queries(ex, pos, k, bin_size)
            items.append(
                WorkItem(unit["key"], unit["layer"], int(unit["channel"]),
                         int(image_set["image_set"]), tuple(cands))
            )
    return items


def result_path(paths: StudyPaths, key: str, image_set: int) -> Path:
    return paths.occlusion / key / f"set{image_set}.npz"


def _digest(config, item: WorkItem) -> str:
    sections = ["model", "images", "occlusion"]
    if config.occlusion.fill == "blur":
        sections.append("blur")
    ids = ",".join(f"{c.image_id}@{c.rank}" for c in item.candidates)
    return f"{config.digest(*sections)}|{item.layer}:{item.channel}|{ids}"


def _stamp_name(item: WorkItem) -> str:
    return f"occlusion/{item.key}/set{item.image_set}"


def save_result(path: Path, item: WorkItem, maps: list[np.ndarray], bases: list[float],
                grid, fill: str) -> None:
    from causalvis.study.layout import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            map=maps[0].astype(np.float32),
            base=np.float32(bases[0]),
            maps=np.stack(maps).astype(np.float32),
            bases=np.asarray(bases, dtype=np.float32),
            image_ids=np.asarray([c.image_id for c in item.candidates]),
            ranks=np.asarray([c.rank for c in item.candidates], dtype=np.int64),
            offsets=grid.offsets,
            size=np.int64(grid.size),
            patch=np.int64(grid.patch),
            stride=np.int64(grid.stride),
            fill=np.asarray(fill),
        )


def load_result(path: Path) -> OcclusionResult:
    if not path.is_file():
        raise CausalvisError(f"{path} not found: run `causalvis build --stage occlusion` first")
    with np.load(path, allow_pickle=False) as z:
        return OcclusionResult(
            maps=z["maps"], bases=z["bases"], image_ids=[str(s) for s in z["image_ids"]],
            ranks=[int(r) for r in z["ranks"]], offsets=z["offsets"], size=int(z["size"]),
            patch=int(z["patch"]), stride=int(z["stride"]), fill=str(z["fill"]),
        )


def make_occluder(image: np.ndarray, config, size: int):
    """The study's occluder for one query (same fill everywhere: sweep and served bytes)."""
    from causalvis.stimuli.occlusion import Grid, Occluder

    occ = config.occlusion
    return Occluder(
        image, Grid.for_config(size, occ.patch_fraction, occ.stride), fill=occ.fill,
        blur_kernel=config.blur.kernel, blur_sigma=config.blur.sigma, seed=occ.seed,
    )


def sweep_layers(model, occluder, layers: list[str], engine: str, batch_size: int,
                 on_batch=None):
    """The sweep with the configured engine: ``incremental`` (exact window-only
    recomputation), ``full`` (truncated forward of every occluded image) or ``auto``
    (incremental where the architecture and layers allow it)."""
    from causalvis.stimuli.occlusion import occlusion_sweep
    from causalvis.stimuli.occlusion_incremental import IncrementalSweep

    if engine != "full":
        try:
            inc = IncrementalSweep(model, layers)
        except NotImplementedError as exc:
            if engine == "incremental":
                raise CausalvisError(f"occlusion.engine = 'incremental': {exc}") from exc
        else:
            return inc.run(occluder, batch_size=batch_size, on_batch=on_batch)
    return occlusion_sweep(model, occluder, layers, batch_size=batch_size, on_batch=on_batch)


def run_occlusion_stage(ctx) -> None:
    """Sweep every pending (unit, image set); one pass per query image for all layers."""
    from tqdm import tqdm

    paths, config = ctx.paths, ctx.config
    if config.task != "causal_occlusion":
        log.info("occlusion: skipped (task %s does not use occlusion)", config.task)
        return
    items = plan(paths, config)
    todo = [
        it for it in items
        if not (result_path(paths, it.key, it.image_set).is_file()
                and stamp_matches(paths, _stamp_name(it), _digest(config, it)))
    ]
    log.info("occlusion: %d of %d (unit, image set) maps to compute", len(todo), len(items))
    if not todo:
        return
    model = ctx.model
    layers_of: dict[str, set[str]] = defaultdict(set)
    for it in todo:
        for cand in it.candidates:
            layers_of[cand.image_id].add(it.layer)
    results: dict[tuple[str, int], dict[int, tuple[np.ndarray, float]]] = defaultdict(dict)
    written: set[tuple[str, int]] = set()
    size = model.input_size
    bar = None
    for image_id, layers in layers_of.items():
        occluder = make_occluder(ctx.source.load_array(image_id), config, size)
        if bar is None:
            bar = tqdm(total=len(occluder) * len(layers_of), desc="occlusion", unit="img",
                       disable=not ctx.progress)
        sweep = sweep_layers(model, occluder, sorted(layers), config.occlusion.engine,
                             config.occlusion.batch_size, on_batch=bar.update)
        for it in todo:
            for ci, cand in enumerate(it.candidates):
                if cand.image_id == image_id:
                    results[(it.key, it.image_set)][ci] = (
                        sweep.unit_map(it.layer, it.channel).copy(),
                        float(sweep.base[it.layer][it.channel]),
                    )
        for it in todo:
            item_id = (it.key, it.image_set)
            got = results.get(item_id, {})
            if item_id in written or len(got) < len(it.candidates):
                continue
            maps = [got[i][0] for i in range(len(it.candidates))]
            bases = [got[i][1] for i in range(len(it.candidates))]
            save_result(result_path(paths, it.key, it.image_set), it, maps, bases,
                        occluder.grid, config.occlusion.fill)
            write_stamp(paths, _stamp_name(it), _digest(config, it))
            written.add(item_id)
            del results[item_id]
    if bar is not None:
        bar.close()
