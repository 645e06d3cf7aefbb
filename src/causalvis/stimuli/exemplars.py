"""Exemplar plans (pure): which ranks of a unit's ranking form its image sets.

Two schemes (``exemplars.scheme``):

* ``rank_bins`` (paper2021): the ``n_top`` most activating images are cut into ``n_bins``
  bins of ``s = n_top / n_bins``. Image set ``b`` (0-based) uses rank ``s - b`` (1-based,
  top bin) as query and one image of each lower bin as references; within a bin the
  assignment to image sets is a seeded permutation, so image sets get different
  references. The query is never a reference (different bins).
* ``imi`` (IMI 2023 / ICLR 2021 2-AFC, IMI's ``extract_exemplars``): with ``n =
  n_image_sets`` batches and ``k`` references per side, the ``n·k`` most (and least)
  activating images are cut into ``k`` rank bins of ``n``, shuffled within a bin; image set
  ``b`` takes one image of each bin, so references differ per image set and span the whole
  pool. Queries are a window of ``n`` ranks, one per image set: just below the references
  (``difficulty = "easy"``) or from the 1st / 5th / 15th percentile of each end
  (``hard99`` / ``hard95`` / ``hard85``, IMI's separate harder experiments).

Ranks are 1-based; equal activations are ordered by scan order, and a tie that would make
a query indistinguishable from its references is a clear error.

Source groups (``rank_groups``: the image group of each top rank, None = no group): with
groups, no reference shares its query's group (:func:`assign_bin`): within each bin, image
set after image set takes the first unused eligible image in the seeded order (so without
a conflict the selection is exactly the one without groups); a set left without one gets
an eligible image by re-assigning earlier sets within the bin (an augmenting path), so
each bin's images stay used once where the groups allow it. Fallbacks, counted in the
record: an eligible image used a second time in the bin (``reused``), or, where every
image of the bin shares the query's group, the seeded pick (the first unused image if that
one is taken; ``same_group``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.exemplars import ExemplarRecord, ExemplarSet, QueryGroupRule, RankedImage
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


def assign_bin(
    candidates: Sequence[int],
    query_groups: Sequence[str | None],
    group_of: Callable[[int], str | None],
) -> list[int]:
    """One image of a bin per image set (``candidates`` in the seeded order, image set
    ``b`` with query group ``query_groups[b]``), none sharing its query's group where the
    bin allows it (the rule in the module docstring)."""

    def eligible(c: int, g: str | None) -> bool:
        return g is None or group_of(c) != g

    ok = [[c for c in candidates if eligible(c, g)] for g in query_groups]
    owner: dict[int, int] = {}
    pick: list[int | None] = [None] * len(query_groups)

    def augment(b: int, seen: set[int]) -> bool:
        for c in ok[b]:
            if c in seen:
                continue
            seen.add(c)
            if c not in owner or augment(owner[c], seen):
                owner[c], pick[b] = b, c
                return True
        return False

    for b in range(len(query_groups)):
        free = next((c for c in ok[b] if c not in owner), None)
        if free is not None:
            owner[free], pick[b] = b, free
        else:
            augment(b, set())
    used = set(owner)
    for b, chosen in enumerate(pick):
        if chosen is not None:
            continue
        if ok[b]:  # fallback 1: the rule first, an eligible image a second time
            pick[b] = ok[b][0]
        else:  # fallback 2: the whole bin shares the query's group: the seeded pick
            seeded = candidates[b]
            pick[b] = seeded if seeded not in used else next(
                (c for c in candidates if c not in used), seeded)
        used.add(pick[b])
    return [int(c) for c in pick]


def _rank_group(rank_groups: Sequence[str | None] | None) -> Callable[[int], str | None]:
    """group of top rank r (1-based); of bottom rank r via ``n + 1 - r``."""
    if rank_groups is None:
        return lambda r: None
    return lambda r: rank_groups[r - 1]


def group_fallbacks(plan: Sequence[ImageSetPlan], rank_groups: Sequence[str | None]
                    ) -> tuple[int, int]:
    """(references used a second time within their bin, references sharing their
    query's group) of a plan: the fallbacks of :func:`assign_bin`."""
    n = len(rank_groups)
    top, bottom = _rank_group(rank_groups), (lambda r: rank_groups[n - r])
    reused = same = 0
    for side in ("max", "min"):
        group = top if side == "max" else bottom
        columns: dict[int, list[int]] = {}
        for p in plan:
            query = p.query if side == "max" else p.min_query
            refs = p.references if side == "max" else p.min_references
            if query is None:
                continue
            for i, r in enumerate(refs):
                columns.setdefault(i, []).append(r)
                g = group(query)
                same += int(g is not None and group(r) == g)
        reused += sum(len(col) - len(set(col)) for col in columns.values())
    return reused, same


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
    rank_groups: Sequence[str | None] | None = None,
) -> list[ImageSetPlan]:
    """The paper2021 scheme in 1-based ranks (see the module docstring); with
    ``rank_groups`` no reference shares its query's group (:func:`assign_bin`)."""
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
    if rank_groups is not None:
        group = _rank_group(rank_groups)
        query_groups = [group(size - b) for b in range(n_image_sets)]
        picks = {j: assign_bin(order, query_groups, group) for j, order in picks.items()}
    return [
        ImageSetPlan(b, size - b, tuple(picks[j][b] for j in sorted(picks)))
        for b in range(n_image_sets)
    ]


