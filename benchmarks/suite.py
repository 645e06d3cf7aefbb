"""Every side-by-side benchmark, each side in fresh processes, interleaved: ``make bench``.

Writes one JSON per comparison and ``results.md`` (a table of median ratios with their
min-max spread, CPU-time ratios and the load) into ``--out``. The comparison peers that
are not dependencies of causalvis (Lucent) live in their own folder (``--peers``, made by
``make bench``) that only the peer's side sees on its ``PYTHONPATH``.

    .venv/bin/python benchmarks/suite.py                       # all, 5 pairs each
    .venv/bin/python benchmarks/suite.py --only occlusion_k1 --pairs 7
    .venv/bin/python benchmarks/suite.py --only scan_scale_vs_bare --scale-images 50000 --pairs 3
    .venv/bin/python benchmarks/suite.py --quick               # tiny sizes: a smoke run
    .venv/bin/python benchmarks/suite.py --device cuda         # on a GPU machine
    .venv/bin/python benchmarks/suite.py --only occlusion_plain_vs_incremental \
        --occlusion-model timm:resnet50 --occlusion-weights random --occlusion-layer layer2.3
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Side, compare, write_results  # noqa: E402

PY = sys.executable


def _script(name: str, *args: str) -> list[str]:
    return [PY, str(HERE / name), *args]


def comparisons(device: str, threads: int, quick: bool, peers: Path | None,
                stride_px: int | None = None, fv_steps: int | None = None,
                occ_model: list[str] | None = None,
                scale_images: int | None = None,
                timed_runs: int | None = None) -> dict:  # fmt: skip
    """name -> (baseline, candidate, what the ratio means). Ratio > 1: candidate faster."""
    common = ["--device", device, "--threads", str(threads)]
    stride = ["--stride", str(stride_px or (56 if quick else 16))]
    layer_units = "4" if quick else "40"  # blocks.3.2 of lite0 has 80 channels
    fv = ["--units", "2" if quick else "8", "--steps", str(fv_steps or (4 if quick else 64)),
          "--size", "64" if quick else "128"]  # fmt: skip
    # sides of about a second: several timed calls per process, their median
    runs = ["--timed-runs", str(timed_runs or (1 if quick else 5))]
    scan = ["--images", "16" if quick else "96", "--batch-size", "8" if quick else "32"]
    # the script's own default is 50,000 images; the suite's keeps `make bench` bearable
    scale = ["--images", str(scale_images or (64 if quick else 1000)),
             "--batch-size", "16" if quick else "64"]
    # the peers folder goes in front of (not instead of) the caller's PYTHONPATH, so the
    # peer's side imports the same causalvis as ours (a worktree's src, say)
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    peer_env = {"PYTHONPATH": os.pathsep.join([str(peers), *inherited])} if peers else {}

    def occ(side: str, units: str) -> Side:
        # the reference side over a whole layer runs minutes: one timed call
        short = runs if side != "reference" or units == "1" else []
        return Side(side, _script("bench_occlusion.py", *common, *stride, *(occ_model or []),
                                  "--side", side, "--units", units, *short))  # fmt: skip

    return {
        "occlusion_k1": (occ("reference", "1"), occ("plain", "1"),
                         "plain truncated sweep vs the reference (full forward, one unit)"),
        "occlusion_incremental_k1": (occ("reference", "1"), occ("incremental", "1"),
                                     "incremental engine vs the reference, one unit"),
        "occlusion_incremental_layer": (
            occ("reference", layer_units), occ("incremental", layer_units),
            f"incremental engine vs the reference, {layer_units} channels of one layer"),
        "occlusion_plain_vs_incremental": (occ("plain", "1"), occ("incremental", "1"),
                                           "incremental vs plain sweep (same work)"),
        "occlusion_plain_vs_truncated": (
            occ("plain", "1"), occ("truncated", "1"),
            "cost of the plain sweep per occluded image / the truncated forward alone on "
            "the same, prebuilt batches (the physical floor; goal <= 1.05)"),
        "occlusion_incremental_vs_truncated": (
            occ("incremental", "1"), occ("truncated", "1"),
            "incremental engine / truncated forward; per_mac_cost_ratio = the incremental "
            "engine's time per multiply-accumulate it recomputes / the forward's"),
        "featurevis_vs_lucent": (
            Side("lucent", _script("bench_featurevis.py", *common, *fv, "--side", "lucent"),
                 peer_env),
            Side("ours", _script("bench_featurevis.py", *common, *fv, "--side", "ours")),
            "our batched renderer vs Lucent render_vis per unit, same steps"),
        "featurevis_step_vs_floor": (
            Side("ours", _script("bench_featurevis.py", *common, *fv, "--side", "ours")),
            Side("floor", _script("bench_featurevis.py", *common, *fv, "--side", "floor")),
            "cost of one render step / one forward+backward of the truncated network on "
            "the same batch (the physical floor; goal <= 1.25)"),
        "scan_vs_bare_forward": (
            Side("bare", _script("bench_scan.py", *common, *scan, *runs, "--side", "bare")),
            Side("scan", _script("bench_scan.py", *common, *scan, *runs, "--side", "scan")),
            "scan (5 layers, truncated, float16 storage) vs a bare forward (> 0.95 goal)"),
        "scan_scale_vs_bare": (
            Side("bare", _script("bench_scan_scale.py", *common, *scale, "--side", "bare")),
            Side("scan", _script("bench_scan_scale.py", *common, *scale, "--side", "scan")),
            "scan of a synthetic JPEG folder (decode, probe, float16 shards on disk) vs decode "
            "+ the bare truncated forward (goal >= 0.95; RSS at 10/50/90 % flat)"),
        "dictionary_scan": (
            Side("plain", _script("bench_dictionary_scan.py", *common, *scan, "--side",
                                  "plain")),
            Side("dictionary", _script("bench_dictionary_scan.py", *common, *scan, "--side",
                                       "dictionary")),
            "scan through a 4x-overcomplete SAE vs the plain scan of its layer (goal: ratio "
            ">= 1/1.3, i.e. <= 1.3x the time)"),
        "scan_folded_vs_unfolded": (
            Side("unfolded", _script("bench_scan.py", *common, *scan, *runs, "--side", "scan"),
                 {"CAUSALVIS_FOLD_NORMS": "0"}),
            Side("folded", _script("bench_scan.py", *common, *scan, *runs, "--side", "scan")),
            "scan through the BatchNorm-folded copy (the default) vs the model as loaded "
            "(CAUSALVIS_FOLD_NORMS=0)"),
        "occlusion_folded_vs_unfolded": (
            Side("unfolded", occ("plain", "1").argv, {"CAUSALVIS_FOLD_NORMS": "0"}),
            Side("folded", occ("plain", "1").argv),
            "plain occlusion sweep, folded copy (the default) vs the model as loaded"),
        "scan_vs_per_layer": (
            Side("per_layer", _script("bench_scan.py", *common, *scan, *runs, "--side", "per_layer")),
            Side("scan", _script("bench_scan.py", *common, *scan, *runs, "--side", "scan")),
            "scan vs one full forward per layer (the reference code's way)"),
    }


def _per_mac(result: dict) -> None:
    """When both sides report the conv work they do per image (``macs_per_image_m``):
    the cost per multiply-accumulate of the baseline relative to the candidate's (the
    median time ratio scaled by the work ratio)."""
    base = result["sides"][result["baseline"]]["last"].get("macs_per_image_m")
    cand = result["sides"][result["candidate"]]["last"].get("macs_per_image_m")
    if base and cand:
        r = result["ratio"]
        result["per_mac_cost_ratio"] = {k: round(r[k] * cand / base, 3)
                                        for k in ("median", "min", "max")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")
    ap.add_argument("--only", action="append", default=[], help="run just this comparison")
    ap.add_argument("--peers", type=Path, default=None,
                    help="folder with the comparison peers (torch-lucent); without it, "
                    "comparisons that need one are skipped")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--stride", type=int, default=None,
                    help="occlusion grid stride (default 16, quick 56; 28 = 36 positions)")
    ap.add_argument("--fv-steps", type=int, default=None,
                    help="feature-visualization steps (default 64, quick 4)")
    ap.add_argument("--occlusion-model", default=None,
                    help="the occlusion benchmarks' model (default lite0), e.g. timm:resnet50")
    ap.add_argument("--occlusion-weights", default=None,
                    help="'random' for a model without cached weights (timing only)")
    ap.add_argument("--occlusion-layer", default=None, help="with --occlusion-model")
    ap.add_argument("--scale-images", type=int, default=None,
                    help="images of scan_scale_vs_bare (default 1000, quick 64; the lead's "
                    "figure: 50000)")
    ap.add_argument("--timed-runs", type=int, default=None,
                    help="timed calls per process of the occlusion and scan sides (their "
                    "median is the side's figure; default 5, quick 1)")
    args = ap.parse_args(argv)
    occ_model = [*(["--model", args.occlusion_model] if args.occlusion_model else []),
                 *(["--weights", args.occlusion_weights] if args.occlusion_weights else []),
                 *(["--layer", args.occlusion_layer] if args.occlusion_layer else [])]
    table = comparisons(args.device, args.threads, args.quick, args.peers, args.stride,
                        args.fv_steps, occ_model, args.scale_images, args.timed_runs)
    unknown = [n for n in args.only if n not in table]
    if unknown:
        print(f"error: unknown comparison {', '.join(unknown)} (known: {', '.join(table)})",
              file=sys.stderr)
        return 2
    results = []
    for name, (base, cand, meaning) in table.items():
        if args.only and name not in args.only:
            continue
        if name == "featurevis_vs_lucent" and args.peers is None:
            print(f"{name}: skipped (needs --peers with torch-lucent; `make bench` makes it)")
            continue
        print(f"{name}: {meaning}")
        result = compare(name, base, cand, pairs=args.pairs)
        result["meaning"] = meaning
        _per_mac(result)
        result["quick"] = args.quick
        results.append(result)
        write_results(results, args.out)  # after each: a run stopped early keeps the rest
        r = result["ratio"]
        print(f"{name}: {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f}), "
              f"spread {result['ratio_spread']:.0%}")
        if "per_mac_cost_ratio" in result:
            m = result["per_mac_cost_ratio"]
            print(f"{name}: per-MAC cost {m['median']:.2f}x (min {m['min']:.2f}, "
                  f"max {m['max']:.2f})")
    if not results:
        return 1
    path = write_results(results, args.out)
    print(path.read_text())
    print(json.dumps({"written": str(path), "n": len(results)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
