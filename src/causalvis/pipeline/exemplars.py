"""Stage ``exemplars``: per unit, the ranked images and the query / reference image sets.

Two schemes (``exemplars.scheme``):

* ``rank_bins`` (paper2021): the ``n_top`` most activating images are cut into ``n_bins``
  bins of ``s = n_top / n_bins``. Image set ``b`` (0-based) uses rank ``s - b`` (1-based,
  top bin) as query and one image of each lower bin as references; within a bin the
  assignment to image sets is a seeded permutation, so image sets get different
  references. The query is never a reference (different bins).
* ``imi`` (IMI 2023 / ICLR 2021 2-AFC): the ``n_references`` most and ``n_min_references``
  least activating images are the references; queries come from rank windows
  (``query_windows``: fractions of the dataset below the references, from the top for the
  max query and from the bottom for the min query).

Ranks are 1-based; equal activations are ordered by scan order, and a tie that would make
a query indistinguishable from its references is a clear error. The stage also writes
the natural references as PNGs (``references/natural/<unit>/``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from causalvis.errors import CausalvisError
from causalvis.store.layout import (
    StudyPaths,
    atomic_write,
    stamp_matches,
    write_json,
    write_stamp,
)

log = logging.getLogger("causalvis.exemplars")


class ExemplarError(CausalvisError):
    """Too few images or tied activations for the exemplar scheme."""


@dataclass(frozen=True)
class ImageSetPlan:
    """One image set in ranks: top ranks for the max side, bottom ranks for the min side."""

    image_set: int
    query: int
    references: tuple[int, ...]
    min_query: int | None = None
    min_references: tuple[int, ...] = field(default_factory=tuple)


# -- pure arithmetic ---------------------------------------------------------------------------

def rank_order(acts: np.ndarray) -> np.ndarray:
    """Image indices from most to least activating; ties keep scan order."""
    return np.argsort(-np.asarray(acts, dtype=np.float64), kind="stable")


def reference_bins(n_bins: int, n_references: int) -> list[int]:
    """Which lower bins (0-based, 1..n_bins-1) give a reference: all of them when
    ``n_references = n_bins - 1`` (the paper), otherwise evenly spread."""
    if not 1 <= n_references <= n_bins - 1:
        raise ExemplarError(
            f"exemplars.n_references = {n_references} must be 1..n_bins-1 = {n_bins - 1}"
        )
    return [int(round(v)) for v in np.linspace(1, n_bins - 1, n_references)]


def rank_bin_plan(
    n_images: int,
    *,
    n_top: int,
    n_bins: int,
    n_image_sets: int,
    n_references: int,
    seed: int | Sequence[int],
) -> list[ImageSetPlan]:
    """The paper2021 scheme in 1-based ranks (see the module docstring)."""
    if n_top % n_bins:
        raise ExemplarError("exemplars.n_top must be a multiple of exemplars.n_bins")
    size = n_top // n_bins
    if n_images < n_top:
        raise ExemplarError(
            f"the scan holds {n_images} images but exemplars.n_top = {n_top} are needed: "
            "scan more images or lower exemplars.n_top"
        )
    if not 1 <= n_image_sets <= size:
        raise ExemplarError(
            f"exemplars.n_image_sets = {n_image_sets} must be 1..bin size {size}"
        )
    seeds = list(seed) if isinstance(seed, Sequence) else [seed]
    picks = {}
    for j in reference_bins(n_bins, n_references):
        perm = np.random.default_rng([*seeds, j]).permutation(size)
        picks[j] = [j * size + int(p) + 1 for p in perm]
    return [
        ImageSetPlan(b, size - b, tuple(picks[j][b] for j in sorted(picks)))
        for b in range(n_image_sets)
    ]


def _window_positions(
    window: tuple[float, float],
    n_images: int,
    uses: int,
    rng: np.random.Generator,
    taken: set[int] = frozenset(),
) -> list[int]:
    """``uses`` distinct 0-based positions below the references inside ``window``
    (fractions of the dataset), none of them ``taken`` by another window (so two image
    sets never share a query); a window with too few free positions is widened downwards."""
    lo, hi = window
    start = int(math.floor(lo * n_images))
    stop = max(int(math.ceil(hi * n_images)), start + uses)
    free = [p for p in range(start, stop) if p not in taken]
    while len(free) < uses:
        if stop not in taken:
            free.append(stop)
        stop += 1
    chosen = rng.choice(np.asarray(free), size=uses, replace=False)
    return sorted(int(p) for p in chosen)


def imi_plan(
    n_images: int,
    *,
    n_references: int,
    n_min_references: int,
    query_windows: Sequence[tuple[float, float]],
    n_image_sets: int,
    seed: int | Sequence[int],
) -> list[ImageSetPlan]:
    """The IMI scheme in ranks: top / bottom references, queries from rank windows.

    Image set ``b`` uses window ``b mod len(query_windows)``; the sets sharing a window
    get distinct queries, the most extreme one first.
    """
    if not query_windows:
        raise ExemplarError("exemplars.query_windows is empty")
    for w, (lo, hi) in enumerate(query_windows):
        if not 0 <= lo <= hi <= 1:
            raise ExemplarError(
                f"exemplars.query_windows[{w}] = [{lo}, {hi}] must satisfy 0 <= lo <= hi <= 1"
            )
    seeds = list(seed) if isinstance(seed, Sequence) else [seed]
    n_windows = len(query_windows)
    queries: dict[str, list[int]] = {"max": [0] * n_image_sets, "min": [0] * n_image_sets}
    for side, n_refs in (("max", n_references), ("min", n_min_references)):
        taken: set[int] = set()
        for w, window in enumerate(query_windows):
            sets = list(range(w, n_image_sets, n_windows))
            if not sets:
                continue
            rng = np.random.default_rng([*seeds, w, 0 if side == "max" else 1])
            positions = _window_positions(window, n_images, len(sets), rng, taken)
            taken.update(positions)
            for b, pos in zip(sets, positions, strict=True):
                queries[side][b] = n_refs + 1 + pos
    # Top ranks used by the max side and by the min side (converted) must not meet.
    deepest_max = max([n_references, *queries["max"]])
    deepest_min = max([n_min_references, *queries["min"]])
    if deepest_max + deepest_min > n_images:
        raise ExemplarError(
            f"the scan holds {n_images} images, too few for the imi scheme: the max side "
            f"reaches rank {deepest_max} and the min side rank {deepest_min} from the "
            "bottom; scan more images or narrow exemplars.query_windows"
        )
    return [
        ImageSetPlan(
            b,
            queries["max"][b],
            tuple(range(1, n_references + 1)),
            queries["min"][b],
            tuple(range(1, n_min_references + 1)),
        )
        for b in range(n_image_sets)
    ]


def check_ties(plan: Sequence[ImageSetPlan], sorted_acts: np.ndarray, unit: str,
               scheme: str, n_top: int = 0, n_bins: int = 1) -> None:
    """Raise :class:`ExemplarError` where equal activations make the ranking meaningless.

    ``sorted_acts`` is descending (rank r at index r-1). For ``rank_bins`` a query must
    activate more than the best image of the next bin; for ``imi`` every max-side image
    more than every min-side image.
    """
    n = len(sorted_acts)

    def top(r: int) -> float:
        return float(sorted_acts[r - 1])

    def bottom(r: int) -> float:
        return float(sorted_acts[n - r])

    if scheme == "rank_bins":
        size = n_top // n_bins
        if top(1) == top(n_top):
            raise ExemplarError(
                f"unit {unit}: the top {n_top} images all have activation {top(1):g} (ties); "
                "choose other units (units.seed / units.explicit)"
            )
        for item in plan:
            if top(item.query) <= top(size + 1):
                raise ExemplarError(
                    f"unit {unit}: image set {item.image_set}: the query (rank {item.query}) "
                    f"ties with rank {size + 1} of the next bin (activation {top(item.query):g});"
                    " scan more images or choose other units"
                )
        return
    for item in plan:
        high = min(top(r) for r in (*item.references, item.query))
        low = max(bottom(r) for r in (*item.min_references, item.min_query or 1))
        if high <= low:
            raise ExemplarError(
                f"unit {unit}: image set {item.image_set}: maximal and minimal images tie "
                f"(activation {high:g}); scan more images or choose other units"
            )


def plan_for_unit(acts: np.ndarray, cfg, seed: Sequence[int], unit: str) -> list[ImageSetPlan]:
    """The checked plan of ``cfg.scheme`` for one unit's activations."""
    sorted_acts = np.asarray(acts)[rank_order(acts)]
    if cfg.scheme == "rank_bins":
        plan = rank_bin_plan(
            len(acts), n_top=cfg.n_top, n_bins=cfg.n_bins, n_image_sets=cfg.n_image_sets,
            n_references=cfg.n_references, seed=seed,
        )
        check_ties(plan, sorted_acts, unit, "rank_bins", cfg.n_top, cfg.n_bins)
    else:
        plan = imi_plan(
            len(acts), n_references=cfg.n_references, n_min_references=cfg.n_min_references,
            query_windows=cfg.query_windows, n_image_sets=cfg.n_image_sets, seed=seed,
        )
        check_ties(plan, sorted_acts, unit, "imi")
    return plan