# IMI's query windows: "easy" is the window just below the references; the harder ones
# start at a fraction of the dataset from each end (IMI's collect_exemplars.sh:
# start_min = floor(N * p), stop_max = ceil(N * (1 - p))).
DIFFICULTIES: dict[str, float | None] = {
    "easy": None, "hard99": 0.01, "hard95": 0.05, "hard85": 0.15,
}


def query_window_start(difficulty: str, n_images: int, n_pool: int) -> int:
    """Images above the query window on each side (0-based start of the window): the
    reference pool ``n_pool`` for ``easy``, ``floor(p · n_images)`` for ``hardP``."""
    if difficulty not in DIFFICULTIES:
        raise ExemplarError(
            f"exemplars.difficulty = {difficulty!r} is not one of {', '.join(DIFFICULTIES)}"
        )
    frac = DIFFICULTIES[difficulty]
    return n_pool if frac is None else int(math.floor(frac * n_images + 1e-9))


def fair_batches(ranks: Sequence[int], n_batches: int, rng: np.random.Generator
                 ) -> list[list[int]]:
    """IMI's ``make_fair_batches``: consecutive bins of ``n_batches`` ranks, each shuffled;
    batch ``b`` takes the ``b``-th element of every bin (bin order kept)."""
    bins = [list(ranks[i : i + n_batches]) for i in range(0, len(ranks), n_batches)]
    for data_bin in bins:
        rng.shuffle(data_bin)
    return [[data_bin[b] for data_bin in bins] for b in range(n_batches)]


def imi_plan(
    n_images: int,
    *,
    n_references: int,
    n_min_references: int,
    n_image_sets: int,
    difficulty: str = "easy",
    seed: int | Sequence[int],
    rank_groups: Sequence[str | None] | None = None,
) -> list[ImageSetPlan]:
    """IMI's ``extract_exemplars`` in 1-based ranks, per side (max from the top, min from
    the bottom), with ``n = n_image_sets`` batches and ``k`` references:

    * references: ranks ``1 … n·k`` in ``k`` bins of ``n`` ranks, shuffled within a bin;
      image set ``b`` takes one rank of each bin (best bin first);
    * queries: the window of ``n`` ranks after ``query_window_start`` (easy: ``n·k + 1 …
      n·k + n``), shuffled, one per image set.

    With ``rank_groups`` (by top rank) each bin is re-assigned by :func:`assign_bin` so
    that no max-side reference shares the max query's group, no min-side one the min
    query's; the draws are the same, so without conflicts nothing moves.
    """
    seeds = list(seed) if isinstance(seed, Sequence) else [seed]
    n = n_image_sets
    sides: dict[str, tuple[list[list[int]], list[int]]] = {}
    deepest = {}
    for side, k in (("max", n_references), ("min", n_min_references)):
        pool = n * k
        start = query_window_start(difficulty, n_images, pool)
        if start < pool:
            raise ExemplarError(
                f"the scan holds {n_images} images, too few for exemplars.difficulty = "
                f"{difficulty!r}: its query window starts at rank {start + 1}, inside the "
                f"{pool} {side}-side references (n_image_sets × references); scan at least "
                f"{math.ceil(pool / DIFFICULTIES[difficulty])} images or use fewer image sets"
            )
        rng = np.random.default_rng([*seeds, 0 if side == "max" else 1])
        refs = fair_batches(range(1, pool + 1), n, rng)
        queries = [q[0] for q in fair_batches(range(start + 1, start + n + 1), n, rng)]
        if rank_groups is not None:
            refs = _exclude_groups(refs, queries, rank_groups, side)
        sides[side] = (refs, queries)
        deepest[side] = start + n
    if deepest["max"] + deepest["min"] > n_images:
        raise ExemplarError(
            f"the scan holds {n_images} images, too few for the imi scheme: the max side "
            f"reaches rank {deepest['max']} and the min side rank {deepest['min']} from the "
            "bottom; scan more images or lower exemplars.n_image_sets"
        )
    (max_refs, max_q), (min_refs, min_q) = sides["max"], sides["min"]
    return [
        ImageSetPlan(b, max_q[b], tuple(max_refs[b]), min_q[b], tuple(min_refs[b]))
        for b in range(n)
    ]


