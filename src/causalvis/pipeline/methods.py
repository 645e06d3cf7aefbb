"""The reference-methods registry: how the reference images of a condition are obtained.

A *method* names a way to explain a unit with images. Built in:

* ``natural``  – the unit's natural reference exemplars (written by stage ``exemplars``:
  ``references/natural/<unit>/set<b>-<i>.png``), per image set;
* ``blur``     – the natural references blurred outside their best window (stage ``blur``),
  per image set;
* ``synthetic`` – feature visualizations, Lucid recipe (stage ``references``), per unit;
* ``synthetic-maco`` – feature visualizations by MACO (stage ``references``), per unit;
* ``synthetic-mixed`` – the mixed condition's own feature visualizations: a separate
  optimisation of ``conditions.mixed_synthetic`` images (Lucid recipe, the diversity term
  over that batch, own seeds), as the paper ran it;
* ``mixed``    – ``conditions.mixed_natural`` natural + ``conditions.mixed_synthetic``
  synthetic references: ``synthetic-mixed``, or with ``conditions.mixed_synthetic_source =
  "synthetic"`` the first images of the ``synthetic`` batch;
* ``none``     – no references.

Anything else is a *user-defined* method: a :class:`ReferenceMethod` (or a factory
returning one) published under the entry-point group ``causalvis.methods`` or named by a
dotted path ``package.module:factory``. Its ``generate`` callable receives a
:class:`GenerateBatch` (units of one layer) and returns images; the references stage
writes, probes and stamps them like the built-in visualizations (docs/methods.md).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths

ENTRY_POINT_GROUP = "causalvis.methods"

ImageLike = Image.Image | np.ndarray | torch.Tensor


@dataclass(frozen=True)
class UnitRequest:
    """One unit to explain: ``layer:channel``, its file key and its seed from units.json."""

    layer: str
    channel: int
    key: str
    seed: int
    role: str = "main"
    # for per-image-set methods: set b's naturals of the batch's side
    natural_references: tuple[Path, ...] = ()


@dataclass(frozen=True)
class GenerateBatch:
    """What a generated method gets: units of *one* layer, and everything it may need."""

    model: Any  # CausalvisModel ([0, 1] RGB input, layer names of model.net)
    layer: str
    units: tuple[UnitRequest, ...]
    n_images: int
    config: StudyConfig
    paths: StudyPaths
    source: Any  # the study's ImageSource (natural images)
    image_set: int | None = None  # None for per-unit methods
    progress: bool = False
    cache: dict = field(default_factory=dict)  # shared across batches of one stage run
    # "max": images that activate the unit most; "min" (2-AFC studies): least. A method
    # that cannot minimize must raise a CausalvisError for side "min".
    side: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class Generated:
    """A method's output for one unit: images at the model's input size, and optionally
    the objective value each reached (stored in meta.json)."""

    images: Sequence[ImageLike]
    objective: Sequence[float] | None = None
    extra: Sequence[dict] | None = None


GenerateFn = Callable[[GenerateBatch], Sequence[Generated]]


@dataclass(frozen=True)
class ReferenceMethod:
    """How reference images for (unit, image set) are obtained.

    ``kind``: ``stage`` (files written by another stage), ``generated`` (``generate`` is
    called by stage ``references``), ``composite`` (``parts`` = (method, count) pairs)
    or ``none``.
    """

    name: str
    description: str
    kind: Literal["stage", "generated", "composite", "none"] = "generated"
    per_image_set: bool = False
    generate: GenerateFn | None = None
    produced_by: str = "references"
    parts: tuple[tuple[str, str], ...] = ()  # composite: (method, config field for the count)
    batch_units: bool = True  # may several units of one layer share one generate call

    def __post_init__(self) -> None:
        if self.kind == "generated" and self.generate is None:
            raise CausalvisError(f"reference method {self.name!r}: a generated method needs generate")


MIXED_OWN = "synthetic-mixed"  # the mixed condition's own optimisation
FEATUREVIS_METHODS = ("synthetic", "synthetic-maco", MIXED_OWN)


def _featurevis(method: str) -> GenerateFn:
    recipe = "synthetic" if method == MIXED_OWN else method

    def generate(batch: GenerateBatch) -> list[Generated]:
        from causalvis.pipeline.featurevis_recipe import render_side

        cfg = batch.config.featurevis.model_copy(update={"n_images": batch.n_images})
        magnitude = None
        if recipe == "synthetic-maco":
            magnitude = maco_magnitude(batch)
        rendered = render_side(
            batch.model,
            batch.layer,
            [(u.channel, u.seed) for u in batch.units],
            cfg,
            method=recipe,
            magnitude=magnitude,
            side=batch.side,
            progress=batch.progress,
            seed_method=method,
        )
        k = min(cfg.n_non_diverse, cfg.n_images)

        def extra(i: int, seed: int) -> dict:
            # "diverse" only where some images are not (keeps older meta.json unchanged)
            return {"seed": seed, "diverse": i >= k} if k else {"seed": seed}

        return [
            Generated(list(r.images), r.objective,
                      [extra(i, s) for i, s in enumerate(r.seeds)])
            for r in rendered
        ]

    return generate


MACO_SPECTRUM_IMAGES = 256  # natural images averaged for the MACO magnitude spectrum


def maco_magnitude(batch: GenerateBatch, n_max: int | None = None) -> torch.Tensor:
    """Mean natural magnitude spectrum at ``featurevis.maco_canvas`` from up to ``n_max``
    images of the study's own source (evenly spaced ids), computed once per stage run."""
    from causalvis.featurevis import natural_magnitude

    size = batch.config.featurevis.maco_canvas
    n_max = MACO_SPECTRUM_IMAGES if n_max is None else n_max
    key = ("maco_magnitude", size)
    if key not in batch.cache:
        ids = list(batch.source.ids)
        if not ids:
            raise CausalvisError("synthetic-maco: the image source has no images")
        pick = [ids[int(i)] for i in np.linspace(0, len(ids) - 1, min(n_max, len(ids)))]
        images = (arr for _, arr in batch.source.iter_images(list(dict.fromkeys(pick))))
        batch.cache[key] = natural_magnitude(images, size)
    return batch.cache[key]


