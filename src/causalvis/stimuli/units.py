"""Unit sampling (pure): which channels a study uses, drawn with a seed.

Modes: ``per_layer`` (the paper: ``per_layer`` random channels in every layer),
``uniform_layer`` (IMI: a layer drawn uniformly, then a channel, ``n_units`` times without
repetition) and ``explicit`` (a given list). Practice units are drawn uniformly from the
live channels the main units left, catch units from those both left. Every unit carries its own seed, which depends only on
the study seed and the unit, so adding a unit never changes another unit's images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.units import Unit, UnitEntry


def unit_seed(seed: int, layer: str, channel: int) -> int:
    """A per-unit seed that depends only on the study seed and the unit itself."""
    digest = hashlib.sha256(f"{seed}:{layer}:{channel}".encode()).hexdigest()
    return int(digest[:8], 16)


def dead_channels(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Channels whose activation is the same for every image (max == min)."""
    return np.flatnonzero(~(hi > lo))


def sample_units(
    alive: Mapping[str, Sequence[int]],
    *,
    mode: str,
    layers: Sequence[str],
    per_layer: int = 1,
    n_units: int = 1,
    explicit: Sequence[tuple[str, int]] = (),
    n_practice: int = 0,
    n_catch: int = 0,
    seed: int = 0,
) -> list[UnitEntry]:
    """Draw main, practice and catch units from the live channels ``alive[layer]``.

    Deterministic for a given ``seed``; practice units never coincide with main units,
    catch units with either (drawn last, so they never change the others' draws).
    """
    rng = np.random.default_rng(seed)
    pools = {layer: sorted(int(c) for c in alive.get(layer, ())) for layer in layers}
    main: list[tuple[str, int]] = []
    if mode == "per_layer":
        for layer in layers:
            pool = pools[layer]
            if len(pool) < per_layer:
                raise CausalvisError(
                    f"units.per_layer = {per_layer} but layer {layer} has only {len(pool)} "
                    "live channel(s)"
                )
            picked = rng.choice(len(pool), size=per_layer, replace=False)
            main += [(layer, pool[i]) for i in sorted(picked)]
    elif mode == "uniform_layer":
        main = _draw_uniform_layer(rng, pools, n_units, taken=set(), field="units.n_units")
    elif mode == "explicit":
        main = list(dict.fromkeys(explicit))
    else:
        raise CausalvisError(f"units.mode: unknown mode {mode!r}")
    practice = _draw_uniform_layer(
        rng, pools, n_practice, taken=set(main), field="units.n_practice_units"
    )
    catch = _draw_uniform_layer(
        rng, pools, n_catch, taken={*main, *practice}, field="units.n_catch_units"
    )
    return [
        UnitEntry(Unit(layer, ch), role, unit_seed(seed, layer, ch))
        for role, drawn in (("main", main), ("practice", practice), ("catch", catch))
        for layer, ch in drawn
    ]


def _draw_uniform_layer(
    rng: np.random.Generator,
    pools: Mapping[str, Sequence[int]],
    n: int,
    *,
    taken: set[tuple[str, int]],
    field: str,
) -> list[tuple[str, int]]:
    """``n`` distinct units: layer uniformly among layers with channels left, then a channel."""
    remaining = {
        layer: [c for c in pool if (layer, c) not in taken] for layer, pool in pools.items()
    }
    total = sum(len(v) for v in remaining.values())
    if n > total:
        raise CausalvisError(
            f"{field} = {n} but only {total} live unused channel(s) exist in "
            f"{', '.join(pools) or 'no layers'}"
        )
    out: list[tuple[str, int]] = []
    for _ in range(n):
        layers = [layer for layer, pool in remaining.items() if pool]
        layer = layers[int(rng.integers(len(layers)))]
        pool = remaining[layer]
        channel = pool.pop(int(rng.integers(len(pool))))
        out.append((layer, channel))
    return out
