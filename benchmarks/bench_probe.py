"""Probe throughput: ActivationProbe on 5 layers of lite0 vs the bare model forward.

The probe stops after the deepest requested layer, so with the default layers (which end
at blocks.5.3) it should be at least as fast as the bare forward on the same batch;
``--layers`` lets you probe up to the last block to see the pure hook overhead.

    python benchmarks/bench_probe.py [--batch 32] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import best_of, emit  # noqa: E402
from causalvis.malloc import heap_allocations
from causalvis.models import ActivationProbe, load_model  # noqa: E402
from causalvis.models.fold import inference_model  # noqa: E402

DEFAULT_LAYERS = ["blocks.1.1", "blocks.2.1", "blocks.3.2", "blocks.4.2", "blocks.5.3"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--layers", nargs="+", default=DEFAULT_LAYERS)
    args = parser.parse_args()

    model = load_model("lite0", device=args.device)
    x = torch.rand(args.batch, 3, 224, 224, device=args.device)

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    # the network the probe runs (BatchNorm folded unless CAUSALVIS_FOLD_NORMS=0) on the
    # probe's allocator (heap), so only the probe's overhead differs
    net = inference_model(model)

    def bare() -> None:
        with torch.inference_mode(), heap_allocations(not args.device.startswith("cuda")):
            net(x)
        sync()

    results = {}
    for channels_last in (False, True):
        with ActivationProbe(model, args.layers, channels_last=channels_last) as probe:

            def probed(p=probe) -> None:
                p(x)
                sync()

            t_probe = best_of(probed, args.repeats)
        t_bare = best_of(bare, args.repeats)  # same memory format as the probe left it
        key = "channels_last" if channels_last else "contiguous"
        results[key] = {"probe_s": t_probe, "bare_s": t_bare}
        model.to(memory_format=torch.contiguous_format)

    # Untruncated probe: all five layers but the network runs to the end (hook overhead).
    with ActivationProbe(model, args.layers, truncate=False) as probe:
        t_full = best_of(lambda: (probe(x), sync()), args.repeats)
    base = results["contiguous"]
    print(f"batch {args.batch} on {args.device}, layers {args.layers}")
    for key, r in results.items():
        print(
            f"{key:>14}: probe {r['probe_s'] * 1e3:7.1f} ms  bare forward {r['bare_s'] * 1e3:7.1f} ms"
            f"  -> {args.batch / r['probe_s']:7.1f} img/s"
        )
    print(f"untruncated probe: {t_full * 1e3:7.1f} ms (hook overhead only)")
    emit(
        {
            "bench": "probe",
            "device": args.device,
            "batch": args.batch,
            "images_per_s": args.batch / base["probe_s"],
            "vs_bare_forward": base["bare_s"] / base["probe_s"],
            "untruncated_vs_bare_forward": base["bare_s"] / t_full,
            "channels_last_vs_contiguous": base["probe_s"] / results["channels_last"]["probe_s"],
        }
    )


if __name__ == "__main__":
    main()