# -- JSON ------------------------------------------------------------------------------------

def exemplar_record(unit, acts: np.ndarray, ids: Sequence[str], plan, cfg) -> dict:
    """The ``exemplars/<unit>.json`` object (see docs/study-folder.md)."""
    order = rank_order(acts)
    n = len(order)

    def top(r: int) -> dict:
        i = int(order[r - 1])
        return {"rank": r, "image_id": ids[i], "activation": float(acts[i])}

    def bottom(r: int) -> dict:
        i = int(order[n - r])
        return {"rank": r, "image_id": ids[i], "activation": float(acts[i])}

    n_list = cfg.n_top if cfg.scheme == "rank_bins" else max(
        [cfg.n_references, *(p.query for p in plan)]
    )
    n_low = cfg.n_top if cfg.scheme == "rank_bins" else max(
        [cfg.n_min_references, *(p.min_query or 0 for p in plan)]
    )
    sets = []
    for p in plan:
        item = {"image_set": p.image_set, "query": top(p.query),
                "references": [top(r) for r in p.references]}
        if p.min_query is not None:
            item["min_query"] = bottom(p.min_query)
            item["min_references"] = [bottom(r) for r in p.min_references]
        sets.append(item)
    return {
        "layer": unit.layer,
        "channel": unit.channel,
        "key": unit.key,
        "role": unit.role,
        "scheme": cfg.scheme,
        "n_images": n,
        "top": [top(r) for r in range(1, min(n_list, n) + 1)],
        "bottom": [bottom(r) for r in range(1, min(n_low, n) + 1)],
        "image_sets": sets,
    }


