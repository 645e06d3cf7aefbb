"""Every side-by-side benchmark, each side in fresh processes, interleaved: ``make bench``.

Writes one JSON per comparison and ``results.md`` (a table of median ratios with their
min-max spread, CPU-time ratios and the load) into ``--out``. The comparison peers that
are not dependencies of causalvis (Lucent) live in their own folder (``--peers``, made by
``make bench``) that only the peer's side sees on its ``PYTHONPATH``.

    .venv/bin/python benchmarks/suite.py                       # all, 5 pairs each
    .venv/bin/python benchmarks/suite.py --only occlusion_k1 --pairs 7
    .venv/bin/python benchmarks/suite.py --quick               # tiny sizes: a smoke run
    .venv/bin/python benchmarks/suite.py --device cuda         # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Side, compare, write_results  # noqa: E402

PY = sys.executable


def _script(name: str, *args: str) -> list[str]:
    return [PY, str(HERE / name), *args]


def comparisons(device: str, threads: int, quick: bool, peers: Path | None) -> dict:
    """name -> (baseline, candidate, what the ratio means). Ratio > 1: candidate faster."""
    common = ["--device", device, "--threads", str(threads)]
    stride = ["--stride", "56" if quick else "16"]
    layer_units = "4" if quick else "40"  # blocks.3.2 of lite0 has 80 channels
    fv = ["--units", "2" if quick else "8", "--steps", "4" if quick else "64",
          "--size", "64" if quick else "128"]  # fmt: skip
    scan = ["--images", "16" if quick else "96", "--batch-size", "8" if quick else "32"]
    peer_env = {"PYTHONPATH": str(peers)} if peers else {}

    def occ(side: str, units: str) -> Side:
        return Side(side, _script("bench_occlusion.py", *common, *stride, "--side", side,
                                  "--units", units))  # fmt: skip

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
        "featurevis_vs_lucent": (
            Side("lucent", _script("bench_featurevis.py", *common, *fv, "--side", "lucent"),
                 peer_env),
            Side("ours", _script("bench_featurevis.py", *common, *fv, "--side", "ours")),
            "our batched renderer vs Lucent render_vis per unit, same steps"),
        "scan_vs_bare_forward": (
            Side("bare", _script("bench_scan.py", *common, *scan, "--side", "bare")),
            Side("scan", _script("bench_scan.py", *common, *scan, "--side", "scan")),
            "scan (5 layers, truncated, float16 storage) vs a bare forward (> 0.95 goal)"),
        "dictionary_scan": (
            Side("plain", _script("bench_dictionary_scan.py", *common, *scan, "--side",
                                  "plain")),
            Side("dictionary", _script("bench_dictionary_scan.py", *common, *scan, "--side",
                                       "dictionary")),
            "scan through a 4x-overcomplete SAE vs the plain scan of its layer (goal: ratio "
            ">= 1/1.3, i.e. <= 1.3x the time)"),
        "scan_vs_per_layer": (
            Side("per_layer", _script("bench_scan.py", *common, *scan, "--side", "per_layer")),
            Side("scan", _script("bench_scan.py", *common, *scan, "--side", "scan")),
            "scan vs one full forward per layer (the reference code's way)"),
    }


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
    args = ap.parse_args(argv)
    table = comparisons(args.device, args.threads, args.quick, args.peers)
    unknown = [n for n in args.only if n not in table]
    if unknown:
        print(f"error: unknown comparison {', '.join(unknown)} (known: {', '.join(table)})",
              file=sys.stderr)
        return 2
    results = []
    for name, (base, cand, meaning) in table.items():
        if args.only and name not in args.only:
            continue
        if name.startswith("featurevis") and args.peers is None:
            print(f"{name}: skipped (needs --peers with torch-lucent; `make bench` makes it)")
            continue
        print(f"{name}: {meaning}")
        result = compare(name, base, cand, pairs=args.pairs)
        result["meaning"] = meaning
        result["quick"] = args.quick
        results.append(result)
        r = result["ratio"]
        print(f"{name}: {r['median']:.2f}x (min {r['min']:.2f}, max {r['max']:.2f}), "
              f"spread {result['ratio_spread']:.0%}")
    if not results:
        return 1
    path = write_results(results, args.out)
    print(path.read_text())
    print(json.dumps({"written": str(path), "n": len(results)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
