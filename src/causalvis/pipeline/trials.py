"""Stage ``trials``: one condition-free trial per (unit, image set), true on served bytes.

For each ``occlusion/<unit>/set<b>.npz`` the trial rule (:mod:`trial_rule`) picks option A
(argmax) and B (argmin, optionally constrained) for every candidate query; candidates are
tried by decreasing relative difference. The query and both occluded images are encoded
as lossless PNG, decoded again and re-run through the model: the stored activations are
the re-run ones, and a candidate whose order flips or whose ``|A - B| / |base|`` falls
below ``trials.tie_tolerance`` is dropped (counted in the stage's log line). Kept images go
to ``bundle/assets/`` under content-hashed names; A and B are labelled ``a``/``b`` in a
seeded random order (:mod:`causalvis.pipeline.served`). Output:
``stimuli/trials_base.csv`` (columns ``store.trials.BASE_COLUMNS``) and a copy as
``trials.csv`` (the sessions stage later replaces it with the per-condition table).
This is the causal-occlusion task's ``trials`` stage; task ``two_afc`` has its own
(:mod:`causalvis.pipeline.two_afc`, see :mod:`causalvis.pipeline.registry`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from causalvis.errors import CausalvisError
from causalvis.pipeline.occlusion import make_occluder, plan
from causalvis.pipeline.served import (
    cached_trial,
    decode_png,
    measure,
    order_flip,
    write_base_trials,
)
from causalvis.stimuli.occlusion import Grid
from causalvis.stimuli.trial_rule import Pair, rank_candidates, relative_difference, select_pair
from causalvis.store.assets import encode_png, read_asset, write_asset
from causalvis.store.layout import StudyPaths
from causalvis.store.occlusion import OcclusionResult, read_occlusion
from causalvis.store.trials import BASE_COLUMNS
from causalvis.store.units import UnitEntry, read_units

log = logging.getLogger("causalvis.trials")


@dataclass(frozen=True)
class Measured:
    """Activations re-run on the decoded bytes of query, argmax and argmin images."""

    base: float
    high: float  # the argmax occlusion (option A of the rule)
    low: float  # the argmin occlusion (option B of the rule)


def check_served(pair: Pair, measured: Measured, tie_tolerance: float) -> str | None:
    """Why a trial must be dropped after the served-bytes re-run (None = keep)."""
    if (measured.high - measured.low) * (pair.act_a - pair.act_b) <= 0:
        return "flip"
    if relative_difference(measured.high, measured.low, measured.base) < tie_tolerance:
        return "tie"
    return None


def box_text(box: tuple[int, int, int, int]) -> str:
    return " ".join(str(v) for v in box)


def _digest(ctx, npz: Path) -> str:
    h = hashlib.sha256(npz.read_bytes()).hexdigest()[:16]
    cfg = ctx.config
    return f"{cfg.digest('trials', 'model', 'occlusion', 'blur', 'seed')}|{h}"


def build_trial(
    ctx, unit: UnitEntry, image_set: int, res: OcclusionResult, counts: Counter
) -> dict:
    """Row dict for one (unit, image set); empty when no candidate survives (counted)."""
    cfg, paths, model = ctx.config, ctx.paths, ctx.model
    grid = Grid(res.size, res.patch, res.stride)
    tcfg = cfg.trials
    pairs = [
        select_pair(res.maps[k], float(res.bases[k]), grid, min_rel_diff=tcfg.min_rel_diff,
                    min_distance=tcfg.min_distance, no_overlap=tcfg.no_overlap)
        for k in range(len(res.image_ids))
    ]
    order = rank_candidates(pairs)
    if not order:
        counts["no_pair"] += 1
    layer, channel, key = unit.layer, unit.channel, unit.key
    for k in order:
        pair = pairs[k]
        query = ctx.source.load_array(res.image_ids[k])
        occluder = make_occluder(query, cfg, res.size)
        if occluder.grid != grid:
            raise CausalvisError(
                f"{paths.occlusion_result(key, image_set)} is stale: rerun occlusion"
            )
        high, low = occluder.build([pair.index_a, pair.index_b])
        encoded = [encode_png(Image.fromarray(a)) for a in (query, high, low)]
        decoded = [decode_png(b) for b in encoded]
        served = Measured(*measure(model, layer, channel, decoded))
        why = check_served(pair, served, tcfg.tie_tolerance)
        if why is not None:
            counts[why] += 1
            log.debug("drop %s set%d candidate %d: %s", key, image_set, k, why)
            continue
        assets = [write_asset(paths, Image.fromarray(a)) for a in decoded]
        for rel, arr in zip(assets, decoded, strict=True):
            if not np.array_equal(np.asarray(read_asset(paths, rel)), arr):
                raise CausalvisError(f"bundle/{rel} does not decode to the measured image")
        box_high, box_low = grid.box(pair.index_a), grid.box(pair.index_b)
        swap = order_flip(cfg.seed, key, image_set)
        opt = [(assets[1], box_high, served.high), (assets[2], box_low, served.low)]
        (asset_a, box_a, act_a), (asset_b, box_b, act_b) = opt[::-1] if swap else opt
        trial_id = "t" + hashlib.sha256(
            f"{key}|{image_set}|{assets[0]}|{asset_a}|{asset_b}".encode()
        ).hexdigest()[:15]
        row = {
            "trial_id": trial_id, "base_trial_id": trial_id, "kind": "main", "condition": "",
            "unit": unit.spec, "layer": layer, "channel": channel,
            "image_set": image_set, "query_asset": assets[0], "option_a_asset": asset_a,
            "option_b_asset": asset_b, "reference_assets": "", "box_a": box_text(box_a),
            "box_b": box_text(box_b), "act_base": served.base, "act_a": act_a, "act_b": act_b,
            "correct": "a" if act_a > act_b else "b",
            "rel_diff": relative_difference(act_a, act_b, served.base),
            "query_image_id": res.image_ids[k],
        }
        _figure(ctx, key, image_set, query, res.maps[k], float(res.bases[k]), grid, pair,
                high, low, note=f"rel. diff {row['rel_diff']:.3f}, candidate {k}")
        return row
    k0 = 0
    _figure(ctx, key, image_set, ctx.source.load_array(res.image_ids[k0]), res.maps[k0],
            float(res.bases[k0]), grid, pairs[k0], None, None, note="no trial (dropped)")
    return {}


def _figure(ctx, key, image_set, query, act_map, base, grid, pair, high, low, note) -> None:
    from causalvis.stimuli.heatmap import render_heatmap

    render_heatmap(
        ctx.paths.occlusion_figure(key, image_set), query, act_map, base, grid,
        index_a=pair.index_a if pair else None, index_b=pair.index_b if pair else None,
        option_a=high, option_b=low, title=f"{key}  image set {image_set}", note=note,
    )


def run_trials_stage(ctx) -> None:
    """Build (or reuse) every (unit, image set) trial and write trials_base.csv."""
    paths: StudyPaths = ctx.paths
    units = {u.key: u for u in read_units(paths)}
    rows: list[dict] = []
    counts: Counter = Counter()
    items = plan(paths, ctx.config)
    total = len(items)
    for item in items:
        unit, image_set = units[item.key], item.image_set
        key = item.key
        npz = paths.occlusion_result(key, image_set)
        if not npz.is_file():
            raise CausalvisError(f"{npz} not found: run `causalvis build --stage occlusion`")
        row, item_counts = cached_trial(
            paths, key, image_set, _digest(ctx, npz),
            lambda c, unit=unit, image_set=image_set, npz=npz: build_trial(
                ctx, unit, image_set, read_occlusion(npz), c
            ),
        )
        counts += item_counts
        if row:
            rows.append(row)
    write_base_trials(paths, rows, BASE_COLUMNS)
    log.info(
        "trials: kept %d of %d; dropped on served bytes: %d order flips, %d near ties "
        "(< %g); %d without a valid pair (constraints / min_rel_diff)",
        len(rows), total, counts["flip"], counts["tie"], ctx.config.trials.tie_tolerance,
        counts["no_pair"],
    )
