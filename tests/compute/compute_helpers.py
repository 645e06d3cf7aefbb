"""Small but real item functions for the executor tests (importable by any worker).

Every function gets its randomness from the item (``ctx.rng()``) or from the globals the
worker seeds from the item name, so outputs must be byte-identical on every executor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from causalvis.compute import ItemContext, WorkItem
from causalvis.pipeline.items import cached_model, model_loads

HERE = "compute_helpers"


def seeded_arrays(ctx: ItemContext, n: int, sleep: float = 0.0) -> dict:
    """A few arrays from the item's seed, one via the worker-seeded global generators."""
    import torch

    if sleep:
        time.sleep(sleep)  # before writing: a SIGKILL lands mid-item, not between items
    rng = ctx.rng()
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = (a @ a.T).astype(np.float32)  # some arithmetic, not just a copy
    g = np.random.random(4)  # global numpy generator: seeded per item by the worker
    t = torch.rand(3).numpy()  # global torch generator: likewise
    stem = ctx.item.name.replace("/", "__")
    ctx.save_npy(f"out/{stem}.npy", a)
    ctx.save_npz(f"out/{stem}.npz", gram=b, globals_np=g, globals_torch=t)
    return {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def probe_sample(ctx: ItemContext, image: int, layer: str) -> dict:
    """Probe one embedded sample image with lite0; report this process's model loads."""
    import torch

    from causalvis.images import SampleSource
    from causalvis.models import probe_tensor

    model = cached_model("lite0", None, ctx.device)
    source = SampleSource(model.input_size, model.crop_pct)
    pixels = source.load_array(source.ids[image])
    x = torch.from_numpy(np.array(pixels, copy=True)).permute(2, 0, 1)[None].float() / 255
    acts = probe_tensor(model, x, [layer])[layer][0].numpy()
    ctx.save_npy(f"out/probe-{image:03d}.npy", acts.astype(np.float32))
    return {"pid": os.getpid(), "loads": model_loads()}


def flaky(ctx: ItemContext) -> None:
    """Fails on its first run (leaves a marker), succeeds on the next."""
    marker = ctx.root / "markers" / ctx.item.name.replace("/", "__")
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("tried once\n")
        raise RuntimeError("transient failure (first attempt)")
    ctx.write_text("out/flaky.txt", f"{ctx.seed}\n")


def crash_once(ctx: ItemContext) -> None:
    """Kills its whole worker process on the first run (a node loss, an OOM kill)."""
    marker = ctx.root / "markers" / ctx.item.name.replace("/", "__")
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text("crashed once\n")
        os._exit(3)
    ctx.write_text("out/survivor.txt", f"{ctx.seed}\n")


def always_fails(ctx: ItemContext) -> None:
    raise ValueError(f"corrupt input for {ctx.item.name}")


def array_items(n_items: int, n: int = 16, sleep: float = 0.0) -> list[WorkItem]:
    return [
        WorkItem(f"arrays/shard-{i:05d}", f"{HERE}:seeded_arrays", {"n": n, "sleep": sleep})
        for i in range(n_items)
    ]


def probe_items(n_items: int, layer: str = "blocks.2.1") -> list[WorkItem]:
    return [
        WorkItem(f"probe/img-{i:03d}", f"{HERE}:probe_sample", {"image": i, "layer": layer})
        for i in range(n_items)
    ]


def output_bytes(root: Path) -> dict[str, bytes]:
    """Every output file by relative path (not stamps, markers, logs or temp files)."""
    out = Path(root) / "out"
    files = [p for p in sorted(out.rglob("*")) if p.is_file() and not p.name.startswith(".")]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}
