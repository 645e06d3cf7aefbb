"""A model of the paper-scale cost (issue 22 item 5) from measured per-item costs.

Measures, in this process with one torch thread, the CPU time (``time.process_time``:
core-seconds, far less sensitive to a loaded machine than wall time) of one item of each
heavy stage on lite0 with the paper2021 preset's nine unit layers, and multiplies by the
paper's counts:

* scan: 600,000 images, spatial means of all nine layers in one pass truncated after the
  deepest (decode excluded: random images);
* occlusion: 2 units x 10 image sets x 4,624 positions per layer (units never share a
  query here), each layer swept by the incremental engine (``auto``) and by the plain
  truncated sweep (``full``), per layer;
* feature visualization: 9 images x 2 units per layer, 2,560 steps, 256 px canvas
  viewed at 224 px, per layer.

    PYTHONPATH=src .venv/bin/python benchmarks/scale_model.py            # ~3 min on a CPU
    PYTHONPATH=src .venv/bin/python benchmarks/scale_model.py --quick    # smoke run

Prints a Markdown table; the last line is one JSON object. Extrapolated, not run end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of  # noqa: E402
from causalvis.featurevis import FourierParam, RenderSettings, render, unit_objective
from causalvis.featurevis.render import image_seed
from causalvis.images import SampleSource
from causalvis.models import ActivationProbe, load_model
from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep

PAPER_LAYERS = ["blocks.1.1", "blocks.2.1", "blocks.3.0", "blocks.3.2", "blocks.4.1",
                "blocks.4.2", "blocks.5.1", "blocks.5.3", "blocks.6.0"]  # fmt: skip
SCAN_IMAGES = 600_000
UNITS_PER_LAYER, IMAGE_SETS, POSITIONS = 2, 10, 68 * 68
FV_IMAGES, FV_STEPS, FV_CANVAS = 9, 2560, 256


def cpu_seconds(fn, repeats: int = 1) -> float:
    """CPU seconds of one call of ``fn`` (median of ``repeats``, after one warm-up)."""
    return best_of(fn, repeats=repeats, warmup=1, clock=time.process_time)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--layers", default=",".join(PAPER_LAYERS))
    ap.add_argument("--stride", type=int, default=28, help="measured grid (36 positions)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model("lite0")
    layers = args.layers.split(",")[:2] if args.quick else args.layers.split(",")
    n_scan = 8 if args.quick else 64
    fv_steps = 1 if args.quick else 2
    stride = 112 if args.quick else args.stride

    gen = torch.Generator().manual_seed(0)
    scan_x = torch.rand(n_scan, 3, 224, 224, generator=gen)
    with ActivationProbe(model, PAPER_LAYERS) as probe:
        scan_s = cpu_seconds(lambda: [probe.run(scan_x[i : i + 32])
                                      for i in range(0, n_scan, 32)]) / n_scan  # fmt: skip

    image = SampleSource(model.input_size, model.crop_pct).load_array("chelsea/s0.60/r1c1")
    occ = Occluder(image.copy(), Grid.for_config(224, 0.4, stride), fill="mean")
    n_occ = len(occ) + 1  # + the unoccluded query
    per_layer = {}
    settings = RenderSettings(steps=fv_steps)  # the defaults: crop 16, 224 px view
    canvas = 64 if args.quick else FV_CANVAS
    for layer in layers:
        inc = IncrementalSweep(model, [layer])
        inc_s = cpu_seconds(lambda inc=inc: inc.run(occ)) / n_occ
        full_s = cpu_seconds(lambda layer=layer: occlusion_sweep(model, occ, [layer])) / n_occ
        seeds = [image_seed(0, layer, i) for i in range(FV_IMAGES)]
        objective = unit_objective(layer, [0] * FV_IMAGES, 1)
        fv_s = cpu_seconds(lambda s=seeds, o=objective: render(
            model, o, FourierParam(s, canvas), s, settings)) / fv_steps
        per_layer[layer] = {"occlusion_incremental_s": inc_s, "occlusion_full_s": full_s,
                            "featurevis_step_s": fv_s}  # fmt: skip

    # paper counts x measured per-item CPU seconds (the measured layers stand for the nine)
    scale = len(PAPER_LAYERS) / len(layers)
    occ_images = UNITS_PER_LAYER * IMAGE_SETS * POSITIONS
    hours = {
        "scan": SCAN_IMAGES * scan_s / 3600,
        "occlusion_incremental": scale * sum(
            occ_images * v["occlusion_incremental_s"] for v in per_layer.values()) / 3600,
        "occlusion_full": scale * sum(
            occ_images * v["occlusion_full_s"] for v in per_layer.values()) / 3600,
        "featurevis": scale * sum(
            UNITS_PER_LAYER * FV_STEPS * v["featurevis_step_s"] for v in per_layer.values())
        / 3600,
    }
    total = hours["scan"] + hours["occlusion_incremental"] + hours["featurevis"]
    print("| stage | paper count | measured CPU s per item | core-hours |")
    print("|---|---|---|---|")
    print(f"| scan | {SCAN_IMAGES:,} images | {scan_s:.4f} per image | {hours['scan']:.1f} |")
    for key, name in (("occlusion_incremental", "occlusion (auto: incremental)"),
                      ("occlusion_full", "occlusion (full: plain sweep)")):
        per = np.mean([v[f"{key}_s"] for v in per_layer.values()])
        print(f"| {name} | {occ_images * 9:,} occluded images | {per:.4f} per image "
              f"(mean over layers) | {hours[key]:.1f} |")
    per = np.mean([v["featurevis_step_s"] for v in per_layer.values()])
    print(f"| feature visualization | {18 * FV_STEPS:,} steps of {FV_IMAGES} images | "
          f"{per:.3f} per step (mean over layers) | {hours['featurevis']:.1f} |")
    print(f"| total (incremental occlusion) | | | {total:.1f} |")
    result = {
        "benchmark": "scale_model", "quick": args.quick, "model": "lite0", "threads": 1,
        "scan_cpu_s_per_image": round(scan_s, 5),
        "per_layer": {k: {kk: round(vv, 5) for kk, vv in v.items()}
                      for k, v in per_layer.items()},
        "core_hours": {k: round(v, 2) for k, v in hours.items()},
        "core_hours_total": round(total, 2),
        "load_average_1min": round(os.getloadavg()[0], 2), "torch": torch.__version__,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
