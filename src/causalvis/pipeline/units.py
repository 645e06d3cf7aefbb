"""Stage ``units``: which units (layer, channel) the study uses, sampled with a seed.

Modes (``units.mode``): ``per_layer`` (the paper: ``per_layer`` random channels in every
layer of ``units.layers``), ``uniform_layer`` (IMI: a layer drawn uniformly, then a
channel, ``n_units`` times without repetition) and ``explicit`` (``LAYER:CHANNEL`` list).
``n_practice_units`` further units, distinct from the main ones, are drawn for practice
trials, and ``n_catch_units`` more for catch trials only
(:func:`causalvis.stimuli.units.sample_units`). Dead units (constant activation
over the scanned images) are never drawn; they are listed in ``units.json`` and logged.
"""

from __future__ import annotations

import hashlib
import logging

from causalvis.errors import CausalvisError
from causalvis.stimuli.units import dead_channels, sample_units
from causalvis.store.activations import ActivationTable
from causalvis.store.layout import StudyPaths, stamp_matches, write_stamp
from causalvis.store.units import Unit, write_units

log = logging.getLogger("causalvis.units")


def run_units_stage(ctx) -> None:
    """Write ``units.json`` from the scan (skipped when the inputs are unchanged)."""
    from causalvis.models import parse_unit

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
        dead += [Unit(layer, c).spec for c in sorted(dead_set)]
        if dead_set:
            log.warning("units: %d dead unit(s) in %s skipped (constant over %d images)",
                        len(dead_set), layer, table.n_images)
    dead_explicit = [(layer, c) for layer, c in explicit if c not in alive[layer]]
    for layer, c in dead_explicit:
        log.warning("units: explicit unit %s is dead (constant activation): skipped",
                    Unit(layer, c).spec)
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
        n_catch=cfg.n_catch_units,
        seed=cfg.seed,
    )
    write_units(paths, units, dead)
    write_stamp(paths, "units", digest, n_units=len(units))
    log.info("units: %d main + %d practice + %d catch units -> %s",
             sum(u.role == "main" for u in units), sum(u.role == "practice" for u in units),
             sum(u.role == "catch" for u in units), paths.units)
