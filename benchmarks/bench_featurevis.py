"""Feature visualization: causalvis's batched engine vs Lucent's ``render_vis``.

Both engines render one image for each of ``--units`` units of one mid layer of the
embedded EfficientNet-Lite0, with the same canvas (``--size``), the same step budget
(``--steps``), the same optimizer (Adam, lr 0.05), the same parameterization (Fourier,
1/f, decorrelated colour, sigmoid) and the same transform recipe (jitter 8, scale
{1, .975, 1.025, .95, 1.05}, rotate -5..5 degrees, jitter 4), and feed the model 224 px
images. Lucent is used as users use it: one ``render_vis`` call per unit. Our engine
renders all units in one batch and stops the forward pass after the target layer.

Both final images are measured the same way: canvas resized to the model's input size
(bilinear, antialiased), quantized to 8 bits, unit activation by the ActivationProbe.

Lucent needs ``torch-lucent`` (the ``bench`` extra); install it without letting it touch
torch: ``pip install --no-deps torch-lucent kornia==0.4.1 decorator``. Lucent imports
IPython only to display images in notebooks; when IPython is absent this script stubs
``IPython.display`` (display is never called here).

``--side floor`` times the physical floor of a step instead: one forward + backward of
the truncated network on the same batch (suite comparison ``featurevis_step_vs_floor``).
Both run through the copy with eval BatchNorm folded into the convs (built in the
warm-up), ``--no-fold`` through the model itself (``RenderSettings.fold_norms`` off). Both serve
their buffers from the malloc heap as a render does (``causalvis.malloc.heap_allocations``; ``--no-heap``:
fresh mmap pages, ``RenderSettings.heap_allocations`` off).

Usage: python benchmarks/bench_featurevis.py [--device cuda] [--steps 64] [--size 128]
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import types

import numpy as np
import torch

from causalvis.featurevis import FourierParam, RenderSettings, render, unit_objective
from causalvis.featurevis.render import final_images, image_seed
from causalvis.featurevis.transforms import TransformSpec
from causalvis.images import pil_to_tensor, tensor_to_pil
from causalvis.models import load_model, probe_tensor

SCALES = (1.0, 0.975, 1.025, 0.95, 1.05)


def _import_lucent():
    try:
        import IPython.display  # noqa: F401
    except ImportError:  # only used by lucent.misc.io.showing for notebooks
        ipy, disp = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        disp.display, disp.HTML = (lambda *a, **k: None), str
        ipy.display = disp
        sys.modules["IPython"], sys.modules["IPython.display"] = ipy, disp
    try:
        from lucent.optvis import objectives, param, render, transform
    except ImportError as exc:
        raise SystemExit(
            f"torch-lucent is not importable ({exc}); install with "
            "`pip install --no-deps torch-lucent kornia==0.4.1 decorator`"
        ) from exc
    return objectives, param, render, transform


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _measure(model, layer: str, channels: list[int], images: torch.Tensor) -> list[float]:
    """Unit activation on the 8-bit, model-size version of each final image."""
    size = model.input_size
    images = final_images(images.float().cpu(), 0, size)
    shown = torch.stack([pil_to_tensor(tensor_to_pil(im)) for im in images])
    acts = probe_tensor(model, shown, [layer])[layer]
    return [float(acts[i, c]) for i, c in enumerate(channels)]


def run_ours(model, layer, channels, args) -> tuple[float, float, torch.Tensor, float]:
    seeds = [image_seed(args.seed, c) for c in channels]
    spec = TransformSpec(jitter=8, scales=SCALES, rotate_degrees=5, jitter_after=4, out_size=224)
    settings = RenderSettings(steps=args.steps, lr=0.05, transforms=spec, crop=0, amp=args.amp,
                              fold_norms=not args.no_fold, heap_allocations=not args.no_heap)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    _sync(model.device)
    t0, c0 = time.perf_counter(), time.process_time()
    param = FourierParam(seeds, args.size, device=model.device)
    result = render(model, unit_objective(layer, channels, 1), param, seeds, settings)
    # final canvas (uncropped, like Lucent's) for the shared measurement
    with torch.no_grad():
        canvas = param().detach()
    _sync(model.device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else 0.0
    del result
    return seconds, cpu, canvas, mem


def run_lucent(model, layer, channels, args) -> tuple[float, float, torch.Tensor, float]:
    objectives, param, render, transform = _import_lucent()
    transforms = [
        transform.jitter(8),
        transform.random_scale(list(SCALES)),
        transform.random_rotate(list(range(-5, 6))),
        transform.jitter(4),
    ]
    name = "net_" + layer.replace(".", "_")
    # as users run it: a model in PyTorch's default (contiguous) layout
    model.to(memory_format=torch.contiguous_format)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    images = []
    _sync(model.device)
    t0, c0 = time.perf_counter(), time.process_time()
    for c in channels:
        torch.manual_seed(args.seed * 1000 + c)
        out = render.render_vis(
            model,
            objectives.channel(name, c),
            param_f=lambda: param.image(args.size, fft=True, decorrelate=True),
            optimizer=lambda ps: torch.optim.Adam(ps, lr=0.05),
            transforms=transforms,
            thresholds=(args.steps,),
            preprocess=False,  # CausalvisModel normalizes [0, 1] input itself
            progress=False,
            show_image=False,
            fixed_image_size=224,
        )
        images.append(torch.from_numpy(out[-1]).permute(0, 3, 1, 2))
    _sync(model.device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else 0.0
    return seconds, cpu, torch.cat(images), mem


def run_floor(model, layer, channels, args) -> tuple[float, float, None, float]:
    """The physical floor of one optimisation step: one forward (truncated after the
    layer, channels-last, frozen weights) + backward to the input of the same batch
    (``--units`` images at the model's 224 px view), with the same objective, ``--steps``
    times, through the BatchNorm-folded copy a render step uses (the model itself with
    ``--no-fold``). What a render step adds on top is the parameterization, the transforms and
    the optimizer."""
    from causalvis.featurevis.render import frozen, memory_format
    from causalvis.malloc import heap_allocations
    from causalvis.models import ActivationProbe
    from causalvis.models.fold import folded_model

    objective = unit_objective(layer, channels, 1)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.rand(len(channels), 3, 224, 224, generator=gen).to(model.device)
    x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
    if model.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    if not args.no_fold:  # the network a render step runs (built in the warm-up)
        model = folded_model(model)
    probe = ActivationProbe(model, objective.layers, mode="map", grad=True, channels_last=True)
    _sync(model.device)
    t0, c0 = time.perf_counter(), time.process_time()
    with heap_allocations(not args.no_heap), frozen(model), memory_format(model, True), probe:
        for _ in range(args.steps):
            x.grad = None
            acts = probe.run(x)
            values = objective({k: v.float() for k, v in acts.items()})
            (-values.sum()).backward()
    _sync(model.device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    mem = torch.cuda.max_memory_allocated() / 2**20 if model.device.type == "cuda" else 0.0
    return seconds, cpu, None, mem


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--layer", default="blocks.3.2")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (ours, CUDA only)")
    ap.add_argument("--no-fold", action="store_true",
                    help="ours: optimize through the model itself, BatchNorm not folded")
    ap.add_argument("--no-heap", action="store_true",
                    help="ours and floor: large buffers from fresh mmap pages "
                         "(RenderSettings.heap_allocations off)")
    ap.add_argument("--side", choices=("ours", "lucent", "floor"), default=None,
                    help="run one engine once (fresh process, for benchmarks/suite.py)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = load_model("lite0", device=args.device)
    channels = list(range(0, 8 * args.units, 8))[: args.units]
    # warm-up (allocator, kernels) outside the timings
    warm = argparse.Namespace(**{**vars(args), "steps": 2})
    if args.side:
        run = {"ours": run_ours, "lucent": run_lucent, "floor": run_floor}[args.side]
        run(model, args.layer, channels if args.side == "floor" else channels[:1], warm)
        seconds, cpu, images, mem = run(model, args.layer, channels, args)
        acts = None if images is None else _measure(model, args.layer, channels, images)
        one = {"side": args.side, "seconds": round(seconds, 4), "cpu_timed_s": round(cpu, 4),
               "cuda_peak_mib": round(mem, 1), "units": args.units, "steps": args.steps,
               "s_per_step": round(seconds / args.steps, 5),
               "mean_activation": None if acts is None else round(float(np.mean(acts)), 4),
               "device": str(model.device), "threads": args.threads, "torch": torch.__version__,
               "fold_norms": None if args.side == "lucent" else not args.no_fold,
               "heap_allocations": None if args.side == "lucent" else not args.no_heap}
        print(json.dumps(one))
        return one
    run_ours(model, args.layer, channels[:1], warm)
    run_lucent(model, args.layer, channels[:1], warm)

    t_ours, cpu_ours, img_ours, mem_ours = run_ours(model, args.layer, channels, args)
    t_luc, cpu_luc, img_luc, mem_luc = run_lucent(model, args.layer, channels, args)
    a_ours = _measure(model, args.layer, channels, img_ours)
    a_luc = _measure(model, args.layer, channels, img_luc)
    result = {
        "benchmark": "featurevis",
        "device": str(model.device),
        "device_name": torch.cuda.get_device_name() if model.device.type == "cuda" else "cpu",
        "threads": args.threads,
        "model": "lite0",
        "layer": args.layer,
        "units": args.units,
        "canvas_px": args.size,
        "model_input_px": 224,
        "steps": args.steps,
        "ours_s": round(t_ours, 3),
        "lucent_s": round(t_luc, 3),
        "ours_cpu_s": round(cpu_ours, 3),
        "lucent_cpu_s": round(cpu_luc, 3),
        "speedup_vs_lucent_cpu_time": round(cpu_luc / cpu_ours, 3),
        "ours_s_per_unit": round(t_ours / args.units, 4),
        "lucent_s_per_unit": round(t_luc / args.units, 4),
        "ours_peak_mib": round(mem_ours, 1),
        "lucent_peak_mib": round(mem_luc, 1),
        "ours_mean_activation": round(float(np.mean(a_ours)), 4),
        "lucent_mean_activation": round(float(np.mean(a_luc)), 4),
        "speedup_vs_lucent": round(t_luc / t_ours, 3),
        "activation_ratio_vs_lucent": round(float(np.mean(a_ours) / np.mean(a_luc)), 4),
    }
    for k, v in result.items():
        if k not in ("benchmark",):
            print(f"{k:>28}: {v}")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
