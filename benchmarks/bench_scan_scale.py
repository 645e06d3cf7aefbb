"""Benchmark: the scan of a large synthetic JPEG folder vs decode + a bare forward.

Generates once (cached under ``--folder``) N small JPEGs with varied content,
deterministic from ``--seed``, then times **one side per process** (``benchmarks/suite.py``
comparison ``scan_scale_vs_bare`` runs them interleaved in fresh processes):

* ``--side scan``: the scan stage's own functions on the folder as an image source
  (:class:`~causalvis.images.FolderSource` decode + resize/crop in its prefetch threads,
  :func:`causalvis.pipeline.scan._scan_shard` probing with the truncated
  :class:`ActivationProbe`, every shard written with float16 storage by
  :func:`causalvis.store.activations.write_shard`);
* ``--side bare``: the same decode + preprocessing functions in a plain thread pool (one
  batch decoded ahead), then the network's prefix up to ``--layer`` as a plain
  ``nn.Sequential`` (no hooks, no means, nothing stored), same batch size / threads.

So ``bare seconds / scan seconds`` is the scan's overhead, decoding included (goal
>= 0.95). Reports images/s, the timed seconds, its CPU seconds, peak RSS sampled every
50 ms during the timed section and RSS when 10 %, 50 % and 90 % of the images are done
(constant memory = these are flat), load average, versions; one JSON on the last line.

    PYTHONPATH=src python benchmarks/bench_scan_scale.py --side scan          # 50,000 images
    PYTHONPATH=src python benchmarks/bench_scan_scale.py --generate-only --images 2000
    PYTHONPATH=src python benchmarks/suite.py --only scan_scale_vs_bare --scale-images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import emit  # noqa: E402

DEFAULT_FOLDER = Path(tempfile.gettempdir()) / "causalvis-scan-scale"
PER_DIR = 1000  # files per subfolder (keeps directories small)
MARKER = "complete.json"


# -- the synthetic folder ---------------------------------------------------------------

def _chunk_images(seed: int, chunk: int, count: int, size: int) -> np.ndarray:
    """``count`` varied uint8 images ``[count, size, size, 3]`` (a smooth random colour
    field, a flat rectangle and oriented stripes), deterministic from ``(seed, chunk)``
    whatever the thread that draws them; drawn for the whole chunk at once (fast)."""
    rng = np.random.default_rng([seed, chunk])
    coarse = rng.uniform(0, 255, (count, 4, 4, 3)).astype(np.float32)
    up = np.clip(np.linspace(0, 3, size, dtype=np.float32)[:, None]
                 - np.arange(4, dtype=np.float32)[None], -1, 1)
    up = 1 - np.abs(up)  # [size, 4] bilinear weights
    img = np.einsum("yi,nijc,xj->nyxc", up, coarse, up, optimize=True)
    freq, angle = rng.uniform(0.05, 0.5, count), rng.uniform(0, np.pi, count)
    pos = np.arange(size, dtype=np.float32)
    u = (freq * np.cos(angle))[:, None] * pos  # [count, size] along x
    v = (freq * np.sin(angle))[:, None] * pos  # along y
    stripes = (np.einsum("ny,nx->nyx", np.cos(v), np.sin(u))
               + np.einsum("ny,nx->nyx", np.sin(v), np.cos(u))) * 40  # sin(u + v)
    img += stripes[..., None]
    corner = rng.integers(0, size // 2, (count, 2))
    extent = rng.integers(size // 8, size // 2, (count, 2))
    colour = rng.integers(0, 256, (count, 3))
    for k in range(count):
        (x0, y0), (w, h) = corner[k], extent[k]
        img[k, y0 : y0 + h, x0 : x0 + w] = colour[k]
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_folder(root: Path, n: int, size: int = 96, seed: int = 0,
                    quality: int = 90, threads: int = 4) -> dict:  # fmt: skip
    """Write ``n`` JPEGs under ``root/dNNN/NNNNNNN.jpg`` once; a marker records what was
    written, so a second call with the same arguments returns at once."""
    from PIL import Image

    marker = root / MARKER
    spec = {"n": n, "size": size, "seed": seed, "quality": quality}
    if marker.is_file() and json.loads(marker.read_text()).get("spec") == spec:
        return {**json.loads(marker.read_text()), "cached": True}
    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)

    def chunk(k: int) -> int:
        start = k * PER_DIR
        count = min(PER_DIR, n - start)
        folder = root / f"d{k:03d}"
        folder.mkdir(exist_ok=True)
        arrays = np.concatenate([_chunk_images(seed, k * 1000 + s, min(100, count - s), size)
                                 for s in range(0, count, 100)])  # cache-sized draws
        for j, arr in enumerate(arrays):
            Image.fromarray(arr, mode="RGB").save(folder / f"{start + j:07d}.jpg", quality=quality)
        return count

    with ThreadPoolExecutor(threads) as pool:
        written = sum(pool.map(chunk, range((n + PER_DIR - 1) // PER_DIR)))
    info = {"spec": spec, "written": written, "seconds": round(time.perf_counter() - t0, 2),
            "bytes": sum(p.stat().st_size for p in root.glob("d*/*.jpg"))}
    marker.write_text(json.dumps(info))
    return {**info, "cached": False}


# -- memory ----------------------------------------------------------------------------

def rss_mib() -> float:
    """This process's resident set now (VmRSS), MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Memory:
    """RSS sampled every 50 ms (peak) and at 10 / 50 / 90 % of the images (flatness)."""

    MARKS = (0.1, 0.5, 0.9)

    def __init__(self, total: int) -> None:
        self.total, self.done, self.peak = total, 0, rss_mib()
        self.at: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Memory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mib())

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_mib())

    def update(self, n: int) -> None:  # the scan's progress-bar protocol
        before, self.done = self.done, self.done + n
        for mark in self.MARKS:
            if before < mark * self.total <= self.done:
                self.at[f"{round(mark * 100)}%"] = round(rss_mib(), 1)

    def report(self) -> dict:
        vals = list(self.at.values())
        # the marks' readings count too: one can fall between two of the sampler's
        peak = max([round(self.peak, 1), *vals])
        return {"peak_rss_sampled_mib": peak, "rss_at_mib": self.at,
                "rss_growth_10_to_90_mib": round(vals[-1] - vals[0], 1) if vals else None}


