"""Executor throughput: occlusion-like work items on local, Ray(1) and Ray(2) workers.

Each item occludes one embedded sample image at every position of a coarse grid (40 %
patch, mean fill, uint8 pixels as served) and records all channels of one mid-depth lite0
layer, exactly like an occlusion-stage item at a coarser stride. Model loads are warmed
up first (one round of warm-up items per worker), so rates are steady-state. From the
measured per-image costs it extrapolates the paper2021 preset to core-hours.

    python benchmarks/bench_executors.py [--items 8] [--stride 16] [--layer blocks.3.2]

Everything here runs on this machine's CPU; the paper-scale figures are extrapolations.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, emit  # noqa: E402
from causalvis.compute import ItemContext, WorkItem, run_items  # noqa: E402
from causalvis.pipeline.items import cached_model  # noqa: E402

# paper2021 (PROTOCOL.md): ~600k images scanned; 68 x 68 = 4,624 occlusions per trial for
# 18 units x 10 image sets; feature visualizations: 2,560 steps, batch of 9, per unit.
PAPER = {"scan_images": 600_000, "positions": 4_624, "units": 18, "image_sets": 10, "steps": 2_560}


def occlusion_item(ctx: ItemContext, image: int, layer: str, stride: int, batch: int) -> dict:
    """One query x one layer: the occlusion sweep of an occlusion-stage work item."""
    from causalvis.images import SampleSource
    from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep

    model = cached_model("lite0", None, ctx.device)
    source = SampleSource(model.input_size, model.crop_pct)
    pixels = np.array(source.load_array(source.ids[image]), dtype=np.uint8)
    occluder = Occluder(pixels, Grid.for_config(model.input_size, 0.4, stride), fill="mean")
    sweep = occlusion_sweep(model, occluder, [layer], batch_size=batch)
    ctx.save_npz(f"occlusion/img-{image:03d}.npz", acts=sweep.acts[layer], base=sweep.base[layer])
    return {"positions": len(occluder), "pid": os.getpid()}


def items(prefix: str, n: int, args: argparse.Namespace) -> list[WorkItem]:
    kwargs = {"layer": args.layer, "stride": args.stride, "batch": args.batch}
    return [
        WorkItem(f"{prefix}/img-{i:03d}", "bench_executors:occlusion_item", {"image": i, **kwargs})
        for i in range(n)
    ]


def measure(executor: str, n_workers: int, args: argparse.Namespace, **options) -> dict:
    """Warm the workers (model load), then time ``args.items`` fresh items."""
    root = Path(tempfile.mkdtemp(prefix=f"bench-{executor}{n_workers}-"))
    try:
        t0 = time.perf_counter()
        run_items(root, items("warmup", n_workers, args), executor, progress=False, **options)
        warm_s = time.perf_counter() - t0
        report = run_items(
            root, items("timed", args.items, args), executor, progress=False, **options
        )
        positions = next(iter(report.values.values()))["positions"]
        return {
            "workers": n_workers,
            "items": report.done,
            "positions_per_item": positions,
            "items_per_s": report.items_per_second,
            "mean_item_s": report.mean_item_seconds,
            "s_per_occluded_image": report.mean_item_seconds / (positions + 1),
            "startup_and_warmup_s": warm_s,
            "distinct_worker_pids": len(set(report.workers.values())),
        }
    finally:
        shutil.rmtree(root, ignore_errors=True)


def measure_ray(n_cpus: int, args: argparse.Namespace) -> dict:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False)
    try:
        return measure("ray", n_cpus, args)
    finally:
        ray.shutdown()


def scan_seconds_per_image(batch: int, repeats: int) -> float:
    """Scan cost: spatial means of a deep layer for a batch (in-process, 1 image)."""
    from causalvis.models import ActivationProbe

    model = cached_model("lite0", None, "cpu")
    x = torch.rand(batch, 3, model.input_size, model.input_size)
    with ActivationProbe(model, ["blocks.3.2", "blocks.6.0"]) as probe:
        return best_of(lambda: probe(x), repeats) / batch


def render_seconds_per_step(layer: str, repeats: int) -> float:
    """Feature-visualization cost: forward + backward of a batch of 9 to ``layer``."""
    from causalvis.models import ActivationProbe

    model = cached_model("lite0", None, "cpu")
    x = torch.rand(9, 3, model.input_size, model.input_size, requires_grad=True)

    def step() -> None:
        with ActivationProbe(model, [layer], grad=True) as probe:
            probe(x)[layer].mean().backward()

    return best_of(step, repeats, warmup=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--layer", default="blocks.3.2")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()[0]  # other jobs on the machine skew the scaling figure

    local = measure("local", 1, args, threads=1)
    ray1 = measure_ray(1, args)
    ray2 = measure_ray(2, args)
    efficiency = ray2["items_per_s"] / (2 * ray1["items_per_s"])
    for label, r in (
        ("local (in-process, 1 thread)", local),
        ("ray, 1 worker", ray1),
        ("ray, 2 workers", ray2),
    ):
        print(
            f"{label:<30} {r['items_per_s']:.3f} items/s  {r['mean_item_s']:.2f} s/item  "
            f"({r['positions_per_item']} occlusions/item, warm-up {r['startup_and_warmup_s']:.1f} s)"
        )
    load = (load_before, os.getloadavg()[0])
    print(
        f"ray scaling efficiency rate(2)/(2 rate(1)) = {efficiency:.2f} on {cores} cores "
        f"(1-min load average {load[0]:.1f} before, {load[1]:.1f} after)"
    )

    torch.set_num_threads(1)  # per-core costs, like one worker
    occ_s = local["s_per_occluded_image"]
    scan_s = scan_seconds_per_image(args.batch, args.repeats)
    step_s = render_seconds_per_step(args.layer, args.repeats)
    p = PAPER
    occlusions = p["positions"] * p["units"] * p["image_sets"]
    steps = p["steps"] * p["units"]
    hours = {
        "scan": p["scan_images"] * scan_s / 3600,
        "occlusion": occlusions * occ_s / 3600,
        "renders": steps * step_s / 3600,
    }
    hours["total"] = sum(hours.values())
    print(
        f"measured per core (lite0, CPU): scan {scan_s * 1e3:.1f} ms/image, occlusion "
        f"{occ_s * 1e3:.1f} ms/occluded image (to {args.layer}), render {step_s:.2f} s/step (batch 9)"
    )
    print(
        "EXTRAPOLATED paper2021 core-hours (lite0 on this CPU, not measured end to end): "
        + ", ".join(f"{k} {v:.0f}" for k, v in hours.items())
        + f"  [{p['scan_images']} scan images, {occlusions} occlusions, {steps} render steps]"
    )
    emit(
        {
            "bench": "executors",
            "device": "cpu",
            "cores": cores,
            "load_average_1min": {"before": load[0], "after": load[1]},
            "model": "lite0",
            "layer": args.layer,
            "stride": args.stride,
            "measured": {"local": local, "ray1": ray1, "ray2": ray2},
            "ray_scaling_efficiency": efficiency,
            "measured_per_core_s": {
                "scan_per_image": scan_s,
                "occlusion_per_image": occ_s,
                "render_per_step_batch9": step_s,
            },
            "extrapolated_paper2021_core_hours": hours,
            "paper2021_counts": {"occlusions": occlusions, "render_steps": steps, **p},
        }
    )


if __name__ == "__main__":
    main()
