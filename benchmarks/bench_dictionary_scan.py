"""Benchmark: scanning a layer's 4x-overcomplete dictionary features vs the layer itself.

Both sides run the scan stage's per-batch code (:func:`causalvis.pipeline.scan.probe_arrays`:
uint8 -> float, one truncated pass, spatial means, float16 storage) on the same decoded
images: **plain** probes ``blocks.3.2`` of lite0 (80 channels), **dictionary** probes a
random ReLU SAE on it with 320 features (``W_enc`` [80 x 320], applied per batch to the
layer's map, :class:`causalvis.models.dictionary.Dictionary`). Goal: dictionary <= 1.3x the
plain scan's time.

Each side runs in a fresh process, interleaved and counterbalanced (``harness.compare``);
the last line is a JSON object whose ``cost`` is the median of (dictionary seconds /
plain seconds) over neighbouring runs.

    .venv/bin/python benchmarks/bench_dictionary_scan.py --images 32 --pairs 3
    .venv/bin/python benchmarks/bench_dictionary_scan.py --side dictionary   # one side once
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LAYER = "blocks.3.2"
OVERCOMPLETE = 4


def side(args) -> None:
    import numpy as np
    import torch

    from causalvis.images import SampleSource
    from causalvis.models import ActivationProbe, attach_dictionaries, load_model
    from causalvis.models.dictionary import save_sae
    from causalvis.pipeline.scan import probe_arrays

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = load_model("lite0", device=device).to(memory_format=torch.channels_last)
    layers = [LAYER]
    if args.side == "dictionary":
        d_in = 80
        g = torch.Generator().manual_seed(0)
        with tempfile.TemporaryDirectory() as tmp:
            folder = save_sae(Path(tmp) / "sae", LAYER,
                              torch.randn(d_in, OVERCOMPLETE * d_in, generator=g) / d_in ** 0.5,
                              torch.zeros(OVERCOMPLETE * d_in),
                              torch.randn(OVERCOMPLETE * d_in, d_in, generator=g),
                              torch.zeros(d_in))
            attach_dictionaries(model, {"sae": str(folder)})
        layers = ["sae"]
    source = SampleSource(model.input_size, model.crop_pct)
    ids = (source.ids * (args.images // len(source.ids) + 1))[: args.images]
    arrays = [source.load_array(i) for i in ids]
    batches = [arrays[i : i + args.batch_size] for i in range(0, len(arrays), args.batch_size)]
    probe = ActivationProbe(model, layers)

    def scan() -> int:
        n = 0
        with probe:
            for batch in batches:
                out = probe_arrays(probe, batch)
                n += next(iter(out.values())).shape[1]
        return n

    scan()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    c0, t0 = time.process_time(), time.perf_counter()
    features = scan()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    print(json.dumps({"side": args.side, "seconds": round(seconds, 4),
                      "cpu_timed_s": round(time.process_time() - c0, 4),
                      "img_s": round(len(arrays) / seconds, 1), "n_images": len(arrays),
                      "features": features // len(batches), "device": str(device),
                      "threads": args.threads, "np": np.__version__}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", choices=("plain", "dictionary"), default=None,
                        help="time one side once (a fresh process of the comparison)")
    args = parser.parse_args()
    if args.side:
        side(args)
        return
    sys.path.insert(0, str(HERE))
    from harness import Side, compare

    common = [sys.executable, str(Path(__file__).resolve()), "--images", str(args.images),
              "--batch-size", str(args.batch_size), "--device", args.device,
              "--threads", str(args.threads), "--side"]
    result = compare("dictionary_scan", Side("plain", [*common, "plain"]),
                     Side("dictionary", [*common, "dictionary"]), pairs=args.pairs)
    ratios = result["ratio"]  # plain / dictionary seconds per pair
    cost = {k: round(1 / v, 3) for k, v in ratios.items() if isinstance(v, float) and v}
    summary = {"benchmark": "dictionary_scan", "layer": LAYER,
               "features": OVERCOMPLETE * 80, "n_images": args.images, "pairs": args.pairs,
               "device": args.device, "threads": args.threads,
               "plain_s": result["sides"]["plain"]["seconds"],
               "dictionary_s": result["sides"]["dictionary"]["seconds"],
               "cost": cost.get("median"), "cost_range": [cost.get("max"), cost.get("min")],
               "cpu_cost": (round(1 / result["cpu_ratio"]["median"], 3)
                            if result.get("cpu_ratio") else None),
               "goal": "cost <= 1.3", "meets_goal": bool(cost.get("median", 9) <= 1.3)}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