BUILTIN: dict[str, ReferenceMethod] = {
    m.name: m
    for m in [
        ReferenceMethod("none", "no references (baseline)", kind="none"),
        ReferenceMethod(
            "natural",
            "natural exemplars from the unit's rank bins",
            kind="stage",
            per_image_set=True,
            produced_by="exemplars",
        ),
        ReferenceMethod(
            "blur",
            "natural exemplars blurred outside the most activating window",
            kind="stage",
            per_image_set=True,
            produced_by="blur",
        ),
        ReferenceMethod(
            "synthetic",
            "feature visualizations, Lucid recipe (Fourier, decorrelated colour, transforms)",
            generate=_featurevis("synthetic"),
        ),
        ReferenceMethod(
            "synthetic-maco",
            "feature visualizations by magnitude-constrained optimization (Fel et al. 2023)",
            generate=_featurevis("synthetic-maco"),
        ),
        ReferenceMethod(
            MIXED_OWN,
            "the mixed condition's feature visualizations: their own optimisation of "
            "conditions.mixed_synthetic images (diversity over that batch)",
            generate=_featurevis(MIXED_OWN),
        ),
        ReferenceMethod(
            "mixed",
            "natural and synthetic references together",
            kind="composite",
            per_image_set=True,
            parts=(("natural", "mixed_natural"), (MIXED_OWN, "mixed_synthetic")),
        ),
    ]
}


def _coerce(obj: Any, where: str) -> ReferenceMethod:
    if isinstance(obj, ReferenceMethod):
        return obj
    if callable(obj):
        try:
            made = obj()
        except Exception as exc:  # noqa: BLE001 - user code: report it as a user error
            raise CausalvisError(f"reference method {where}: factory failed: {exc}") from exc
        if isinstance(made, ReferenceMethod):
            return made
    raise CausalvisError(
        f"reference method {where} must be a ReferenceMethod or a factory returning one"
    )


@lru_cache(maxsize=1)
def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def get_method(name: str) -> ReferenceMethod:
    """The method called ``name``: built in, an entry point, or ``package.module:factory``."""
    if name in BUILTIN:
        return BUILTIN[name]
    eps = _entry_points()
    if name in eps:
        try:
            obj = eps[name].load()
        except Exception as exc:  # noqa: BLE001
            raise CausalvisError(f"reference method {name!r}: cannot load entry point: {exc}") from exc
        method = _coerce(obj, repr(name))
        return method if method.name == name else _renamed(method, name)
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise CausalvisError(f"reference method {name!r}: cannot import it ({exc})") from exc
        return _renamed(_coerce(obj, repr(name)), name)
    known = ", ".join([*BUILTIN, *eps])
    raise CausalvisError(
        f"unknown reference method {name!r}: choose one of {known}, an entry point of group "
        f"{ENTRY_POINT_GROUP!r}, or package.module:factory"
    )


