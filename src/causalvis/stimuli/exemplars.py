"""Exemplar plans (pure): which ranks of a unit's ranking form its image sets.

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
a query indistinguishable from its references is a clear error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.exemplars import ExemplarRecord, ExemplarSet, RankedImage
from causalvis.store.units import UnitEntry


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


def exemplar_record(
    unit: UnitEntry, acts: np.ndarray, ids: Sequence[str], plan: Sequence[ImageSetPlan], cfg
) -> ExemplarRecord:
    """The ``exemplars/<unit>.json`` content of a unit's activations and its plan."""
    order = rank_order(acts)
    n = len(order)

    def top(r: int) -> RankedImage:
        i = int(order[r - 1])
        return RankedImage(r, ids[i], float(acts[i]))

    def bottom(r: int) -> RankedImage:
        i = int(order[n - r])
        return RankedImage(r, ids[i], float(acts[i]))

    n_list = cfg.n_top if cfg.scheme == "rank_bins" else max(
        [cfg.n_references, *(p.query for p in plan)]
    )
    n_low = cfg.n_top if cfg.scheme == "rank_bins" else max(
        [cfg.n_min_references, *(p.min_query or 0 for p in plan)]
    )
    sets = tuple(
        ExemplarSet(
            p.image_set, top(p.query), tuple(top(r) for r in p.references),
            None if p.min_query is None else bottom(p.min_query),
            tuple(bottom(r) for r in p.min_references) if p.min_query is not None else (),
        )
        for p in plan
    )
    return ExemplarRecord(
        unit=unit.unit,
        scheme=cfg.scheme,
        top=tuple(top(r) for r in range(1, min(n_list, n) + 1)),
        bottom=tuple(bottom(r) for r in range(1, min(n_low, n) + 1)),
        image_sets=sets,
        role=unit.role,
        n_images=n,
    )
