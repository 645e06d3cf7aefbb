"""glibc malloc tuning (causalvis.malloc) on vs off, side by side in one run.

The same workload runs in fresh child processes, alternating ``CAUSALVIS_MALLOC_TUNING=0``
and ``=1`` (``--repeats`` times each): a batched feature-visualization render (the
references stage's core: ``render_units`` for ``--units`` units of one lite0 layer,
``--n-images`` images each, ``--steps`` steps at ``--size`` px) and an activation scan of
``--scan-images`` sample images. Reported per setting: median wall seconds, user and
system CPU seconds and peak RSS of the child (``os.wait4``), a digest of the rendered
pixels (must be equal: the setting changes where memory lives, not the numbers), and
the ratios off / on.

Usage: python benchmarks/bench_allocator.py [--steps 32] [--repeats 2] [--threads 2]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np


def workload(args: argparse.Namespace) -> dict:
    """Run in the child: tune (or not), render, scan; print the pixel digest as JSON."""
    from causalvis.malloc import tune_malloc

    applied = tune_malloc()
    import torch

    from causalvis.config import preset
    from causalvis.images import open_source
    from causalvis.images.preprocess import uint8_to_tensor
    from causalvis.models import load_model, probe_tensor
    from causalvis.pipeline.featurevis_recipe import render_units

    torch.set_num_threads(args.threads)
    model = load_model("lite0")
    cfg = preset("quick").featurevis.model_copy(
        update={"steps": args.steps, "size": args.size, "n_images": args.n_images}
    )
    t0 = time.perf_counter()
    rendered = render_units(model, args.layer, [(c, 1000 + c) for c in range(args.units)], cfg)
    render_s = time.perf_counter() - t0
    digest = hashlib.sha256()
    for unit in rendered:
        digest.update(unit.images.contiguous().numpy().tobytes())
    source = open_source("samples", model.input_size, model.crop_pct)
    ids = list(source.ids)[: args.scan_images]
    t0 = time.perf_counter()
    for start in range(0, len(ids), 32):
        arrays = [a for _, a in source.iter_images(ids[start : start + 32])]
        probe_tensor(model, uint8_to_tensor(np.stack(arrays)), [args.layer])
    scan_s = time.perf_counter() - t0
    return {"applied": applied, "render_s": render_s, "scan_s": scan_s,
            "digest": digest.hexdigest()[:16]}


def run_child(setting: str, argv: list[str]) -> dict:
    env = dict(os.environ, CAUSALVIS_MALLOC_TUNING=setting)
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", *argv], env=env,
                            stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"child with CAUSALVIS_MALLOC_TUNING={setting} failed ({status})")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(wall_s=wall, user_s=usage.ru_utime, sys_s=usage.ru_stime,
                  peak_rss_mib=usage.ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layer", default="blocks.3.2")
    parser.add_argument("--units", type=int, default=4)
    parser.add_argument("--n-images", type=int, default=5)
    parser.add_argument("--steps", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--scan-images", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(workload(args)))
        return
    argv = [a for a in sys.argv[1:] if a != "--child"]
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for _ in range(args.repeats):
        for name, setting in (("off", "0"), ("on", "1")):  # alternate: fair under load
            runs[name].append(run_child(setting, argv))
            print(name, json.dumps(runs[name][-1]), flush=True)
    keys = ("wall_s", "render_s", "scan_s", "user_s", "sys_s", "peak_rss_mib")
    summary = {name: {k: statistics.median(r[k] for r in rs) for k in keys}
               for name, rs in runs.items()}
    digests = {r["digest"] for rs in runs.values() for r in rs}
    print(json.dumps({
        "benchmark": "allocator",
        "settings": vars(args) | {"child": None},
        "off": summary["off"],
        "on": summary["on"],
        "applied_on": all(r["applied"] for r in runs["on"]),
        "identical_pixels": len(digests) == 1,
        "wall_ratio_off_on": summary["off"]["wall_s"] / summary["on"]["wall_s"],
        "render_ratio_off_on": summary["off"]["render_s"] / summary["on"]["render_s"],
        "scan_ratio_off_on": summary["off"]["scan_s"] / summary["on"]["scan_s"],
        "sys_share_off": summary["off"]["sys_s"]
        / (summary["off"]["sys_s"] + summary["off"]["user_s"]),
        "sys_share_on": summary["on"]["sys_s"] / (summary["on"]["sys_s"] + summary["on"]["user_s"]),
    }))


if __name__ == "__main__":
    main()
