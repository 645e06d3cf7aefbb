"""Occlusion sweep: our batched, truncated sweep vs the reference code's way.

Ours: every occluded image is built once (vectorized, uint8), run through the network
truncated after the layer, and all channels are read, so K units of one layer cost one
sweep. Reported separately: exact incremental inference (``IncrementalSweep``,
Krypton-style: only the feature-map window a patch can change is recomputed), which the
occlusion stage uses by default where the architecture allows it. Reference (the original study code's way): for each unit separately, build each
occluded image in numpy and run the **full** network on batches of 128, reading one
unit. Both use the same grid, fill (own mean colour) and query image; the script checks
that both give the same maps.

    .venv/bin/python benchmarks/bench_occlusion.py                 # CPU, stride 16
    .venv/bin/python benchmarks/bench_occlusion.py --device cuda --stride 2   # paper grid
    .venv/bin/python benchmarks/bench_occlusion.py --model timm:resnet50 --weights random \
        --layer layer3.2                                          # another architecture

The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from causalvis.images import SampleSource
from causalvis.models import load_model, resolve_layer
from causalvis.models.layers import tap_module
from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep


class PeakRSS:
    """Peak resident memory above the starting level, sampled every 2 ms (CPU runs)."""

    def __init__(self) -> None:
        self._page = os.sysconf("SC_PAGE_SIZE")
        self.peak = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self._page

    def __enter__(self) -> PeakRSS:
        self._base = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss() - self._base)
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def measure(fn: Callable[[], object], device: torch.device) -> tuple[float, float, object]:
    """(seconds, peak MiB, result) of one call; GPU peak = max_memory_allocated."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        return seconds, peak, out
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
    return seconds, mem.peak / 2**20, out


def measure_runs(fn: Callable[[], object], device: torch.device,
                 n: int) -> tuple[list[float], float, object]:
    """``n`` timed calls of ``fn`` in this process: (seconds of each, the largest peak
    MiB, the last result). A side reports their median, so one slow call (a page fault
    storm, a descheduled thread) does not decide a sub-second comparison."""
    runs, peak, out = [], 0.0, None
    for _ in range(max(1, n)):
        seconds, mib, out = measure(fn, device)
        runs.append(seconds)
        peak = max(peak, mib)
    return runs, peak, out


def reference_sweep(model, image: np.ndarray, grid: Grid, layer: str, channel: int,
                    batch_size: int = 128) -> np.ndarray:
    """The reference way: per-image numpy occlusion, full forward, one unit."""
    captured: list[torch.Tensor] = []
    module, how = tap_module(model.net, layer)

    def hook(_m, args, output=None):
        t = args[0] if how == "pre" else output
        captured.append(t[:, channel].float().mean(dim=(1, 2)).cpu())

    handle = (module.register_forward_pre_hook(hook) if how == "pre"
              else module.register_forward_hook(hook))
    p = grid.patch
    out = []
    try:
        positions = grid.positions()
        for start in range(0, len(positions), batch_size):
            batch = []
            for y, x in positions[start : start + batch_size]:
                img = image.copy()
                colour = np.floor(image[y : y + p, x : x + p].reshape(-1, 3).mean(0) + 0.5)
                img[y : y + p, x : x + p] = colour.astype(np.uint8)
                batch.append(img)
            x_t = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)
            with torch.inference_mode():
                model(x_t.to(model.device))
            out.append(captured.pop())
    finally:
        handle.remove()
    return torch.cat(out).numpy().reshape(grid.shape)


