"""Stage ``trials``: one condition-free trial per (unit, image set), true on served bytes.

For each ``occlusion/<unit>/set<b>.npz`` the trial rule (:mod:`trial_rule`) picks option A
(argmax) and B (argmin, optionally constrained) for every candidate query; candidates are
tried by decreasing relative difference. The query and both occluded images are encoded
as lossless PNG, decoded again and re-run through the model: the stored activations are
the re-run ones, and a candidate whose order flips or whose ``|A - B| / |base|`` falls
below ``trials.tie_tolerance`` is dropped (counted in the stage's log line). Kept images go
to ``bundle/assets/`` under content-hashed names; A and B are labelled ``a``/``b`` in a
seeded random order. Output: ``stimuli/trials_base.csv`` and a copy as ``trials.csv``
(the sessions stage later replaces it with the per-condition table).
Task ``two_afc`` builds its query pairs instead (:mod:`causalvis.pipeline.two_afc`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from causalvis.errors import CausalvisError
from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline.occlusion import (
    OcclusionResult,
    load_result,
    load_units,
    make_occluder,
    plan,
    result_path,
)
from causalvis.stimuli.occlusion import Grid
from causalvis.stimuli.trial_rule import Pair, rank_candidates, relative_difference, select_pair
from causalvis.store.assets import encode_png, read_asset, write_asset
from causalvis.store.layout import (
    StudyPaths,
    atomic_write,
    read_json,
    stamp_matches,
    write_json,
    write_stamp,
)

log = logging.getLogger("causalvis.trials")

COLUMNS = [
    "trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
    "image_set", "query_asset", "option_a_asset", "option_b_asset", "reference_assets",
    "box_a", "box_b", "act_base", "act_a", "act_b", "correct", "rel_diff",
    "query_image_id",
]


@dataclass(frozen=True)
class Measured:
    """Activations re-run on the decoded bytes of query, argmax and argmin images."""

    base: float
    high: float  # the argmax occlusion (option A of the rule)
    low: float  # the argmin occlusion (option B of the rule)


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def measure(model, layer: str, channel: int, images: list[np.ndarray]) -> list[float]:
    """The unit's activation on uint8 images, exactly as ``causalvis probe`` computes it."""
    acts = probe_tensor(model, uint8_to_tensor(np.stack(images)), [layer])[layer]
    return [float(v) for v in acts[:, channel]]


def check_served(pair: Pair, measured: Measured, tie_tolerance: float) -> str | None:
    """Why a trial must be dropped after the served-bytes re-run (None = keep)."""
    if (measured.high - measured.low) * (pair.act_a - pair.act_b) <= 0:
        return "flip"
    if relative_difference(measured.high, measured.low, measured.base) < tie_tolerance:
        return "tie"
    return None


def order_flip(seed: int, key: str, image_set: int) -> bool:
    """Seeded coin: True = the argmax option is labelled ``b``."""
    digest = hashlib.sha256(f"{seed}|option-order|{key}|{image_set}".encode()).digest()
    return bool(digest[0] & 1)


def box_text(box: tuple[int, int, int, int]) -> str:
    return " ".join(str(v) for v in box)


def _digest(ctx, npz: Path) -> str:
    h = hashlib.sha256(npz.read_bytes()).hexdigest()[:16]
    cfg = ctx.config
    return f"{cfg.digest('trials', 'model', 'occlusion', 'blur', 'seed')}|{h}"


def build_trial(ctx, unit: dict, image_set: int, res: OcclusionResult, counts: Counter) -> dict:
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
    layer, channel, key = unit["layer"], int(unit["channel"]), unit["key"]
    for k in order:
        pair = pairs[k]
        query = ctx.source.load_array(res.image_ids[k])
        occluder = make_occluder(query, cfg, res.size)
        if occluder.grid != grid:
            raise CausalvisError(f"{result_path(paths, key, image_set)} is stale: rerun occlusion")
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
            "unit": f"{layer}:{channel}", "layer": layer, "channel": channel,
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
        ctx.paths.occlusion / key / f"set{image_set}.png", query, act_map, base, grid,
        index_a=pair.index_a if pair else None, index_b=pair.index_b if pair else None,
        option_a=high, option_b=low, title=f"{key}  image set {image_set}", note=note,
    )


def write_table(path: Path, rows: list[dict], columns: list[str] = COLUMNS) -> bool:
    """Write the table unless the file already holds exactly these bytes (so a rerun
    leaves it, and everything downstream of it, untouched); True if it was written."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: (repr(v) if isinstance(v, float) else v) for c, v in row.items()})
    data = buf.getvalue().encode()
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True


def run_trials_stage(ctx) -> None:
    """Build (or reuse) every (unit, image set) trial and write trials_base.csv."""
    paths: StudyPaths = ctx.paths
    if ctx.config.task == "two_afc":
        from causalvis.pipeline.two_afc import run_two_afc_trials

        run_two_afc_trials(ctx)
        return
    if ctx.config.task != "causal_occlusion":
        log.info("trials: skipped (task %s has no occlusion trials)", ctx.config.task)
        return
    units = {u["key"]: u for u in load_units(paths)}
    rows: list[dict] = []
    counts: Counter = Counter()
    items = plan(paths, ctx.config)
    total = len(items)
    for item in items:
        unit, image_set = units[item.key], item.image_set
        key = item.key
        npz = result_path(paths, key, image_set)
        if not npz.is_file():
            raise CausalvisError(f"{npz} not found: run `causalvis build --stage occlusion`")
        cache = paths.stimuli / "trials" / key / f"set{image_set}.json"
        stamp, digest = f"trials/{key}/set{image_set}", _digest(ctx, npz)
        if cache.is_file() and stamp_matches(paths, stamp, digest):
            cached = read_json(cache)
            row, counts = cached["row"], counts + Counter(cached["drops"])
        else:
            item_counts: Counter = Counter()
            row = build_trial(ctx, unit, image_set, load_result(npz), item_counts)
            write_json(cache, {"row": row, "drops": dict(item_counts)})
            write_stamp(paths, stamp, digest)
            counts += item_counts
        if row:
            rows.append(row)
    base = paths.stimuli / "trials_base.csv"
    if write_table(base, rows) or not paths.trials.is_file():
        # trials.csv starts as the condition-free table; the sessions stage expands it.
        atomic_write(paths.trials, base.read_bytes())
    log.info(
        "trials: kept %d of %d; dropped on served bytes: %d order flips, %d near ties "
        "(< %g); %d without a valid pair (constraints / min_rel_diff)",
        len(rows), total, counts["flip"], counts["tie"], ctx.config.trials.tie_tolerance,
        counts["no_pair"],
    )