# -- the two sides ---------------------------------------------------------------------

def truncated_net(model, layer: str):
    """The network's prefix up to ``layer`` (``blocks.I.J`` of a timm EfficientNet) as a
    plain ``nn.Sequential``: the bare forward, no hooks; of the network the probe runs
    (BatchNorm folded unless ``CAUSALVIS_FOLD_NORMS=0``)."""
    import torch.nn as nn

    from causalvis.models.fold import inference_model

    net = inference_model(model).net
    parts = layer.split(".")
    if len(parts) != 3 or parts[0] != "blocks" or not hasattr(net, "conv_stem"):
        raise SystemExit(f"--layer must be blocks.I.J of an EfficientNet, not {layer!r}")
    i, j = int(parts[1]), int(parts[2])
    return nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:i], *net.blocks[i][: j + 1])


def run_scan(model, source, ids, args, memory: Memory) -> dict:
    from causalvis.models import ActivationProbe, resolve_layer
    from causalvis.pipeline.scan import _scan_shard, shard_name
    from causalvis.store.activations import write_shard
    from causalvis.store.layout import StudyPaths

    channels = {args.layer: resolve_layer(model, args.layer).channels}
    n_images = n_skipped = 0
    with tempfile.TemporaryDirectory(dir=args.study_dir) as tmp, \
            ActivationProbe(model, [args.layer]) as probe:
        paths = StudyPaths(Path(tmp))
        for k, start in enumerate(range(0, len(ids), args.shard_size)):
            result = _scan_shard(probe, source, ids[start : start + args.shard_size],
                                 batch_size=args.batch_size, workers=args.workers,
                                 channels=channels, bar=memory, decode=args.decode)
            write_shard(paths, shard_name(k), result.ids, result.acts, result.skipped)
            n_images += len(result.ids)
            n_skipped += len(result.skipped)
    return {"n_scanned": n_images, "n_skipped": n_skipped}