def count_macs(model, layer: str | None) -> int:
    """Multiply-accumulates of one image through conv/linear layers: the full network
    (``layer=None``) or the forward truncated after ``layer`` (as our sweep runs it)."""
    from causalvis.models import ActivationProbe

    total = 0

    def hook(mod, args, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            k = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            k = mod.in_features
        total += out[0].numel() * k

    probe = None if layer is None else ActivationProbe(model, [layer])
    net = model if probe is None else probe.model  # the probe's network (BatchNorm folded)
    mods = [m for m in net.net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    handles = [m.register_forward_hook(hook) for m in mods]
    x = torch.rand(1, 3, model.input_size, model.input_size, device=model.device)
    try:
        if probe is None:
            with torch.inference_mode():
                model(x)
        else:
            with probe:
                probe.run(x)
    finally:
        for h in handles:
            h.remove()
    return total


SIDES = ("plain", "incremental", "reference", "truncated")


class CountConvMacs:
    """Multiply-accumulates of every ``F.conv2d`` call inside the block (module convs
    and the incremental engine's window convolutions alike): the work actually done."""

    def __enter__(self) -> CountConvMacs:
        self.macs = 0
        self._orig = torch.nn.functional.conv2d

        def counting(x, w, *a, **kw):
            out = self._orig(x, w, *a, **kw)
            self.macs += out.numel() * w.shape[1] * w.shape[2] * w.shape[3]
            return out

        torch.nn.functional.conv2d = counting
        return self

    def __exit__(self, *exc) -> None:
        torch.nn.functional.conv2d = self._orig


def truncated_forward(model, occ: Occluder, layer: str, batch_size: int):
    """The physical floor of the plain sweep: the truncated forward alone on the same
    batches, already built (channels-last float), with the unoccluded image's pass."""
    from causalvis.models import ActivationProbe

    n = len(occ)
    base = torch.from_numpy(occ.image).permute(2, 0, 1)[None].float().div(255.0)
    batches = [occ.build_float(np.arange(s, min(n, s + batch_size)), model.device)
               for s in range(0, n, batch_size)]

    def run():
        with ActivationProbe(model, [layer]) as probe:
            out = [probe.run(base)[layer]]
            out += [probe.run(b)[layer].float().cpu() for b in batches]
        return out

    return run


def _setup(args: argparse.Namespace):  # noqa: ANN202 - a tuple of the run's inputs
    """Threads, device, the model, the layer, the query image and the occlusion grid."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)  # --weights random: the same net in every process (checksums)
    model = load_model(args.model, weights=args.weights, device=device)
    info = resolve_layer(model, args.layer)
    image = SampleSource(model.input_size, model.crop_pct).load_array(args.image).copy()
    grid = Grid.for_config(model.input_size, args.patch_fraction, args.stride)
    return device, model, info, image, grid


def run_one_side(args: argparse.Namespace) -> None:
    """One side, once, after a warm-up: JSON with ``seconds`` and a checksum of the maps
    of the compared channels (equal across sides within float tolerance)."""
    device, model, info, image, grid = _setup(args)
    k = max(int(x) for x in args.units.split(","))
    channels = [int(c) for c in
                np.random.default_rng(0).choice(info.channels, size=k, replace=False)]
    occ = Occluder(image, grid, fill="mean")
    c0 = 0.0
    if args.side == "reference":
        reference_sweep(model, image, grid, args.layer, channels[0], 8)  # warm-up
        c0 = time.process_time()
        runs, peak, maps = measure_runs(lambda: [reference_sweep(
            model, image, grid, args.layer, c, args.ref_batch_size) for c in channels], device,
            args.timed_runs)
    elif args.side == "truncated":
        fwd = truncated_forward(model, occ, args.layer, args.batch_size)
        fwd()  # warm-up
        c0 = time.process_time()
        runs, peak, _ = measure_runs(fwd, device, args.timed_runs)
        maps = []
    else:
        if args.side == "plain":
            def sweep():
                return occlusion_sweep(model, occ, [args.layer], batch_size=args.batch_size)
        else:
            inc = IncrementalSweep(model, [args.layer])

            def sweep():
                return inc.run(occ, batch_size=args.batch_size)
        sweep()  # warm-up (allocator, kernels)
        c0 = time.process_time()
        runs, peak, result = measure_runs(sweep, device, args.timed_runs)
        maps = [result.unit_map(args.layer, c) for c in channels]
    cpu_timed = (time.process_time() - c0) / len(runs)
    seconds = statistics.median(runs)
    n_pos = len(grid.positions())
    # the conv work actually done per image through the network: the incremental
    # engine's recomputed windows (counted on an untimed run), else the (truncated) net
    passes = (n_pos, k) if args.side == "reference" else (n_pos + 1, 1)
    if args.side == "incremental":
        with CountConvMacs() as counted:
            IncrementalSweep(model, [args.layer]).run(occ, batch_size=args.batch_size)
        macs_per_image = counted.macs / passes[0]
    else:
        macs_per_image = count_macs(model, None if args.side == "reference" else args.layer)
    ms_per_image = 1000 * seconds / (passes[0] * passes[1])
    print(json.dumps({
        "side": args.side, "model": args.model, "layer": args.layer,
        "seconds": round(seconds, 4), "runs_s": [round(r, 4) for r in runs],
        "cpu_timed_s": round(cpu_timed, 4), "peak_mib": round(peak, 1),
        "units": k, "positions": n_pos, "per_image_ms": round(1000 * seconds / n_pos, 3),
        "checksum": float(np.sum([np.asarray(m, dtype=np.float64).sum() for m in maps]))
        if maps else None,
        "device": str(device), "threads": args.threads, "torch": torch.__version__,
        "macs_per_image_m": round(macs_per_image / 1e6, 2),
        "ms_per_gmac": round(ms_per_image / (macs_per_image / 1e9), 3),
        "macs_truncated_m": round(count_macs(model, args.layer) / 1e6, 1),
        "macs_full_m": round(count_macs(model, None) / 1e6, 1),
    }))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="lite0", help="any model name (timm:resnet50, ...)")
    ap.add_argument("--weights", default=None,
                    help="'random' for an architecture without cached weights (timing only)")
    ap.add_argument("--layer", default="blocks.3.2", help="a mid layer (of lite0: blocks.3.2)")
    ap.add_argument("--stride", type=int, default=16, help="paper: 2 (68x68 positions)")
    ap.add_argument("--patch-fraction", type=float, default=0.4)
    ap.add_argument("--units", default="1,9", help="K values")
    ap.add_argument("--batch-size", type=int, default=64, help="our sweep's batch")
    ap.add_argument("--ref-batch-size", type=int, default=128)
    ap.add_argument("--image", default="chelsea/s0.60/r1c1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="our sweep: best of N runs")
    ap.add_argument("--timed-runs", type=int, default=1,
                    help="with --side: timed calls after the warm-up; `seconds` is their "
                    "median, CPU time the mean per call")
    ap.add_argument("--side", choices=SIDES, default=None,
                    help="run one side once (fresh process, for benchmarks/suite.py): "
                    "plain/incremental sweep all channels, reference sweeps max(--units)")
    args = ap.parse_args()
    if args.side:
        return run_one_side(args)

    device, model, info, image, grid = _setup(args)
    ks = [int(k) for k in args.units.split(",")]
    channels = np.random.default_rng(0).choice(info.channels, size=max(ks), replace=False)
    n_pos = len(grid.positions())
    print(f"{args.model} {args.layer} ({info.channels} ch), {n_pos} positions "
          f"(patch {grid.patch}px, stride {args.stride}), device {device}")

    occ = Occluder(image, grid, fill="mean")
    occlusion_sweep(model, occ, [args.layer], batch_size=8)  # warm-up (allocator, kernels)
    runs = [measure(lambda: occlusion_sweep(model, occ, [args.layer],
                                            batch_size=args.batch_size), device)
            for _ in range(max(1, args.repeat))]
    ours_s = min(r[0] for r in runs)  # the plain truncated sweep (engine = "full")
    ours_mb = max(r[1] for r in runs)
    sweep = runs[0][2]
    macs_full, macs_trunc = count_macs(model, None), count_macs(model, args.layer)
    print(f"MACs per image: full {macs_full / 1e6:.0f} M, truncated after {args.layer} "
          f"{macs_trunc / 1e6:.0f} M ({macs_full / macs_trunc:.2f}x fewer)")
    print(f"ours: one sweep, all {info.channels} channels: {ours_s:.2f} s, peak {ours_mb:.0f} MiB")

    try:
        inc = IncrementalSweep(model, [args.layer])
        inc.run(occ, batch_size=8)  # warm-up
        inc_runs = [measure(lambda: inc.run(occ, batch_size=args.batch_size), device)
                    for _ in range(max(1, args.repeat))]
        inc_s = min(r[0] for r in inc_runs)
        inc_mb = max(r[1] for r in inc_runs)
        inc_err = float(np.abs(inc_runs[0][2].acts[args.layer] - sweep.acts[args.layer]).max())
        print(f"incremental (Krypton-style, exact): {inc_s:.2f} s, peak {inc_mb:.0f} MiB, "
              f"{ours_s / inc_s:.2f}x vs our plain sweep, max |diff| {inc_err:.1e}")
    except NotImplementedError as exc:
        inc_s = inc_mb = inc_err = None
        print(f"incremental: not available ({exc})")

    results = {}
    ref_total = 0.0
    ref_peak = 0.0
    max_err = 0.0
    done = 0
    for k in sorted(ks):
        for ch in channels[done:k]:
            s, mb, ref_map = measure(
                lambda ch=ch: reference_sweep(model, image, grid, args.layer, int(ch),
                                              args.ref_batch_size), device)
            ref_total += s
            ref_peak = max(ref_peak, mb)
            err = np.abs(ref_map - sweep.unit_map(args.layer, int(ch))).max()
            max_err = max(max_err, float(err))
        done = k
        results[k] = ref_total
        inc_txt = "" if inc_s is None else f", incremental {ref_total / inc_s:.1f}x"
        print(f"K={k}: reference {ref_total:.2f} s (full forward, one unit at a time) vs ours "
              f"{ours_s:.2f} s -> speedup {ref_total / ours_s:.1f}x{inc_txt}")
    print(f"reference peak {ref_peak:.0f} MiB; max |ours - reference| = {max_err:.2e}")
    summary = {
        "model": args.model, "layer": args.layer, "channels": info.channels,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": args.threads, "stride": args.stride, "patch": grid.patch,
        "positions": n_pos, "ours_sweep_s": round(ours_s, 3),
        "ours_per_image_ms": round(1000 * ours_s / n_pos, 3),
        "ours_peak_mib": round(ours_mb, 1),
        "reference_s": {str(k): round(v, 3) for k, v in results.items()},
        "reference_peak_mib": round(ref_peak, 1),
        "macs_full_m": round(macs_full / 1e6, 1), "macs_truncated_m": round(macs_trunc / 1e6, 1),
        "flops_speedup_vs_reference": {str(k): round(k * macs_full / macs_trunc, 2)
                                       for k in results},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "incremental_sweep_s": None if inc_s is None else round(inc_s, 3),
        "incremental_peak_mib": None if inc_mb is None else round(inc_mb, 1),
        "incremental_gain_vs_ours": None if inc_s is None else round(ours_s / inc_s, 2),
        "incremental_max_abs_diff": inc_err,
        "incremental_speedup_vs_reference": None if inc_s is None else {
            str(k): round(v / inc_s, 2) for k, v in results.items()},
        "speedup_vs_reference": {str(k): round(v / ours_s, 2) for k, v in results.items()},
        "max_abs_diff": max_err,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
