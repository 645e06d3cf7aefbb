"""Stage ``units``: which units (layer, channel) the study uses, sampled with a seed.

Modes (``units.mode``): ``per_layer`` (the paper: ``per_layer`` random channels in every
layer of ``units.layers``), ``uniform_layer`` (IMI: a layer drawn uniformly, then a
channel, ``n_units`` times without repetition) and ``explicit`` (``LAYER:CHANNEL`` list).
``n_practice_units`` further units, distinct from the main ones, are drawn for practice
trials. Dead units (constant activation over the scanned images) are never drawn; they
are listed in ``units.json`` and logged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.layout import (
    StudyPaths,
    read_json,
    stamp_matches,
    unit_key,
    write_json,
    write_stamp,
)

log = logging.getLogger("causalvis.units")


@dataclass(frozen=True)
class Unit:
    layer: str
    channel: int
    role: str = "main"
    seed: int = 0

    @property
    def key(self) -> str:
        return unit_key(self.layer, self.channel)

    @property
    def spec(self) -> str:
        return f"{self.layer}:{self.channel}"

    def to_dict(self) -> dict:
        return {"layer": self.layer, "channel": self.channel, "key": self.key,
                "role": self.role, "seed": self.seed}


def unit_seed(seed: int, layer: str, channel: int) -> int:
    """A per-unit seed that depends only on the study seed and the unit itself."""
    digest = hashlib.sha256(f"{seed}:{layer}:{channel}".encode()).hexdigest()
    return int(digest[:8], 16)


def dead_channels(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Channels whose activation is the same for every image (max == min)."""
    return np.flatnonzero(~(hi > lo))


# -- pure sampler ----------------------------------------------------------------------------

def sample_units(
    alive: Mapping[str, Sequence[int]],
    *,
    mode: str,
    layers: Sequence[str],
    per_layer: int = 1,
    n_units: int = 1,
    explicit: Sequence[tuple[str, int]] = (),
    n_practice: int = 0,
    seed: int = 0,
) -> list[Unit]:
    """Draw main and practice units from the live channels ``alive[layer]``.

    Deterministic for a given ``seed``; practice units never coincide with main units.
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
    units = [Unit(layer, ch, "main", unit_seed(seed, layer, ch)) for layer, ch in main]
    units += [Unit(layer, ch, "practice", unit_seed(seed, layer, ch)) for layer, ch in practice]
    return units


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


# -- the stage -------------------------------------------------------------------------------

def run_units_stage(ctx) -> None:
    """Write ``units.json`` from the scan (skipped when the inputs are unchanged)."""
    from causalvis.models import parse_unit
    from causalvis.pipeline.scan import ActivationTable

    cfg = ctx.config.units
    paths: StudyPaths = ctx.paths
    table = ActivationTable(paths)
    digest = hashlib.sha256(
        f"{ctx.config.digest('units', 'model')}:{table.digest}".encode()
    ).hexdigest()[:16]
    if stamp_matches(paths, "units", digest) and paths.units.is_file():
        log.info("units: up to date")
        return
    if table.n_images < 2:
        raise CausalvisError(f"the scan holds {table.n_images} image(s): too few to pick units")
    explicit: list[tuple[str, int]] = []
    if cfg.mode == "explicit":
        if not cfg.explicit:
            raise CausalvisError("units.explicit is empty but units.mode = 'explicit'")
        explicit = [parse_unit(spec, ctx.model) for spec in cfg.explicit]
    layers = list(cfg.layers) or list(dict.fromkeys(layer for layer, _ in explicit))
    layers = layers or list(table.layers)
    alive: dict[str, list[int]] = {}
    dead: list[str] = []
    for layer in dict.fromkeys([*layers, *(layer for layer, _ in explicit)]):
        lo, hi = table.channel_range(layer)
        dead_set = set(dead_channels(lo, hi).tolist())
        alive[layer] = [c for c in range(table.channels[layer]) if c not in dead_set]
        dead += [f"{layer}:{c}" for c in sorted(dead_set)]
        if dead_set:
            log.warning("units: %d dead unit(s) in %s skipped (constant over %d images)",
                        len(dead_set), layer, table.n_images)
    dead_explicit = [(layer, c) for layer, c in explicit if c not in alive[layer]]
    for layer, c in dead_explicit:
        log.warning("units: explicit unit %s:%d is dead (constant activation): skipped", layer, c)
    explicit = [u for u in explicit if u not in dead_explicit]
    if cfg.mode == "explicit" and not explicit:
        raise CausalvisError("units.explicit: every listed unit is dead (constant activation)")
    units = sample_units(
        alive,
        mode=cfg.mode,
        layers=layers,
        per_layer=cfg.per_layer,
        n_units=cfg.n_units,
        explicit=explicit,
        n_practice=cfg.n_practice_units,
        seed=cfg.seed,
    )
    write_json(paths.units, {"units": [u.to_dict() for u in units], "skipped_dead": dead})
    write_stamp(paths, "units", digest, n_units=len(units))
    log.info("units: %d main + %d practice units -> %s",
             sum(u.role == "main" for u in units), sum(u.role == "practice" for u in units),
             paths.units)


def load_units(paths: StudyPaths, role: str | None = None) -> list[Unit]:
    """The units of ``units.json`` (optionally only one role)."""
    if not paths.units.is_file():
        raise CausalvisError(
            f"no {paths.units}: run `causalvis build STUDY --stage units` first"
        )
    data = read_json(paths.units)
    units = [Unit(u["layer"], int(u["channel"]), u["role"], int(u["seed"])) for u in data["units"]]
    return [u for u in units if role is None or u.role == role]
