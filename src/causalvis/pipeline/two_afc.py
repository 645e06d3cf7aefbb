"""Stage ``trials`` for task ``two_afc``: one query pair per (unit, image set).

The IMI 2-AFC task shows a unit's minimal and maximal references and asks which of two
natural query images belongs to the maximal side. Image set ``b`` of
``exemplars/<unit>.json`` (scheme ``imi``) names both queries: ``query`` (from the top
ranks, the correct answer) and ``min_query`` (from the bottom ranks). Both are encoded as
lossless PNG, decoded again and re-run through the model; the stored activations are
those of the served bytes. A pair whose order flips on the served bytes, or whose
relative difference (``rel_diff`` below) falls under ``trials.tie_tolerance``, is
dropped (counted in the log line). Kept images go to ``bundle/assets/`` under
content-hashed names, labelled ``a``/``b`` in a seeded random order
(:func:`causalvis.pipeline.served.order_flip`).

``rel_diff = (act(max query) - act(min query)) / (dataset max - dataset min)`` of the
unit (``top[0]`` and ``bottom[0]`` of its exemplar record), in [0, 1]: the trial's
easiness. Output: ``stimuli/trials_base.csv`` (columns
``store.trials.TWO_AFC_BASE_COLUMNS``) and a copy as ``trials.csv``, which the sessions
stage expands per condition. Practice units get
pairs too; the sessions stage picks practice trials from them.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.pipeline.served import (
    cached_trial,
    decode_png,
    measure,
    order_flip,
    write_base_trials,
)
from causalvis.store.assets import encode_png, read_asset, write_asset
from causalvis.store.exemplars import ExemplarRecord, ExemplarSet, read_exemplars
from causalvis.store.layout import StudyPaths
from causalvis.store.trials import TWO_AFC_BASE_COLUMNS
from causalvis.store.units import UnitEntry, read_units

log = logging.getLogger("causalvis.trials")


def relative_span(act_max: float, act_min: float, top: float, bottom: float) -> float:
    """``(act_max - act_min) / (top - bottom)``: the pair's share of the unit's range."""
    span = top - bottom
    if not span > 0:
        raise CausalvisError(
            f"the unit's dataset activations have no range (max {top:g}, min {bottom:g})"
        )
    return (act_max - act_min) / span


def _record(paths: StudyPaths, key: str) -> ExemplarRecord:
    record = read_exemplars(paths, key)
    if record.scheme != "imi":
        raise CausalvisError(
            f"{paths.exemplar(key)}: scheme {record.scheme!r}, task two_afc needs the imi "
            "scheme (rerun `causalvis build --stage exemplars`)"
        )
    return record


def build_pair(
    ctx, unit: UnitEntry, record: ExemplarRecord, item: ExemplarSet, counts: Counter
) -> dict:
    """Row dict for one image set of one unit; empty when the served bytes drop it."""
    cfg, paths = ctx.config, ctx.paths
    layer, channel, key = unit.layer, unit.channel, unit.key
    b = item.image_set
    if item.min_query is None:
        raise CausalvisError(f"{paths.exemplar(key)}: image set {b} has no min_query")
    ids = (item.query.image_id, item.min_query.image_id)
    decoded = [decode_png(encode_png(ctx.source.load(i))) for i in ids]
    act_max, act_min = measure(ctx.model, layer, channel, decoded)
    top, bottom = record.top[0].activation, record.bottom[0].activation
    if act_max <= act_min:
        counts["flip"] += 1
        log.debug("drop %s set%d: order flips on the served bytes", key, b)
        return {}
    # Above 1 only where the query ties the dataset maximum (float jitter of one value).
    rel = min(1.0, relative_span(act_max, act_min, top, bottom))
    if rel < cfg.trials.tie_tolerance:
        counts["tie"] += 1
        log.debug("drop %s set%d: near tie (%g)", key, b, rel)
        return {}
    assets = [write_asset(paths, arr) for arr in decoded]
    for rel_path, arr in zip(assets, decoded, strict=True):
        if not np.array_equal(np.asarray(read_asset(paths, rel_path)), arr):
            raise CausalvisError(f"bundle/{rel_path} does not decode to the measured image")
    options = [(assets[0], act_max), (assets[1], act_min)]
    swap = order_flip(cfg.seed, key, b)
    (asset_a, act_a), (asset_b, act_b) = options[::-1] if swap else options
    trial_id = "t" + hashlib.sha256(
        f"{key}|{b}||{asset_a}|{asset_b}".encode()
    ).hexdigest()[:15]
    return {
        "trial_id": trial_id, "base_trial_id": trial_id, "kind": "main", "condition": "",
        "unit": unit.spec, "layer": layer, "channel": channel, "image_set": b,
        "query_asset": "", "option_a_asset": asset_a, "option_b_asset": asset_b,
        "reference_assets": "", "box_a": "", "box_b": "", "act_base": "",
        "act_a": act_a, "act_b": act_b, "correct": "b" if swap else "a", "rel_diff": rel,
        "query_image_id": ids[0], "min_query_image_id": ids[1],
    }


def _digest(ctx, record_bytes: bytes) -> str:
    h = hashlib.sha256(record_bytes).hexdigest()[:16]
    return f"two_afc|{ctx.config.digest('trials', 'model', 'images', 'seed')}|{h}"


def run_two_afc_trials(ctx) -> None:
    """Build (or reuse) every (unit, image set) query pair and write trials_base.csv."""
    paths: StudyPaths = ctx.paths
    rows: list[dict] = []
    counts: Counter = Counter()
    total = 0
    for unit in read_units(paths):
        key = unit.key
        record = _record(paths, key)
        digest = _digest(ctx, paths.exemplar(key).read_bytes())
        for item in record.image_sets:
            b = item.image_set
            total += 1
            row, item_counts = cached_trial(
                paths, key, b, digest,
                lambda c, unit=unit, record=record, item=item: build_pair(
                    ctx, unit, record, item, c
                ),
            )
            counts += item_counts
            if row:
                rows.append(row)
    write_base_trials(paths, rows, TWO_AFC_BASE_COLUMNS)
    log.info(
        "trials (two_afc): kept %d of %d query pairs; dropped on served bytes: %d order "
        "flips, %d near ties (rel. diff < %g)",
        len(rows), total, counts["flip"], counts["tie"], ctx.config.trials.tie_tolerance,
    )
