"""Helpers for the natural-stimuli tests: a small config and a stage context."""

from __future__ import annotations

from causalvis.config import ExemplarsConfig, preset
from causalvis.pipeline.build import StageContext
from causalvis.store.layout import StudyPaths

LAYERS = ["blocks.1.1", "blocks.2.1"]


def small_config(**images):
    cfg = preset("quick")
    cfg.images.max_images = 48
    for key, value in images.items():
        setattr(cfg.images, key, value)
    cfg.scan.layers = []
    cfg.scan.shard_size = 16
    cfg.scan.batch_size = 16
    cfg.scan.workers = 1
    cfg.units.layers = list(LAYERS)
    cfg.units.per_layer = 1
    cfg.units.n_practice_units = 1
    cfg.exemplars = ExemplarsConfig(n_top=40, n_bins=4, n_image_sets=2, n_references=2)
    cfg.occlusion.stride = 67  # 3 x 3 windows: fast, border position included
    cfg.blur.stride = None  # the window search follows occlusion.stride
    return cfg


def make_context(root, cfg, model, source=None) -> StageContext:
    paths = StudyPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    cfg.save(paths.config)
    ctx = StageContext(paths, cfg, progress=False)
    ctx.model = model  # share the session model (cached_property slot)
    if source is not None:
        ctx.source = source
    return ctx