def run_bare(model, source, ids, args, memory: Memory) -> dict:
    import torch

    from causalvis.images.preprocess import load_image_file, prepare_image
    from causalvis.malloc import heap_allocations

    prefix = truncated_net(model, args.layer)
    device = model.device
    mean, std = model.mean, model.std
    size, crop = model.input_size, model.crop_pct

    def decode(image_id: str) -> np.ndarray:
        img = prepare_image(load_image_file(source.path(image_id)), size, crop)
        return np.asarray(img, dtype=np.uint8)

    bs = args.batch_size
    batches = [ids[s : s + bs] for s in range(0, len(ids), bs)]
    # the same allocator as the probe's forward (heap, no fresh mmap pages per batch), so
    # the ratio measures the scan's overhead, not malloc
    with ThreadPoolExecutor(args.workers) as pool, torch.inference_mode(), \
            heap_allocations(device.type == "cpu"):
        ahead = [pool.submit(decode, i) for i in batches[0]]
        for k in range(len(batches)):
            current = ahead
            if k + 1 < len(batches):
                ahead = [pool.submit(decode, i) for i in batches[k + 1]]
            u8 = torch.from_numpy(np.stack([f.result() for f in current]))
            if device.type == "cuda":
                u8 = u8.pin_memory().to(device, non_blocking=True)
            x = u8.permute(0, 3, 1, 2).float().div_(255.0)
            x = x.contiguous(memory_format=torch.channels_last)
            prefix((x - mean) / std)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            memory.update(len(current))
    return {"n_scanned": len(ids), "n_skipped": 0}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=50_000)
    ap.add_argument("--folder", type=Path, default=None,
                    help=f"where the JPEGs are cached (default {DEFAULT_FOLDER}/n<N>-s<size>)")
    ap.add_argument("--size", type=int, default=96, help="side of the generated JPEGs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", choices=("scan", "bare"), default=None)
    ap.add_argument("--generate-only", action="store_true")
    ap.add_argument("--layer", default="blocks.1.1")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--shard-size", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--decode", choices=("auto", "cpu", "gpu"), default="auto",
                    help="scan side: JPEG decoding (auto = on the GPU for CUDA + JPEGs)")
    ap.add_argument("--study-dir", default=None, help="where the scan writes its shards")
    args = ap.parse_args(argv)
    folder = args.folder or DEFAULT_FOLDER / f"n{args.images}-s{args.size}-seed{args.seed}"
    gen = generate_folder(folder, args.images, args.size, args.seed)
    if args.generate_only or args.side is None:
        emit({"seconds": gen["seconds"], "generated": gen, "folder": str(folder)})
        return 0

    import PIL
    import torch

    torch.set_num_threads(args.threads)
    from causalvis.images import FolderSource
    from causalvis.models import load_model

    device = torch.device(args.device)
    model = load_model("lite0", device=device).to(memory_format=torch.channels_last)
    source = FolderSource(folder, model.input_size, model.crop_pct)
    ids = source.ids[: args.images]
    # warm-up (allocator, oneDNN / cudnn kernels) on a few images, untimed
    warm = Memory(1)
    (run_scan if args.side == "scan" else run_bare)(model, source, ids[: args.batch_size],
                                                    args, warm)
    source.skipped.clear()
    rss_start = rss_mib()
    memory = Memory(len(ids))
    load_before = os.getloadavg()[0]
    with memory:
        c0, t0 = time.process_time(), time.perf_counter()
        counts = (run_scan if args.side == "scan" else run_bare)(model, source, ids, args,
                                                                 memory)
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    emit({
        "side": args.side, "seconds": round(seconds, 3), "cpu_timed_s": round(cpu, 3),
        "img_s": round(len(ids) / seconds, 1), "n_images": len(ids), **counts,
        "layer": args.layer, "batch_size": args.batch_size, "workers": args.workers,
        "threads": args.threads, "device": str(device), "decode": args.decode,
        "image_px": args.size, "rss_start_mib": round(rss_start, 1), **memory.report(),
        "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
        "generated": gen, "versions": {"python": platform.python_version(),
                                       "torch": torch.__version__, "pillow": PIL.__version__},
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
