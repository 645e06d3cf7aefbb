"""A tiny real two_afc study (lite0, sample images): reusable by every 2-AFC test.

``build_tiny_two_afc(root)`` writes the config and runs the stages up to ``references``
(pass ``stages=`` to go further, e.g. ``[*STAGES, "sessions"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from causalvis.config import StudyConfig, preset
from causalvis.pipeline.build import build
from causalvis.store.layout import StudyPaths

STAGES = ("scan", "units", "exemplars", "blur", "occlusion", "trials", "references")
LAYERS = ("blocks.2.1", "blocks.4.2")


def tiny_two_afc_config(layers: Sequence[str] = LAYERS) -> StudyConfig:
    """``preset("quick", task="two_afc")`` shrunk for 2 CPU cores: one main unit per layer,
    one practice unit, 3 + 3 references, 2 image sets, 3 feature visualizations per side
    (the first one non-diverse) of 4 steps at 64 px."""
    cfg = preset("quick", task="two_afc")
    cfg.name = "tiny-two-afc"
    cfg.images.max_images = 96
    cfg.scan.shard_size = 48
    cfg.units.layers = list(layers)
    cfg.units.per_layer = 1
    cfg.units.n_practice_units = 1
    cfg.exemplars.n_references = 3
    cfg.exemplars.n_min_references = 3
    cfg.exemplars.n_image_sets = 2
    cfg.conditions.n_references = 3
    cfg.featurevis.size = 64
    cfg.featurevis.crop = 4
    cfg.featurevis.jitter = 4
    cfg.featurevis.jitter_after = 2
    cfg.featurevis.steps = 4
    cfg.featurevis.n_images = 3
    cfg.featurevis.n_non_diverse = 1
    cfg.sessions.n_catch = 1
    cfg.sessions.n_practice = 1
    return StudyConfig.model_validate(cfg.model_dump())


def build_tiny_two_afc(
    root: Path, stages: Sequence[str] = STAGES, layers: Sequence[str] = LAYERS
) -> StudyConfig:
    """Create the study folder ``root`` (if it has no study.toml yet) and build ``stages``."""
    paths = StudyPaths(root)
    if paths.config.is_file():
        cfg = StudyConfig.load(paths.config)
    else:
        cfg = tiny_two_afc_config(layers)
        root.mkdir(parents=True, exist_ok=True)
        cfg.save(paths.config)
    build(root, list(stages), progress=False)
    return cfg
