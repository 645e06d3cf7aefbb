"""Benchmark: the dataset scan (5 layers of lite0 in one truncated pass) vs alternatives.

Compares, on the same already-decoded images (decoding excluded from all three; the
scan side *includes* its uint8 -> float conversion and float16 storage conversion):

* **scan**: the scan stage's per-batch code (:func:`causalvis.pipeline.scan.probe_arrays`),
* **bare forward**: ``model(x)`` on ready float tensors (goal: scan >= 0.9x its speed),
* **per layer**: one full forward per layer with a single hook, the way the reference
  code scanned (goal: scan >= 3x faster).

``--stage`` additionally times the whole ``scan`` stage end to end (decoding included).
The last line printed is a JSON object with ``vs_bare_forward`` and ``vs_per_layer``:
medians over the repeats of (time of the alternative / time of the scan) for neighbouring
runs; the ``*_img_s`` fields are best-of throughputs.

    .venv/bin/python benchmarks/bench_scan.py --images 96 --batch-size 32 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

LAYERS = ["blocks.1.1", "blocks.2.1", "blocks.3.2", "blocks.4.2", "blocks.5.3"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best_of(fn, repeats: int, device: torch.device) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--stage", action="store_true", help="also time the scan stage")
    parser.add_argument("--side", choices=("scan", "bare", "per_layer"), default=None,
                        help="time one of the three once (fresh process, benchmarks/suite.py)")
    parser.add_argument("--timed-runs", type=int, default=1,
                        help="with --side: timed calls after the warm-up; `seconds` is their "
                        "median (one slow call does not decide a sub-second comparison)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from causalvis.images import SampleSource
    from causalvis.images.preprocess import uint8_to_tensor
    from causalvis.malloc import heap_allocations
    from causalvis.models import ActivationProbe, load_model
    from causalvis.models.fold import inference_model
    from causalvis.pipeline.scan import probe_arrays

    device = torch.device(args.device)
    model = load_model("lite0", device=device)
    source = SampleSource(model.input_size, model.crop_pct)
    ids = (source.ids * (args.images // len(source.ids) + 1))[: args.images]
    arrays = [source.load_array(i) for i in ids]
    bs = args.batch_size
    batches_u8 = [arrays[i : i + bs] for i in range(0, len(arrays), bs)]
    batches_f = [uint8_to_tensor(np.stack(b)).to(device) for b in batches_u8]
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
        batches_f = [b.contiguous(memory_format=torch.channels_last) for b in batches_f]

    # the network the probe runs (BatchNorm folded unless CAUSALVIS_FOLD_NORMS=0) on the
    # probe's allocator (heap), so only the scan's overhead differs
    net = inference_model(model)

    def bare() -> None:
        with torch.inference_mode(), heap_allocations(device.type == "cpu"):
            for x in batches_f:
                net(x)

    probe = ActivationProbe(model, LAYERS)

    def scan() -> None:
        with probe:  # hooks only while scanning, so that bare() runs the plain model
            for batch in batches_u8:
                probe_arrays(probe, batch)

    singles = [ActivationProbe(model, [layer], truncate=False) for layer in LAYERS]

    def per_layer() -> None:
        for single in singles:
            with single:
                for x in batches_f:
                    single.run(x)[single.layers[0]].cpu()

    scan()  # warm-up (allocator, cudnn autotune)
    bare()
    if args.side:
        fn = {"scan": scan, "bare": bare, "per_layer": per_layer}[args.side]
        c0 = time.process_time()
        runs = [_best_of(fn, 1, device) for _ in range(max(1, args.timed_runs))]
        cpu_timed = (time.process_time() - c0) / len(runs)
        seconds = statistics.median(runs)
        print(json.dumps({"side": args.side, "seconds": round(seconds, 4),
                          "runs_s": [round(r, 4) for r in runs],
                          "cpu_timed_s": round(cpu_timed, 4),
                          "img_s": round(len(arrays) / seconds, 1), "n_images": len(arrays),
                          "device": str(device), "threads": args.threads,
                          "torch": torch.__version__}))
        return
    t_bare, t_scan, t_per = [], [], []
    for _ in range(args.repeats):  # interleaved: each ratio compares neighbouring runs
        t_bare.append(_best_of(bare, 1, device))
        t_scan.append(_best_of(scan, 1, device))
        t_per.append(_best_of(per_layer, 1, device))
    n = len(arrays)
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "n_images": n,
        "batch_size": bs,
        "layers": LAYERS,
        "decoding": "excluded",
        "bare_forward_img_s": round(n / min(t_bare), 1),
        "scan_img_s": round(n / min(t_scan), 1),
        "per_layer_img_s": round(n / min(t_per), 1),
    }
    # Median of per-repeat ratios: robust to other load on a shared machine.
    result["vs_bare_forward"] = round(float(np.median(np.divide(t_bare, t_scan))), 3)
    result["vs_per_layer"] = round(float(np.median(np.divide(t_per, t_scan))), 3)
    if args.stage:
        result["stage_img_s_decoding_included"] = round(_time_stage(model, args, n), 1)
    for key, value in result.items():
        print(f"{key:>32}: {value}")
    print(json.dumps(result))


def _time_stage(model, args, n: int) -> float:
    """Images per second of the full scan stage (decoding and writing included)."""
    from causalvis.config import preset
    from causalvis.pipeline.build import StageContext
    from causalvis.pipeline.scan import run_scan_stage
    from causalvis.store.layout import StudyPaths

    cfg = preset("quick")
    cfg.images.max_images = n
    cfg.scan.layers = list(LAYERS)
    cfg.scan.batch_size = args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(StudyPaths(Path(tmp)), cfg, progress=False)
        ctx.model = model
        t0 = time.perf_counter()
        run_scan_stage(ctx)
        return n / (time.perf_counter() - t0)


if __name__ == "__main__":
    main()
