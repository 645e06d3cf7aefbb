"""Throughput of the real occlusion stage's work items: local vs. Ray with 1 and 2 workers.

Builds a small quick-preset study up to ``exemplars`` (in-process), then runs the
occlusion stage's own items (:func:`causalvis.pipeline.occlusion.occlusion_items`,
one per query image, all layers it needs in one sweep) on each executor, one torch thread
per item, after a warm-up item per worker (model load). Checks that every executor wrote
the same ``.npz`` bytes.

    .venv/bin/python benchmarks/bench_stage_items.py [--units-per-layer 2] [--stride 12]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def make_study(root: Path, args: argparse.Namespace) -> None:
    from causalvis.pipeline.build import build, init_study
    from causalvis.store.layout import StudyPaths

    cfg = init_study(root, "quick")
    cfg.images.max_images = 96
    cfg.scan.workers = 1
    cfg.units.layers = ["blocks.2.1", "blocks.4.2"]
    cfg.units.per_layer = args.units_per_layer
    cfg.units.n_practice_units = 0
    cfg.exemplars.n_top = 40
    cfg.exemplars.n_bins = 10
    cfg.exemplars.n_references = 2
    cfg.exemplars.n_image_sets = 2
    cfg.occlusion.stride = args.stride
    cfg.save(StudyPaths(root).config)
    build(root, ["scan", "units", "exemplars"], progress=False, executor_options={"threads": 1})


def run_occlusion(root: Path, executor: str, **options) -> dict:
    from causalvis.compute import run_items
    from causalvis.config import StudyConfig
    from causalvis.pipeline.build import StageContext
    from causalvis.pipeline.occlusion import occlusion_items
    from causalvis.store.layout import StudyPaths

    paths = StudyPaths(root)
    shutil.rmtree(paths.occlusion, ignore_errors=True)
    shutil.rmtree(paths.stamps / "occlusion", ignore_errors=True)
    items = occlusion_items(StageContext(paths, StudyConfig.load(paths.config), progress=False))
    report = run_items(root, items, executor, progress=False, threads=1, **options)
    npz = {p.relative_to(root).as_posix(): p.read_bytes()
           for p in sorted(paths.occlusion.rglob("*.npz"))}
    return {"items": report.done, "items_per_s": report.items_per_second,
            "mean_item_s": report.mean_item_seconds, "wall_s": report.wall_seconds,
            "workers": len(set(report.workers.values())), "npz": npz}


def run_ray(root: Path, n_cpus: int) -> dict:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=n_cpus, include_dashboard=False, log_to_driver=False)
    try:
        t0 = time.perf_counter()
        run_occlusion(root, "ray")  # warm-up: worker start + one model load per worker
        warm = time.perf_counter() - t0
        out = run_occlusion(root, "ray")
        out["warmup_s"] = warm
        return out
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units-per-layer", type=int, default=2)
    parser.add_argument("--stride", type=int, default=12)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench-stage-items-")) / "study"
    try:
        make_study(root, args)
        run_occlusion(root, "local")  # warm the in-process model
        results = {"local": run_occlusion(root, "local"), "ray1": run_ray(root, 1),
                   "ray2": run_ray(root, 2)}
        same = len({json.dumps(sorted((k, v.hex()) for k, v in r["npz"].items()))
                    for r in results.values()}) == 1
        for name, r in results.items():
            print(f"{name:<6} {r['items']} items  {r['items_per_s']:.3f} items/s  "
                  f"{r['mean_item_s']:.2f} s/item  ({r['workers']} worker pid(s))")
        eff = results["ray2"]["items_per_s"] / (2 * results["ray1"]["items_per_s"])
        summary = {k: {f: round(v, 4) for f, v in r.items() if isinstance(v, float)}
                   for k, r in results.items()}
        summary.update(ray_scaling_efficiency=round(eff, 3), identical_npz=same,
                       load_avg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
        print(json.dumps(summary))
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