def _exclude_groups(refs: list[list[int]], queries: Sequence[int],
                    rank_groups: Sequence[str | None], side: str) -> list[list[int]]:
    """IMI batches (``refs[b][i]``: set ``b``'s image of bin ``i``, side-relative ranks)
    re-assigned bin by bin so that no reference shares its set's query group."""
    n_images = len(rank_groups)

    def group(r: int) -> str | None:
        return rank_groups[r - 1] if side == "max" else rank_groups[n_images - r]

    query_groups = [group(q) for q in queries]
    columns = [assign_bin([batch[i] for batch in refs], query_groups, group)
               for i in range(len(refs[0]) if refs else 0)]
    return [[col[b] for col in columns] for b in range(len(refs))]


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


def groups_apply(cfg, groups: Sequence[str | None] | None) -> bool:
    """Whether the query-group rule applies: ``exemplars.exclude_query_group`` is on
    and at least one image has a group."""
    return bool(getattr(cfg, "exclude_query_group", False)) and groups is not None and any(
        g is not None for g in groups
    )


def plan_for_unit(acts: np.ndarray, cfg, seed: Sequence[int], unit: str,
                  groups: Sequence[str | None] | None = None) -> list[ImageSetPlan]:
    """The checked plan of ``cfg.scheme`` for one unit's activations; ``groups`` (by
    image, scan order) keep each query's group out of its references when
    :func:`groups_apply`."""
    order = rank_order(acts)
    sorted_acts = np.asarray(acts)[order]
    rank_groups = [groups[int(i)] for i in order] if groups_apply(cfg, groups) else None
    if cfg.scheme == "rank_bins":
        plan = rank_bin_plan(
            len(acts), n_top=cfg.n_top, n_bins=cfg.n_bins, n_image_sets=cfg.n_image_sets,
            n_references=cfg.n_references, seed=seed, rank_groups=rank_groups,
        )
        check_ties(plan, sorted_acts, unit, "rank_bins", cfg.n_top, cfg.n_bins)
    else:
        plan = imi_plan(
            len(acts), n_references=cfg.n_references, n_min_references=cfg.n_min_references,
            n_image_sets=cfg.n_image_sets, difficulty=cfg.difficulty, seed=seed,
            rank_groups=rank_groups,
        )
        check_ties(plan, sorted_acts, unit, "imi")
    return plan


def exemplar_record(
    unit: UnitEntry, acts: np.ndarray, ids: Sequence[str], plan: Sequence[ImageSetPlan], cfg,
    groups: Sequence[str | None] | None = None, grouping: str = "groups",
) -> ExemplarRecord:
    """The ``exemplars/<unit>.json`` content of a unit's activations and its plan
    (``groups``/``grouping`` as given to :func:`plan_for_unit`: recorded when applied)."""
    order = rank_order(acts)
    n = len(order)
    rule = None
    if groups_apply(cfg, groups):
        reused, same = group_fallbacks(plan, [groups[int(i)] for i in order])
        rule = QueryGroupRule(grouping, reused, same)

    def top(r: int) -> RankedImage:
        i = int(order[r - 1])
        return RankedImage(r, ids[i], float(acts[i]))

    def bottom(r: int) -> RankedImage:
        i = int(order[n - r])
        return RankedImage(r, ids[i], float(acts[i]))

    n_list = n_low = cfg.n_top
    if cfg.scheme == "imi":  # the reference pool and the window just below (IMI's 200)
        n_list = cfg.n_image_sets * (cfg.n_references + 1)
        n_low = cfg.n_image_sets * (cfg.n_min_references + 1)
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
        difficulty=cfg.difficulty if cfg.scheme == "imi" else None,
        exclude_query_group=rule,
    )
