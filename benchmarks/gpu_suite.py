"""The GPU path in one run: equality with the CPU path, the benchmarks, a small study.

Device time is scarce, so this is one prepared script (tested on CPU with ``--device
cpu --quick``) that, on ``--device cuda``:

1. **checks** that the GPU computes what the CPU computes: scan activations of 32
   embedded images, one occlusion sweep (plain and incremental), and the activation of a
   rendered feature visualization, each within a stated tolerance of the CPU result; and
   that a scan of the same images as JPEGs decoded by nvjpeg on the GPU matches the one
   decoded on the CPU (``scan_gpu_decode_*``);
2. runs the side-by-side **benchmarks** (``suite.py``: fresh processes, interleaved);
3. **builds** a small end-to-end study (quick preset, ``--device cuda``) and times it;

and writes one JSON (``--out``). Every part has its own time budget so that a slow part
cannot eat the others; a part that fails is recorded with its error and the rest go on.

    python benchmarks/gpu_suite.py --device cuda --out gpu.json
    python benchmarks/gpu_suite.py --device cpu --quick --out /tmp/gpu-dry.json   # dry run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _checks(device: str, quick: bool) -> dict:
    """GPU vs CPU on the same inputs; tolerances relative to the CPU result's scale."""
    import numpy as np
    import torch

    from causalvis.images import SampleSource
    from causalvis.models import load_model, probe_tensor
    from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
    from causalvis.stimuli.occlusion_incremental import IncrementalSweep

    layer = "blocks.3.2"
    cpu, dev = load_model("lite0", device="cpu"), load_model("lite0", device=device)
    src = SampleSource(cpu.input_size, cpu.crop_pct)
    ids = src.ids[: 8 if quick else 32]
    arrays = np.stack([src.load_array(i) for i in ids])
    x = torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div(255.0)
    out: dict = {}

    def rel(a, b) -> float:
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))

    a_cpu = probe_tensor(cpu, x, [layer])[layer].numpy()
    a_dev = probe_tensor(dev, x, [layer])[layer].cpu().numpy()
    out["scan_max_rel_diff"] = rel(a_cpu, a_dev)
    grid = Grid.for_config(cpu.input_size, 0.4, 56 if quick else 16)
    occ = Occluder(arrays[0].copy(), grid, fill="mean")
    s_cpu = occlusion_sweep(cpu, occ, [layer], batch_size=16).acts[layer]
    s_dev = occlusion_sweep(dev, occ, [layer], batch_size=16).acts[layer]
    out["occlusion_plain_max_rel_diff"] = rel(s_cpu, s_dev)
    try:
        i_dev = IncrementalSweep(dev, [layer]).run(occ, batch_size=16).acts[layer]
        out["occlusion_incremental_max_rel_diff"] = rel(s_cpu, i_dev)
    except NotImplementedError as exc:
        out["occlusion_incremental_max_rel_diff"] = f"not available: {exc}"
    # Which answer each trial would have: the argmax/argmin positions must agree.
    flat_c, flat_d = s_cpu.reshape(-1, s_cpu.shape[-1]), s_dev.reshape(-1, s_dev.shape[-1])
    out["occlusion_argmax_agree"] = float(np.mean(flat_c.argmax(0) == flat_d.argmax(0)))
    out["occlusion_argmin_agree"] = float(np.mean(flat_c.argmin(0) == flat_d.argmin(0)))
    out.update(_decode_check(dev, src, ids, rel))
    tol = {"scan_max_rel_diff": 1e-2, "occlusion_plain_max_rel_diff": 1e-2,
           "occlusion_incremental_max_rel_diff": 1e-2,
           "scan_gpu_decode_max_rel_diff": 3e-2}  # fmt: skip
    out["tolerance"] = tol
    out["ok"] = all(isinstance(out[k], str) or out[k] <= v for k, v in tol.items()) and \
        out["scan_gpu_decode_same_ids"]
    return out