def _renamed(method: ReferenceMethod, name: str) -> ReferenceMethod:
    from dataclasses import replace

    return replace(method, name=name)


def method_dir_name(name: str) -> str:
    """Folder under references/ for a method (dotted paths are made file-system safe)."""
    return name.replace(":", "__").replace("/", "_")


def composite_parts(method: ReferenceMethod, config: StudyConfig) -> list[tuple[str, int]]:
    """A composite's (method, count) parts under ``config``: the mixed condition's synthetic
    part is its own render, or the synthetic batch's first images
    (``conditions.mixed_synthetic_source``)."""
    out = []
    for part, field_name in method.parts:
        if part == MIXED_OWN and config.conditions.mixed_synthetic_source == "synthetic":
            part = "synthetic"
        out.append((part, _count(config, field_name)))
    return out


def generated_methods(config: StudyConfig) -> list[str]:
    """Generated methods stage ``references`` must produce: those the conditions use
    (composites expanded, parts with no image left out) plus ``featurevis.also_render``."""
    out: list[str] = []

    def add(name: str) -> None:
        method = get_method(name)
        if method.kind == "composite":
            for part, count in composite_parts(method, config):
                if count:
                    add(part)
        elif method.kind == "generated" and name not in out:
            out.append(name)

    for name in [*config.conditions.names, *config.featurevis.also_render]:
        add(name)
    return out


def _count(config: StudyConfig, field_name: str) -> int:
    return int(getattr(config.conditions, field_name))


SIDES = ("max", "min")


def reference_files(
    paths: StudyPaths,
    config: StudyConfig,
    condition: str,
    key: str,
    image_set: int,
    side: str = "max",
) -> list[Path]:
    """Expected reference image paths of ``condition`` for (unit key, image set b), in
    display order, without checking that they exist. ``side="min"`` (2-AFC): the minimal
    references (natural ``set<b>-min-<i>.png``, generated ``min-<i>.png``)."""
    if side not in SIDES:
        raise CausalvisError(f"reference side must be 'max' or 'min', not {side!r}")
    method = get_method(condition)
    n = config.conditions.n_references
    if side == "min" and (method.kind in ("none", "composite") or method.name == "blur"):
        raise CausalvisError(
            f"condition {condition!r} has no minimal references (side 'min' needs natural "
            "or a generated method)"
        )
    if method.kind == "none":
        return []
    if method.kind == "composite":
        files: list[Path] = []
        for part, count in composite_parts(method, config):
            files += _files(paths, get_method(part), key, image_set, count)
        return files
    return _files(paths, method, key, image_set, n, side)


def reference_file(index: int, image_set: int | None = None, side: str = "max") -> str:
    """The one naming rule of reference images: ``[set<b>-][min-]<i>.png`` (``set<b>-`` for
    per-image-set methods, ``min-`` for the 2-AFC minimal side)."""
    prefix = "" if image_set is None else f"set{image_set}-"
    return f"{prefix}{'' if side == 'max' else f'{side}-'}{index}.png"


def _files(
    paths: StudyPaths, method: ReferenceMethod, key: str, image_set: int, n: int,
    side: str = "max",
) -> list[Path]:
    folder = paths.reference_dir(method_dir_name(method.name), key)
    b = image_set if method.per_image_set else None
    return [folder / reference_file(i, b, side) for i in range(n)]


def natural_reference_paths(
    paths: StudyPaths, key: str, image_set: int, n: int, side: str = "max"
) -> list[Path]:
    """The first ``n`` natural references of (unit, image set) on ``side``."""
    return _files(paths, BUILTIN["natural"], key, image_set, n, side)


def reference_paths(
    paths: StudyPaths,
    config: StudyConfig,
    condition: str,
    key: str,
    image_set: int,
    side: str = "max",
) -> list[Path]:
    """Reference image paths of ``condition`` for (unit key, image set b) and ``side``;
    raises a CausalvisError naming the first missing file and the stage that writes it."""
    files = reference_files(paths, config, condition, key, image_set, side)
    for f in files:
        if not f.is_file():
            method = f.parent.parent.name
            stage = BUILTIN[method].produced_by if method in BUILTIN else "references"
            raise CausalvisError(
                f"condition {condition!r}: missing reference image {f} "
                f"(run `causalvis build {paths.root} --stage {stage}`)"
            )
    return files
