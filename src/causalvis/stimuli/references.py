"""Stage ``references``: generated reference images (feature visualizations, user methods).

For every generated method the study needs (``methods.generated_methods``) and every unit
of units.json (main and practice), the method renders ``n`` images; many units of one
layer share a batch (``featurevis.batch_units``). Each image is stored as a lossless PNG at
the model's input size; meta.json records per image the objective value reached and the
unit's activation measured by the ActivationProbe on the *decoded PNG* (what participants
see). Per-unit stamps make the stage resumable.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from causalvis.errors import CausalvisError
from causalvis.images.preprocess import pil_to_tensor, tensor_to_pil
from causalvis.models import ActivationProbe
from causalvis.stimuli.methods import (
    GenerateBatch,
    Generated,
    ImageLike,
    ReferenceMethod,
    UnitRequest,
    generated_methods,
    get_method,
    method_dir_name,
)
from causalvis.study.assets import encode_png
from causalvis.study.layout import atomic_write, read_json, stamp_matches, write_json, write_stamp


def _to_pil(img: ImageLike, size: int, where: str) -> Image.Image:
    if isinstance(img, torch.Tensor):
        img = tensor_to_pil(img)
    elif isinstance(img, np.ndarray):
        arr = img
        if arr.dtype != np.uint8:
            arr = (np.clip(arr, 0, 1) * 255).round().astype(np.uint8)
        img = Image.fromarray(arr, mode="RGB")
    if not isinstance(img, Image.Image):
        raise CausalvisError(f"{where}: a method returned {type(img).__name__}, not an image")
    img = img.convert("RGB")
    if img.size != (size, size):
        raise CausalvisError(
            f"{where}: image is {img.size[0]}x{img.size[1]}, the model input size is {size}"
        )
    return img


def load_units(paths) -> list[dict]:
    if not paths.units.is_file():
        raise CausalvisError(f"{paths.units} missing (run `causalvis build {paths.root} --stage units`)")
    return list(read_json(paths.units)["units"])


def _chunks(units: list[dict], size: int) -> list[list[dict]]:
    """Units grouped by layer (in first-seen order), then cut into batches of ``size``."""
    by_layer: dict[str, list[dict]] = {}
    for u in units:
        by_layer.setdefault(u["layer"], []).append(u)
    return [
        group[i : i + size] for group in by_layer.values() for i in range(0, len(group), size)
    ]


def _measure(model, layer: str, channels: Sequence[int], pngs: Sequence[bytes]) -> list[float]:
    """Unit activation of each decoded PNG (image k belongs to ``channels[k]``)."""
    if not pngs:
        return []
    batch = torch.stack([pil_to_tensor(Image.open(io.BytesIO(b))) for b in pngs])
    with ActivationProbe(model, [layer]) as probe:
        acts = probe.run_batches(batch[i : i + 32] for i in range(0, len(batch), 32))[layer]
    return [float(acts[k, c]) for k, c in enumerate(channels)]


def _stamp_name(method: str, key: str, image_set: int | None) -> str:
    suffix = "" if image_set is None else f"-set{image_set}"
    return f"references-{method_dir_name(method)}-{key}{suffix}"


def _write_unit(
    ctx,
    method: ReferenceMethod,
    unit: UnitRequest,
    image_set: int | None,
    gen: Generated,
    n: int,
    pngs: list[bytes],
    activations: list[float],
) -> None:
    folder = ctx.paths.reference_dir(method_dir_name(method.name), unit.key)
    prefix = "" if image_set is None else f"set{image_set}-"
    entries = []
    for i in range(n):
        name = f"{prefix}{i}.png"
        atomic_write(folder / name, pngs[i])
        entry = {"file": name, "activation": activations[i]}
        if image_set is not None:
            entry["image_set"] = image_set
        if gen.objective is not None:
            entry["objective"] = float(gen.objective[i])
        if gen.extra is not None:
            entry.update(gen.extra[i])
        entries.append(entry)
    meta_path = folder / "meta.json"
    meta = read_json(meta_path) if meta_path.is_file() else {}
    old = [e for e in meta.get("images", []) if e.get("image_set") != image_set]
    meta.update(
        {
            "method": method.name,
            "layer": unit.layer,
            "channel": unit.channel,
            "key": unit.key,
            "role": unit.role,
            "activation_measured_on": "decoded PNG at the model input size",
            "images": sorted(old + entries, key=lambda e: (e.get("image_set", -1), e["file"])),
        }
    )
    if method.name in ("synthetic", "synthetic-maco"):
        meta["featurevis"] = ctx.config.featurevis.model_dump(mode="json")
    write_json(meta_path, meta)


def _natural_refs(ctx, key: str, image_set: int, n: int) -> tuple[Path, ...]:
    folder = ctx.paths.reference_dir("natural", key)
    return tuple(folder / f"set{image_set}-{i}.png" for i in range(n))


def _digest(cfg, name: str, n: int) -> str:
    """Inputs a method's images depend on: the model, the featurevis settings (not the list
    of extra methods), the image source for MACO's spectrum, and the image count."""
    fv = cfg.featurevis.model_dump(mode="json")
    fv.pop("also_render", None)
    parts = {"model": cfg.model.model_dump(mode="json"), "featurevis": fv, "method": name, "n": n}
    if name == "synthetic-maco":
        parts["images"] = cfg.images.model_dump(mode="json")
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def run_method(ctx, name: str, units: list[dict], cache: dict) -> int:
    """Render ``name`` for every unit not yet stamped; returns the number of units rendered."""
    method = get_method(name)
    cfg = ctx.config
    n = cfg.conditions.n_references
    if name in ("synthetic", "synthetic-maco"):
        n = cfg.featurevis.n_images
        if n < cfg.conditions.n_references:
            raise CausalvisError(
                f"featurevis.n_images ({n}) < conditions.n_references "
                f"({cfg.conditions.n_references}): not enough synthetic references"
            )
    digest = _digest(cfg, name, n)
    image_sets: list[int | None] = (
        list(range(cfg.exemplars.n_image_sets)) if method.per_image_set else [None]
    )
    batch_size = cfg.featurevis.batch_units if method.batch_units else 1
    rendered = 0
    for b in image_sets:
        todo = []
        for u in units:
            unit_digest = f"{digest}/{u['layer']}/{u['channel']}/{u['seed']}"
            if not stamp_matches(ctx.paths, _stamp_name(name, u["key"], b), unit_digest):
                todo.append((u, unit_digest))
        digests = {u["key"]: d for u, d in todo}
        for chunk in _chunks([u for u, _ in todo], batch_size):
            layer = chunk[0]["layer"]
            requests = tuple(
                UnitRequest(
                    u["layer"],
                    int(u["channel"]),
                    u["key"],
                    int(u["seed"]),
                    u.get("role", "main"),
                    () if b is None else _natural_refs(ctx, u["key"], b, cfg.exemplars.n_references),
                )
                for u in chunk
            )
            batch = GenerateBatch(
                model=ctx.model,
                layer=layer,
                units=requests,
                n_images=n,
                config=cfg,
                paths=ctx.paths,
                source=_LazySource(ctx),
                image_set=b,
                progress=ctx.progress,
                cache=cache,
            )
            outputs = list(method.generate(batch))
            if len(outputs) != len(requests):
                raise CausalvisError(
                    f"method {name!r} returned {len(outputs)} results for {len(requests)} units"
                )
            pngs: list[list[bytes]] = []
            for req, gen in zip(requests, outputs, strict=True):
                if len(gen.images) < n:
                    raise CausalvisError(
                        f"method {name!r} returned {len(gen.images)} images for {req.key}, need {n}"
                    )
                where = f"method {name!r}, unit {req.key}"
                size = ctx.model.input_size
                pngs.append([encode_png(_to_pil(im, size, where)) for im in gen.images[:n]])
            flat = [p for ps in pngs for p in ps]
            channels = [req.channel for req in requests for _ in range(n)]
            acts = _measure(ctx.model, layer, channels, flat)
            for k, (req, gen) in enumerate(zip(requests, outputs, strict=True)):
                _write_unit(ctx, method, req, b, gen, n, pngs[k], acts[k * n : (k + 1) * n])
                write_stamp(ctx.paths, _stamp_name(name, req.key, b), digests[req.key])
                rendered += 1
    return rendered


class _LazySource:
    """Defers opening the image source until a user method actually touches it."""

    def __init__(self, ctx) -> None:
        self._ctx = ctx

    def __getattr__(self, item):
        return getattr(self._ctx.source, item)


def run_references_stage(ctx) -> None:
    """Render every generated reference method the study needs, for every unit."""
    units = load_units(ctx.paths)
    cache: dict = {}
    for name in generated_methods(ctx.config):
        run_method(ctx, name, units, cache)