def _decode_check(dev, src, ids, rel) -> dict:
    """The scan of a JPEG folder with nvjpeg decoding (``decode="gpu"``, what a CUDA scan
    picks) vs the CPU (libjpeg + PIL) decode, same device and probe: nvjpeg's IDCT and
    torch's resize differ from PIL's by a few pixel levels, so a small, stated tolerance.
    On a CPU device both sides take the CPU path (``gpu_decode`` says which ran)."""
    import numpy as np

    from causalvis.images import FolderSource
    from causalvis.images.gpu_decode import gpu_decode_reason
    from causalvis.models import ActivationProbe, resolve_layer
    from causalvis.pipeline.scan import _scan_shard

    layer = "blocks.3.2"
    with tempfile.TemporaryDirectory() as tmp:
        for k, image_id in enumerate(ids):  # 288 px JPEGs: the resize path runs too
            src.load(image_id).resize((288, 288)).save(Path(tmp) / f"{k:03d}.jpg", quality=90)
        folder = FolderSource(tmp, dev.input_size, dev.crop_pct)
        channels = {layer: resolve_layer(dev, layer).channels}
        runs = {}
        with ActivationProbe(dev, [layer]) as probe:
            for decode in ("cpu", "gpu"):
                t0 = time.perf_counter()
                result = _scan_shard(probe, folder, folder.ids, batch_size=16, workers=2,
                                     channels=channels, dtype="float32", decode=decode)
                runs[decode] = (result, time.perf_counter() - t0)
        reason = gpu_decode_reason(folder, dev.device, folder.ids, "gpu")
    a, b = runs["cpu"][0].acts[layer], runs["gpu"][0].acts[layer]
    return {"gpu_decode": reason or "nvjpeg",
            "scan_gpu_decode_max_rel_diff": rel(a, b),
            "scan_gpu_decode_mean_rel_diff": float(np.abs(a - b).mean() / np.abs(a).max()),
            "scan_gpu_decode_same_ids": runs["cpu"][0].ids == runs["gpu"][0].ids,
            "scan_decode_seconds": {k: round(v[1], 3) for k, v in runs.items()}}


def _run(cmd: list[str], timeout_s: float) -> tuple[float, str]:
    """Run ``cmd`` in its own process group; past ``timeout_s`` the whole group is killed
    (suite.py's benchmark children too, so they cannot slow the next part down)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    if proc.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-8:])
        raise RuntimeError(f"{' '.join(cmd[:4])}…: exit {proc.returncode}\n{tail}")
    return time.perf_counter() - t0, stdout


def _benchmarks(device: str, quick: bool, pairs: int, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(HERE / "suite.py"), "--device", device, "--pairs",
               str(pairs), "--out", tmp] + (["--quick"] if quick else [])  # fmt: skip
        peers = HERE.parent / ".bench-peers"
        if peers.is_dir():
            cmd += ["--peers", str(peers)]
        t0, timed_out = time.perf_counter(), None
        try:
            _run(cmd, timeout_s)
        except subprocess.TimeoutExpired as exc:  # keep the comparisons that finished
            timed_out = f"suite.py stopped after its {exc.timeout:.0f} s budget"
        seconds = time.perf_counter() - t0
        results = {p.stem: json.loads(p.read_text()) for p in Path(tmp).glob("*.json")}
        table_file = Path(tmp) / "results.md"
        table = table_file.read_text() if table_file.is_file() else ""
    if timed_out and not results:
        raise RuntimeError(f"{timed_out}; no comparison finished")
    out = {"seconds": round(seconds, 1), "results": results, "table": table}
    return out | ({"timed_out": timed_out} if timed_out else {})


def _study(device: str, timeout_s: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "gpu-study"
        cli = [sys.executable, "-m", "causalvis"]
        _run([*cli, "init", str(study), "--preset", "quick"], 120)
        seconds, _ = _run([*cli, "build", str(study), "--device", device, "--quiet"],
                          timeout_s)
        trials = (study / "trials.csv").read_text().count("\n") - 1
    return {"build_seconds": round(seconds, 1), "served_trials": trials}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny sizes (a dry run on CPU)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--skip", action="append", default=[],
                    choices=("checks", "benchmarks", "study"))
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="time for benchmarks + study together (checks are short)")
    ap.add_argument("--out", type=Path, default=Path("gpu_suite.json"))
    args = ap.parse_args(argv)
    import torch

    report: dict = {"device": args.device, "quick": args.quick, "torch": torch.__version__,
                    "cuda": torch.version.cuda,
                    "device_name": torch.cuda.get_device_name() if args.device == "cuda"
                    and torch.cuda.is_available() else "cpu"}  # fmt: skip
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    parts = {
        "checks": lambda: _checks(args.device, args.quick),
        "benchmarks": lambda: _benchmarks(args.device, args.quick, args.pairs,
                                          args.budget_s * 0.6),
        "study": lambda: _study(args.device, args.budget_s * 0.4),
    }
    ok = True
    for name, part in parts.items():
        if name in args.skip:
            continue
        t0 = time.perf_counter()
        try:
            report[name] = part()
        except Exception as exc:  # noqa: BLE001 - one part failing must not lose the rest
            ok = False
            report[name] = {"error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=3)}
        report[f"{name}_wall_s"] = round(time.perf_counter() - t0, 1)
        args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every part
        print(f"{name}: done in {report[f'{name}_wall_s']} s", flush=True)
        if isinstance(report.get(name), dict) and report[name].get("timed_out"):
            kept = len(report[name].get("results", {}))
            print(f"{name}: {report[name]['timed_out']}; {kept} comparisons kept", flush=True)
    if "checks" in report and isinstance(report["checks"], dict):
        ok = ok and report["checks"].get("ok", False)
    if "benchmarks" in report and "table" in report["benchmarks"]:
        print(report["benchmarks"]["table"])
    print(json.dumps({"out": str(args.out), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
