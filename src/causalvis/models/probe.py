"""ActivationProbe: several layers in one forward pass, truncated after the deepest.

The probe hooks the requested layers, runs the model once, and raises an internal
exception right after the deepest requested layer has fired, so nothing beyond it is
computed. Hooks are removed on exit (context manager), even after errors.

Probes compose: a probe's hooks record (and stop the pass) only while that probe is
running, so a probe held open on a model does not swallow the pass of another probe (or
of any other forward) on the same layers. Feature maps are cloned when a later in-place
op (an ``inplace=True`` ReLU after a BatchNorm) would overwrite them. Inference passes
run through the model's copy with eval BatchNorm folded into the convs (same layer names;
``fold_norms=False``, the model's own ``fold_norms`` (a study's setting) or, outside a
study, ``CAUSALVIS_FOLD_NORMS=0`` measures the model as it is).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

import torch

from causalvis.malloc import heap_allocations
from causalvis.models.fold import inference_model
from causalvis.models.layers import layer_reader, resolve_layer, tap_module
from causalvis.models.zoo import CausalvisModel


class _StopForward(Exception):
    """Raised by the deepest hook to skip the rest of the network."""


class ActivationProbe:
    """Record layer activations of a :class:`CausalvisModel`.

    ``mode="mean"`` gives spatial means ``[N, C]`` (the unit activation of the paper);
    ``mode="map"`` gives full feature maps ``[N, C, H, W]``. With ``grad=True`` the
    outputs keep their autograd graph (feature visualization); otherwise the pass runs
    under :func:`torch.inference_mode`, through the model's BatchNorm-folded copy unless
    ``fold_norms=False`` (:mod:`causalvis.models.fold`).
    """

    def __init__(
        self,
        model: CausalvisModel,
        layers: Sequence[str],
        *,
        mode: str = "mean",
        grad: bool = False,
        truncate: bool = True,
        channels_last: bool | None = None,
        fold_norms: bool | None = None,
    ) -> None:
        if mode not in {"mean", "map"}:
            raise ValueError("mode must be 'mean' or 'map'")
        if not layers:
            raise ValueError("at least one layer is required")
        if fold_norms is None and grad:
            fold_norms = False  # a render optimizes through its own copy
        # inference passes through the BatchNorm-folded copy (models.fold; hooks go on it):
        # the same numbers within float rounding
        self.model = inference_model(model, fold_norms)
        infos = [resolve_layer(model, layer) for layer in dict.fromkeys(layers)]
        self.layers = [i.name for i in infos]
        self._taps = {i.name: i.tap for i in infos}
        self._readers = {i.name: layer_reader(model, i) for i in infos}
        self.mode = mode
        self.grad = grad
        self.truncate = truncate
        if channels_last is None:
            # Measured faster on CPU (oneDNN) and CUDA alike: benchmarks/bench_probe.py.
            channels_last = True
        self.channels_last = channels_last
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._store: dict[str, torch.Tensor] = {}
        self._running = False

    # -- hook management -------------------------------------------------------------
    def __enter__(self) -> ActivationProbe:
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def attach(self) -> None:
        if self._handles:
            return
        for name in self.layers:
            module, how = tap_module(self.model.net, self._taps[name])
            if how == "pre":
                handle = module.register_forward_pre_hook(self._hook(name, pre=True))
            else:
                handle = module.register_forward_hook(self._hook(name, pre=False))
            self._handles.append(handle)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name: str, pre: bool):
        def hook(_module, args, output=None):
            if not self._running:  # another probe's (or a plain) forward pass
                return None
            if name in self._store:  # a module reused later in the net: keep the first call
                return None
            tensor = self._readers[name](args[0] if pre else output)
            # the last requested layer has fired: nothing beyond it is needed
            stops = self.truncate and len(self._store) + 1 == len(self.layers)
            if self.mode == "mean":
                tensor = tensor.float().mean(dim=(2, 3))
            elif not stops:
                # the pass goes on: an in-place op downstream would overwrite the map
                tensor = tensor.clone()
            self._store[name] = tensor
            if stops:
                raise _StopForward
            return None

        return hook

    # -- running ---------------------------------------------------------------------
    def run(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations for a batch of [0, 1] images ``[N, 3, S, S]``."""
        if not self._handles:
            raise RuntimeError("use the probe as a context manager (with ActivationProbe(...))")
        images = images.to(self.model.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self._store = {}
        context = torch.enable_grad() if self.grad else torch.inference_mode()
        self._running = True
        try:
            with context, contextlib.suppress(_StopForward), heap_allocations(
                    images.device.type == "cpu"):  # large maps: no fresh pages per batch
                self.model(images)
        finally:
            self._running = False
        missing = [n for n in self.layers if n not in self._store]
        if missing:
            raise RuntimeError(f"layers never reached in the forward pass: {missing}")
        out, self._store = self._store, {}
        return out

    __call__ = run

    def run_batches(self, batches: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Concatenate :meth:`run` over batches (means only; kept on the CPU)."""
        parts: dict[str, list[torch.Tensor]] = {n: [] for n in self.layers}
        for batch in batches:
            for name, value in self.run(batch).items():
                parts[name].append(value.detach().float().cpu())
        return {n: torch.cat(v) for n, v in parts.items()}


def probe_tensor(
    model: CausalvisModel,
    images: torch.Tensor,
    layers: Sequence[str],
    *,
    batch_size: int = 64,
) -> dict[str, torch.Tensor]:
    """Spatial-mean activations ``{layer: [N, C]}`` for a stack of [0, 1] images."""
    with ActivationProbe(model, layers) as probe:
        return probe.run_batches(
            images[i : i + batch_size] for i in range(0, len(images), batch_size)
        )
