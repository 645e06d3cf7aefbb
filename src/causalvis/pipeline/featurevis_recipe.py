"""The study recipes: many units of one layer, ``n_images`` each, from a FeatureVisConfig.

``render_units`` is what the references stage and the methods registry call; it turns the
config into settings and seeds (study seed + unit seed + image index, so a unit's images do
not depend on which other units share its batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from causalvis.config import FeatureVisConfig
from causalvis.featurevis.maco import MacoSettings, render_maco
from causalvis.featurevis.objectives import unit_objective
from causalvis.featurevis.param import make_param
from causalvis.featurevis.render import RenderSettings, image_seed, render
from causalvis.featurevis.transforms import TransformSpec
from causalvis.models import CausalvisModel


@dataclass(frozen=True)
class UnitImages:
    channel: int
    images: torch.Tensor  # [n, 3, S, S] at the model's input size
    objective: list[float]  # objective value per image on the final image
    seeds: list[int]


def transform_spec(cfg: FeatureVisConfig) -> TransformSpec:
    return TransformSpec(
        jitter=cfg.jitter,
        scales=tuple(cfg.scales),
        rotate_degrees=cfg.rotate_degrees,
        jitter_after=cfg.jitter_after,
    )


def unit_seeds(
    cfg: FeatureVisConfig, unit_seed: int, n: int, method: str, first: int = 0,
    side: str = "max",
) -> list[int]:
    """Seeds of images ``first .. first + n - 1`` of a unit; the min side draws its own
    (the max side keeps the seeds it always had)."""
    tag: tuple = () if side == "max" else (side,)
    return [image_seed(cfg.seed, unit_seed, method, *tag, i) for i in range(first, first + n)]


def render_units(
    model: CausalvisModel,
    layer: str,
    units: Sequence[tuple[int, int]],
    cfg: FeatureVisConfig,
    *,
    method: str = "synthetic",
    magnitude: torch.Tensor | None = None,
    sign: float = 1.0,
    first: int = 0,
    progress: bool = False,
    amp: bool = False,
    seed_method: str | None = None,
) -> list[UnitImages]:
    """Render ``cfg.n_images`` images for each ``(channel, unit_seed)`` of ``layer`` in one
    batch. ``method`` is ``synthetic`` (Lucid recipe) or ``synthetic-maco`` (needs the
    natural ``magnitude`` spectrum at ``cfg.maco_canvas``). ``sign=-1`` minimizes the
    unit (the 2-AFC minimal references, own seeds); ``first`` is the index of the first
    image (its seed), so a side can be rendered in parts (:func:`render_side`).
    ``seed_method`` names the seeds' method when it differs from the recipe (the mixed
    condition's own optimisation draws its own seeds with the Lucid recipe)."""
    n = cfg.n_images
    channels = [c for c, _ in units]
    side = "max" if sign > 0 else "min"
    seeds = [s for _, us in units
             for s in unit_seeds(cfg, us, n, seed_method or method, first, side)]
    objective = unit_objective(layer, channels, n, diversity=cfg.diversity, sign=sign)
    desc = f"{method} {layer} ({len(units)} units)"
    if method == "synthetic":
        param = make_param(
            cfg.param, seeds, cfg.size, decorrelate=cfg.decorrelate, device=model.device
        )
        settings = RenderSettings(
            steps=cfg.steps,
            lr=cfg.lr,
            transforms=transform_spec(cfg),
            crop=cfg.crop,
            amp=amp,
            progress=progress,
            desc=desc,
        )
        result = render(model, objective, param, seeds, settings)
    elif method == "synthetic-maco":
        if magnitude is None:
            raise ValueError("synthetic-maco needs the natural magnitude spectrum")
        settings = MacoSettings(steps=cfg.maco_steps, progress=progress, desc=desc)
        result = render_maco(model, objective, magnitude, seeds, settings)
    else:
        raise ValueError(f"not a built-in feature visualization method: {method!r}")
    out = []
    for u, (channel, _) in enumerate(units):
        sl = slice(u * n, (u + 1) * n)
        out.append(
            UnitImages(channel, result.images[sl], result.values[sl].tolist(), seeds[sl])
        )
    return out


def render_side(
    model: CausalvisModel,
    layer: str,
    units: Sequence[tuple[int, int]],
    cfg: FeatureVisConfig,
    *,
    method: str = "synthetic",
    magnitude: torch.Tensor | None = None,
    side: str = "max",
    progress: bool = False,
    amp: bool = False,
    seed_method: str | None = None,
) -> list[UnitImages]:
    """One side (``max`` or ``min``) of every unit: the first ``cfg.n_non_diverse`` images
    without the diversity term (IMI shows such an image first), the rest as one diverse
    batch. With ``n_non_diverse = 0`` this is exactly one :func:`render_units` call."""
    if side not in ("max", "min"):
        raise ValueError(f"side must be 'max' or 'min', not {side!r}")
    sign = 1.0 if side == "max" else -1.0
    n, k = cfg.n_images, min(cfg.n_non_diverse, cfg.n_images)
    kw = {"method": method, "magnitude": magnitude, "sign": sign, "progress": progress,
          "amp": amp, "seed_method": seed_method}
    parts: list[list[UnitImages]] = []
    if k:
        plain = cfg.model_copy(update={"n_images": k, "diversity": 0.0})
        parts.append(render_units(model, layer, units, plain, first=0, **kw))
    if n - k:
        rest = cfg.model_copy(update={"n_images": n - k})
        parts.append(render_units(model, layer, units, rest, first=k, **kw))
    if len(parts) == 1:
        return parts[0]
    return [
        UnitImages(
            ps[0].channel,
            torch.cat([p.images for p in ps]),
            [v for p in ps for v in p.objective],
            [s for p in ps for s in p.seeds],
        )
        for ps in zip(*parts, strict=True)
    ]
