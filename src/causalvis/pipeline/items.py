"""Shared plumbing for stage work items: what the driver passes, what a worker rebuilds.

Stage items carry their inputs in their JSON kwargs (model name / weights, the resolved
image-source spec, the config values they use), so a worker on another machine needs
nothing but the study folder, and the item digest hashes exactly what the item computes
from. Workers get the model and the image source once per process (:func:`cached_model`,
:func:`item_source`, both in the executor's per-process cache), never from the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from causalvis.compute import cached

_LOADS = 0


def cached_model(name: str, weights: str | None = None, device: str = "cpu",
                 tokens: str = "patch", dictionaries: dict[str, str] | None = None,
                 fold_norms: bool = True):
    """``causalvis.models.load_model`` once per process for each (name, weights, device,
    token policy, dictionaries, folding), with the dictionaries attached as derived layers
    and ``fold_norms`` set on the model (every stage's probes follow it)."""
    extra = tuple(sorted((dictionaries or {}).items()))

    def load():
        global _LOADS
        from causalvis.models import attach_dictionaries, load_model

        _LOADS += 1
        model = load_model(name, weights=weights, device=device, tokens=tokens)
        attach_dictionaries(model, dict(extra))
        model.fold_norms = bool(fold_norms)
        return model

    return cached(("model", name, weights, str(device), tokens, bool(fold_norms), *extra), load)


def model_loads() -> int:
    """How many models this process has built (tests check: once per worker)."""
    return _LOADS


def model_spec(config) -> dict[str, Any]:
    """The model an item loads: ``{"name", "weights", "tokens"}`` and ``"dictionaries"``
    when the study registers any (the device comes from the item; ``tokens``: the token
    policy of transformer layers)."""
    spec: dict[str, Any] = {"name": config.model.name, "weights": config.model.weights,
                            "tokens": config.model.tokens}
    if not config.model.fold_norms:  # only when off: default items keep their payloads
        spec["fold_norms"] = False
    if config.dictionaries:
        spec["dictionaries"] = dict(config.dictionaries)
    return spec


def source_spec(paths, config) -> str:
    """``images.source`` resolved as ``StageContext.source`` does, as an absolute path
    (workers may run in another directory) or ``"samples"``."""
    src = config.images.source
    if src == "samples":
        return src
    path = Path(src)
    if not path.is_absolute():
        path = path if path.exists() else Path(paths.root) / path
    return str(path.resolve())


def item_model(spec: dict[str, Any], device: str):
    """The process's cached model, in channels-last memory format.

    ``ActivationProbe`` converts the (shared) model to channels-last when it attaches, and
    convolution results differ in the last float bits between the two formats, so without
    this an item's numbers would depend on what ran before it in the process (a fresh Ray
    worker vs. an in-process build). Converting first makes every item see one format."""
    import torch

    model = cached_model(spec["name"], spec.get("weights"), device,
                         spec.get("tokens", "patch"), spec.get("dictionaries"),
                         spec.get("fold_norms", True))
    return model.to(memory_format=torch.channels_last)


def item_source(spec: str, model):
    """The image source, opened once per process for a given spec and preprocessing."""
    from causalvis.images import open_source

    key = ("image-source", spec, model.input_size, model.crop_pct)
    return cached(key, lambda: open_source(spec, model.input_size, model.crop_pct))
