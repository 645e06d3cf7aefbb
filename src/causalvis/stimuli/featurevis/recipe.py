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
from causalvis.models import CausalvisModel
from causalvis.stimuli.featurevis.maco import MacoSettings, render_maco
from causalvis.stimuli.featurevis.objectives import unit_objective
from causalvis.stimuli.featurevis.param import make_param
from causalvis.stimuli.featurevis.render import RenderSettings, image_seed, render
from causalvis.stimuli.featurevis.transforms import TransformSpec


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


def unit_seeds(cfg: FeatureVisConfig, unit_seed: int, n: int, method: str) -> list[int]:
    return [image_seed(cfg.seed, unit_seed, method, i) for i in range(n)]


def render_units(
    model: CausalvisModel,
    layer: str,
    units: Sequence[tuple[int, int]],
    cfg: FeatureVisConfig,
    *,
    method: str = "synthetic",
    magnitude: torch.Tensor | None = None,
    sign: float = 1.0,
    progress: bool = False,
    amp: bool = False,
) -> list[UnitImages]:
    """Render ``cfg.n_images`` images for each ``(channel, unit_seed)`` of ``layer`` in one
    batch. ``method`` is ``synthetic`` (Lucid recipe) or ``synthetic-maco`` (needs the
    natural ``magnitude`` spectrum at ``cfg.maco_canvas``)."""
    n = cfg.n_images
    channels = [c for c, _ in units]
    seeds = [s for _, us in units for s in unit_seeds(cfg, us, n, method)]
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
