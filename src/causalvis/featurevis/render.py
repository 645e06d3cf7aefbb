"""The render loop: optimize an image parameterization so that an objective grows.

Many images (units) are optimized in one batch. Model weights stay frozen (no weight
gradients are ever computed), the forward pass stops right after the deepest layer the
objective reads (``ActivationProbe``), hooks are removed afterwards, and every random draw
comes from per-image seeded generators, so runs repeat exactly on the CPU. On the CPU the
loop's buffers come from the malloc heap (``causalvis.malloc.heap_allocations``), not
fresh pages per step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from causalvis.featurevis.objectives import Objective
from causalvis.featurevis.param import ImageParam, make_generators
from causalvis.featurevis.transforms import TransformSpec
from causalvis.malloc import heap_allocations
from causalvis.models import ActivationProbe, CausalvisModel
from causalvis.models.fold import inference_model

OptimizerFactory = Callable[[list[torch.Tensor]], torch.optim.Optimizer]


def image_seed(*parts: int | str) -> int:
    """A stable 63-bit seed from (study seed, unit seed, image index, ...)."""
    text = "/".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 1


@dataclass
class RenderSettings:
    """How to optimize: step budget, optimizer, transforms and output geometry."""

    steps: int = 2560
    lr: float = 0.05
    optimizer: OptimizerFactory | None = None  # default Adam(lr)
    transforms: TransformSpec = field(default_factory=TransformSpec)
    crop: int = 16  # border removed from the final image
    thresholds: Sequence[int] = ()  # steps at which to keep intermediate images
    early_stop: int | None = None  # patience in steps (None = always run all steps)
    early_stop_tol: float = 1e-3  # relative improvement that resets the patience
    amp: bool = False  # bf16 autocast on CUDA
    channels_last: bool = True  # faster convolutions on CPU and GPU; restored afterwards
    # True: the transformed canvas is resized so content has the scale of the final image
    # (canvas minus crop resized to the model's input size), i.e. the scale at which it is
    # shown and probed. False (Lucid): the model sees the canvas at its own resolution -
    # cheaper for small canvases, but a small canvas shown enlarged loses its activation.
    view_at_final_scale: bool = True
    # optimize through a copy with eval BatchNorm folded into the convs (models.fold):
    # same activations up to float rounding, ~1/3 less per step; final values use the model.
    # None: as the model's inference passes (models.fold.folds: a study's model.fold_norms)
    fold_norms: bool | None = None
    # serve the loop's large buffers from the malloc heap, not fresh mmap pages that every
    # step page-faults in again (causalvis.malloc; glibc only, bit-identical results)
    heap_allocations: bool = True
    progress: bool = False
    desc: str = "featurevis"


@dataclass
class RenderResult:
    images: torch.Tensor  # [N, 3, S, S] final images at the model's input size (CPU, [0, 1])
    values: torch.Tensor  # [N] objective per image on the final images
    snapshots: dict[int, torch.Tensor]  # step -> [N, 3, S, S] intermediate final images
    steps_run: int
    history: list[float]  # mean objective per step (under transforms)


def final_images(param_images: torch.Tensor, crop: int, size: int) -> torch.Tensor:
    """Crop the border, then resize to the model's input size if the rest differs from it."""
    if crop:
        param_images = param_images[..., crop:-crop, crop:-crop]
    if param_images.shape[-1] != size:
        param_images = F.interpolate(
            param_images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    return param_images.clamp(0, 1)


def model_view_size(canvas: int, crop: int, spec: TransformSpec, input_size: int) -> int:
    """Side of the transformed image fed to the model: content appears at the scale of the
    final image (canvas minus crop resized to the model's input size)."""
    ratio = input_size / (canvas - 2 * crop)
    return max(8, int(round(spec.cropped_size(canvas) * ratio)))


@contextlib.contextmanager
def memory_format(model: torch.nn.Module, channels_last: bool):
    """Run in channels-last layout if asked; put the model's original layout back after."""
    conv = next((p for p in model.parameters() if p.dim() == 4), None)
    was_cl = conv is not None and not conv.is_contiguous() and conv.is_contiguous(
        memory_format=torch.channels_last
    )
    if channels_last and not was_cl:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last and not was_cl:
            model.to(memory_format=torch.contiguous_format)


@contextlib.contextmanager
def frozen(model: torch.nn.Module):
    """No weight gradients: switch off ``requires_grad`` everywhere, restore afterwards."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def evaluate(
    model: CausalvisModel, objective: Objective, images: torch.Tensor
) -> torch.Tensor:
    """Objective values of fixed images (no transforms, no gradients)."""
    with ActivationProbe(model, objective.layers, mode="map") as probe:
        acts = probe.run(images)
        return objective({k: v.float() for k, v in acts.items()}).detach().float().cpu()


def render(
    model: CausalvisModel,
    objective: Objective,
    param: ImageParam,
    seeds: Sequence[int],
    settings: RenderSettings,
) -> RenderResult:
    """Optimize ``param`` (one image per seed) to maximize ``objective``."""
    if len(seeds) != len(param):
        raise ValueError("need one seed per image")
    device = model.device
    canvas = param.size
    spec = settings.transforms
    if spec.out_size is None and settings.view_at_final_scale:
        view = model_view_size(canvas, settings.crop, spec, model.input_size)
        spec = dataclasses.replace(spec, out_size=view)
    gens = make_generators([image_seed(s, "transforms") for s in seeds])
    opt = (settings.optimizer or (lambda ps: torch.optim.Adam(ps, lr=settings.lr)))(param.params)
    use_amp = settings.amp and device.type == "cuda"
    thresholds = set(settings.thresholds)
    snapshots: dict[int, torch.Tensor] = {}
    history: list[float] = []
    best, since_best = -float("inf"), 0
    step = 0
    net = inference_model(model, settings.fold_norms)
    probe = ActivationProbe(
        net, objective.layers, mode="map", grad=True, channels_last=settings.channels_last
    )
    with heap_allocations(settings.heap_allocations and device.type == "cpu"), frozen(net), \
            memory_format(net, settings.channels_last), probe:
        bar = tqdm(range(1, settings.steps + 1), desc=settings.desc, disable=not settings.progress)
        for step in bar:
            opt.zero_grad(set_to_none=True)
            x = spec(param(), gens)
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
            )
            with autocast:
                acts = probe.run(x)
            values = objective({k: v.float() for k, v in acts.items()})
            (-values.sum()).backward()
            opt.step()
            mean = float(values.detach().mean())
            history.append(mean)
            if step in thresholds:
                with torch.no_grad():
                    snapshots[step] = final_images(param(), settings.crop, model.input_size).cpu()
            if settings.early_stop is not None:
                if step == 1 or mean > best + settings.early_stop_tol * max(abs(best), 1e-8):
                    best, since_best = mean, 0
                else:
                    since_best += 1
                    if since_best >= settings.early_stop:
                        break
        bar.close()
    with torch.no_grad():
        images = final_images(param(), settings.crop, model.input_size)
    values = evaluate(model, objective, images)
    return RenderResult(images.detach().cpu(), values, snapshots, step, history)
