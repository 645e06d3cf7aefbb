"""The machine-observer registry: name -> how to build the observer and which task it fits.

Like the reference-methods registry (``pipeline.methods``): ``observe`` and the simulated
participants (``simulate.build_strategy``) look observers up here, so adding one is one
entry. Observers that compare with references share one perceptual embedder per build
(:class:`BuildContext`), loaded only when such an observer is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from causalvis.errors import CausalvisError
from causalvis.observers.base import Observer
from causalvis.observers.heuristics import CenterObserver, SaliencyObserver, VarianceObserver
from causalvis.observers.mis import load_two_afc_trials
from causalvis.observers.trials import load_trials

log = logging.getLogger("causalvis.observe")

CAUSAL_OCCLUSION = "causal_occlusion"
TWO_AFC = "two_afc"
# How each task's served trials are read for the observers.
TASK_TRIALS: dict[str, Callable[[str | Path], list]] = {
    CAUSAL_OCCLUSION: load_trials,
    TWO_AFC: load_two_afc_trials,
}


@dataclass
class BuildContext:
    """What a factory may need: the studied model (to pick a perceptual net that is not
    it), the perceptual similarity asked for (a model, ``dreamsim``, ``lpips``), the
    device; caches the shared embedder."""

    studied_model: str = "lite0"
    perceptual_model: str | None = None
    perceptual_weights: str | None = None
    device: str = "cpu"
    info: dict = field(default_factory=dict)  # the perceptual net, once loaded
    _embedder: Any = None

    def embedder(self):
        """The perceptual embedder, loaded on first use."""
        if self._embedder is None:
            from causalvis.observers.reference import perceptual_model_for
            from causalvis.observers.similarity import make_similarity

            name = self.perceptual_model or perceptual_model_for(self.studied_model)
            if name == self.studied_model:
                log.warning("perceptual model %s is the studied model itself", name)
            self._embedder = make_similarity(name, weights=self.perceptual_weights,
                                             device=self.device)
            self.info = {"weights": self.perceptual_weights, **self._embedder.describe()}
            if self.info.get("similarity") == "model features":
                self.info["model"] = name  # as asked for (e.g. "lite1")
        return self._embedder


@dataclass(frozen=True)
class ObserverSpec:
    """A registered observer: ``build`` makes it, ``task`` is the trials it reads,
    ``default`` = run when ``observe`` is given no names."""

    name: str
    build: Callable[[BuildContext], Observer]
    task: str = CAUSAL_OCCLUSION
    default: bool = True


def _reference_patch(ctx: BuildContext) -> Observer:
    from causalvis.observers.reference import ReferencePatchObserver

    return ReferencePatchObserver(ctx.embedder())


def _reference_image(ctx: BuildContext) -> Observer:
    from causalvis.observers.reference import ReferenceImageObserver

    return ReferenceImageObserver(ctx.embedder())


def _mis(ctx: BuildContext) -> Observer:
    from causalvis.observers.mis import MisObserver

    return MisObserver(ctx.embedder())


REGISTRY: dict[str, ObserverSpec] = {
    spec.name: spec
    for spec in (
        ObserverSpec("center", lambda ctx: CenterObserver()),
        ObserverSpec("variance", lambda ctx: VarianceObserver()),
        ObserverSpec("saliency", lambda ctx: SaliencyObserver("spectral")),
        ObserverSpec("reference_patch", _reference_patch),
        ObserverSpec("reference_image", _reference_image),
        ObserverSpec("saliency_fine", lambda ctx: SaliencyObserver("fine"), default=False),
        # The 2-AFC task (two natural queries, maximal and minimal references): mis.py.
        ObserverSpec("mis", _mis, task=TWO_AFC),
    )
}
ALL_OBSERVERS = tuple(REGISTRY)


def observers_for(task: str) -> tuple[str, ...]:
    """The observers that apply to ``task``."""
    return tuple(n for n, s in REGISTRY.items() if s.task == task)


def default_observers(task: str) -> tuple[str, ...]:
    """What ``observe`` runs on a study of ``task`` when given no names."""
    return tuple(n for n, s in REGISTRY.items() if s.task == task and s.default)


def get_observer(name: str) -> ObserverSpec:
    if name not in REGISTRY:
        raise CausalvisError(
            f"unknown observer {name!r}: choose from {', '.join(ALL_OBSERVERS)}"
        )
    return REGISTRY[name]


def make_observers(
    names: Sequence[str],
    *,
    studied_model: str = "lite0",
    perceptual_model: str | None = None,
    perceptual_weights: str | None = None,
    device: str = "cpu",
) -> tuple[list[Observer], dict]:
    """Build observers by name (each once); returns them and a description of the
    perceptual net ({} when none was needed)."""
    specs = [get_observer(n) for n in dict.fromkeys(names)]
    ctx = BuildContext(studied_model, perceptual_model, perceptual_weights, device)
    return [spec.build(ctx) for spec in specs], ctx.info


def load_task_trials(task: str, path: str | Path) -> list:
    """The main trials of ``trials.csv`` as the observers of ``task`` read them."""
    return TASK_TRIALS[task](path)