# -- the stage -------------------------------------------------------------------------------

def _reference_files(record: dict) -> list[dict]:
    """Natural reference images to write: ``set<b>-<i>.png`` (max side) and, for the imi
    scheme, ``set<b>-min-<i>.png`` (min side)."""
    from causalvis.pipeline.methods import reference_file

    files = []
    for s in record["image_sets"]:
        b = s["image_set"]
        for side, key in (("max", "references"), ("min", "min_references")):
            for i, ref in enumerate(s.get(key, [])):
                files.append({"file": reference_file(i, b, side), "image_set": b, "index": i,
                              "role": side, **_ref_fields(ref)})
    return files


def _ref_fields(ref: dict) -> dict:
    return {"image_id": ref["image_id"], "rank": ref["rank"], "scan_activation": ref["activation"]}


def write_natural_references(ctx, unit, record: dict) -> None:
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
    write_json(folder / "meta.json", {"unit": unit.key, "layer": unit.layer,
                                      "channel": unit.channel, "method": "natural",
                                      "images": files})


def _ranks_needed(cfg, n_images: int) -> tuple[int, int]:
    """How many top / bottom ranks must be exact for the scheme (one past the last used
    rank, so the tie check at the bin boundary compares exact values too)."""
    if cfg.scheme == "rank_bins":
        return min(n_images, cfg.n_top + 1), 0
    return min(n_images, cfg.n_references + 1), min(n_images, cfg.n_min_references + 1)


def refine_extremes(
    ctx, unit, ids: Sequence[str], acts: np.ndarray, needed: tuple[int, int], batch: int = 32
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


def _stack(tensors):
    import torch

    return torch.stack(tensors)


def run_exemplars_stage(ctx) -> None:
    """Exemplar sets + natural reference PNGs for every unit (main and practice)."""
    from causalvis.pipeline.scan import ActivationTable
    from causalvis.pipeline.units import load_units

    paths: StudyPaths = ctx.paths
    cfg = ctx.config.exemplars
    units = load_units(paths)
    table = ActivationTable(paths)
    base = f"{ctx.config.digest('exemplars', 'model', 'images')}:{table.digest}"
    todo = []
    for unit in units:
        digest = hashlib.sha256(f"{base}:{unit.spec}:{unit.seed}".encode()).hexdigest()[:16]
        out = paths.exemplars / f"{unit.key}.json"
        meta = paths.reference_dir("natural", unit.key) / "meta.json"
        name = f"exemplars-{unit.key}"
        if not (stamp_matches(paths, name, digest) and out.is_file() and meta.is_file()):
            todo.append((unit, digest, out, name))
    if len(todo) < len(units):
        log.info("exemplars: %d of %d units already done", len(units) - len(todo), len(units))
    ids = table.ids if todo else []
    for unit, digest, out, name in tqdm(todo, desc="exemplars", unit="unit",
                                        disable=not ctx.progress):
        acts = table.column(unit.layer, unit.channel)
        acts = refine_extremes(ctx, unit, ids, acts, _ranks_needed(cfg, len(acts)))
        plan = plan_for_unit(acts, cfg, [cfg.seed, unit.seed], unit.spec)
        record = exemplar_record(unit, acts, ids, plan, cfg)
        write_json(out, record)
        write_natural_references(ctx, unit, record)
        write_stamp(paths, name, digest)
