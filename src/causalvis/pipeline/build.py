"""The ``causalvis build`` driver.

A stage is a function ``run(ctx: StageContext) -> None`` that reads and writes the study
folder; the study's task says which function a stage name stands for
(:mod:`causalvis.pipeline.registry`). Stages skip work whose stamp matches (see
``store.layout.stamp_matches``), so running them again is cheap and a killed run
continues where it stopped.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError, UnknownLayerError
from causalvis.pipeline.registry import STAGE_NAMES, check_stage_names, get_task
from causalvis.store.layout import StudyPaths

log = logging.getLogger("causalvis.build")

@dataclass
class StageContext:
    """What a stage gets: the folder, the config, a shared model, and run options."""

    paths: StudyPaths
    config: StudyConfig
    progress: bool = True
    executor: str = "local"
    executor_options: dict = field(default_factory=dict)
    device: str | None = None

    @cached_property
    def model(self):
        # The per-process cache that work items use too: in-process items share this model.
        # Channels-last from the start (as ActivationProbe leaves it): float results must
        # not depend on which stage touched the shared model first.
        import torch

        from causalvis.pipeline.items import cached_model

        model = cached_model(
            self.config.model.name,
            self.config.model.weights,
            self.device or self.config.model.device,
            self.config.model.tokens,
            self.config.dictionaries,
            self.config.model.fold_norms,
        )
        return model.to(memory_format=torch.channels_last)

    @cached_property
    def source(self):
        from causalvis.images import open_source

        src = self.config.images.source
        if src != "samples" and not Path(src).is_absolute():
            src = str((self.paths.root / src).resolve()) if not Path(src).exists() else src
        return open_source(src, self.model.input_size, self.model.crop_pct)


def stage_function(task: str, name: str) -> Callable[[StageContext], None] | None:
    """The function stage ``name`` runs for ``task`` (None: the task has no such stage)."""
    check_stage_names([name])
    target = get_task(task).stages.get(name)
    if target is None:
        return None
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def run_stage(ctx: StageContext, name: str) -> None:
    """Run stage ``name`` as the study's task defines it (logged as skipped if it has none)."""
    func = stage_function(ctx.config.task, name)
    if func is None:
        log.info("%s: skipped (task %s does not use %s)", name, ctx.config.task, name)
        return
    func(ctx)


def load_study(study: str | Path) -> tuple[StudyPaths, StudyConfig]:
    paths = StudyPaths(Path(study))
    if not paths.root.is_dir():
        raise CausalvisError(
            f"study folder not found: {paths.root} (create it with `causalvis init`)"
        )
    return paths, StudyConfig.load(paths.config)


def build(
    study: str | Path,
    stages: list[str] | None = None,
    *,
    progress: bool = True,
    executor: str = "local",
    executor_options: dict | None = None,
    device: str | None = None,
) -> dict[str, float]:
    """Run the named stages (default: all, in order); returns seconds per stage.

    For a multi-model study (``models`` in the config) every stage but ``sessions`` runs in
    each model's sub-study (timings keyed ``<model>:<stage>``), then ``sessions`` merges
    them in the parent folder (see :mod:`causalvis.pipeline.multimodel`).
    """
    from causalvis.malloc import tune_malloc

    paths, config = load_study(study)
    names = list(stages) if stages else list(STAGE_NAMES)
    check_stage_names(names)
    tune_malloc()  # stages that run in this process (scan, exemplars, sessions, …)
    options = {
        "progress": progress,
        "executor": executor,
        "executor_options": executor_options or {},
        "device": device,
    }
    timings: dict[str, float] = {}
    if config.models:
        from causalvis.pipeline.multimodel import ensure_substudies

        per_model = [n for n in names if n != "sessions"]
        for model, sub in ensure_substudies(paths, config).items():
            log.info("model %s (%s)", model, sub.root)
            sub_ctx = StageContext(sub, StudyConfig.load(sub.config), **options)
            try:
                ran = _run_stages(sub_ctx, per_model)
            except UnknownLayerError as exc:  # one layer list rarely fits a CNN and a ViT
                raise UnknownLayerError(
                    f"{exc}; in a multi-model study give this model its own layers: "
                    f"[units.model_layers] \"{model}\" = [...] (docs/own-model.md)") from exc
            for name, seconds in ran.items():
                timings[f"{model}:{name}"] = seconds
        names = [n for n in names if n == "sessions"]
    timings.update(_run_stages(StageContext(paths, config, **options), names))
    return timings


def _run_stages(ctx: StageContext, names: list[str]) -> dict[str, float]:
    timings: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        log.info("stage %s", name)
        run_stage(ctx, name)
        timings[name] = time.perf_counter() - t0
    return timings


def init_study(
    study: str | Path,
    preset_name: str,
    *,
    model: str | None = None,
    images: str | None = None,
    force: bool = False,
    task: str | None = None,
    models: list[str] | None = None,
    weights: str | None = None,
    dictionaries: dict[str, str] | None = None,
) -> StudyConfig:
    """Create a study folder with the preset's validated ``study.toml`` (``task`` switches
    the preset's task, ``models`` makes it a multi-model study, ``weights`` is the model's
    state-dict file, stored as an absolute path in ``model.weights``, or ``"random"``;
    ``dictionaries`` (NAME -> PATH) go to ``[dictionaries]``, checked against the model)."""
    from causalvis.config import preset

    paths = StudyPaths(Path(study))
    if paths.config.exists() and not force:
        raise CausalvisError(f"{paths.config} exists already (use --force to overwrite)")
    if images not in (None, "samples"):
        img = Path(images).expanduser()
        if not img.is_dir():
            raise CausalvisError(f"image folder not found: {img}")
        images = str(img.resolve())
    if model is not None:
        from causalvis.models.custom import absolute_name

        model = absolute_name(model)  # a python: factory file, found from any directory
    cfg = preset(preset_name, model=model, images=images, task=task, models=models)
    if weights is not None:
        if models:
            raise CausalvisError("--weights needs one --model, not --models")
        if weights != "random":
            path = Path(weights).expanduser()
            if not path.is_file():
                raise CausalvisError(f"weights file not found: {path}")
            weights = str(path.resolve())
        cfg.model.weights = weights
    if dictionaries:
        cfg.dictionaries = dict(dictionaries)
    if model is not None or models or weights is not None or dictionaries:
        # Fail early on an unknown model / missing weights rather than in stage 1.
        from causalvis.models import attach_dictionaries, load_model
        from causalvis.pipeline.multimodel import split_model_entry

        for name in models or [cfg.model.name]:
            base, dictionary = split_model_entry(name, cfg)
            net = load_model(base, weights=cfg.model.weights)
            attach_dictionaries(net, cfg.dictionaries)
    paths.root.mkdir(parents=True, exist_ok=True)
    cfg.save(paths.config)
    return cfg
