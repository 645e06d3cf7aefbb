"""The layers a unit can live in, discovered by tracing one forward pass.

Which tensor a layer name stands for (documented in docs/models.md):

* **norm layers** (``BatchNorm2d``, timm ``BatchNormAct2d``): the normalized conv output
  *before* the nonlinearity (for ``BatchNormAct2d`` the input of its ``act``), i.e. the
  paper's pre-ReLU activation of a conv unit;
* **conv layers** (``Conv2d``) only in networks without norm layers (e.g. VGG): the conv
  output, again before the nonlinearity;
* **block outputs**: a module holding several convolutions (timm ``InvertedResidual``,
  torchvision ``Inception``, ``Bottleneck``, ...): its output as the next block sees it.
  For EfficientNet blocks this is the linear bottleneck (no nonlinearity); for blocks that
  end in a ReLU it is post-ReLU.

* **concat layers** (modules with a ``unit_layer_kind``, e.g. the mixed layers of
  ``inceptionv1``): the pre-ReLU concatenation of an Inception module's branches.

Each layer also names the Inception **branch** it belongs to (``1x1``, ``3x3 reduce``,
``3x3``, ``5x5 reduce``, ``5x5``, ``pool`` = the pool projection, ``concat`` = the
module's output; empty outside Inception modules), for ``inceptionv1`` and torchvision's
GoogLeNet.

A unit is ``LAYER:CHANNEL``; its activation is the spatial mean of that channel's map.

Only channels-first ``[N, C, H, W]`` tensors are understood. A 4-D output in
channels-last layout ``[N, H, W, C]`` (ConvNeXt's and Swin's ``LayerNorm`` over the last
dimension) is listed with kind ``channels-last (unsupported)`` and its true sizes, and
refused as a unit layer with a clear error: it is never read as if dim 1 were channels.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from causalvis.errors import UnknownLayerError

_NORM_TYPES: tuple[type, ...] = (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)


def _is_norm(module: nn.Module) -> bool:
    if isinstance(module, _NORM_TYPES):
        return True
    name = type(module).__name__
    return name.startswith(("BatchNorm", "GroupNorm")) and name.endswith("2d")


UNSUPPORTED_LAYOUT = "channels-last (unsupported)"


def _own_features(module: nn.Module) -> int | None:
    """How many features a module's output has along its feature dimension, if known."""
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1]) if module.normalized_shape else None
    for attr in ("num_features", "num_channels", "out_channels", "out_features"):
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return None


def _features(module: nn.Module) -> int | None:
    """The module's own feature count, else that of its last submodule that has one (a
    block's output usually has the features of its last conv / linear / norm)."""
    own = _own_features(module)
    if own is not None:
        return own
    for sub in reversed(list(module.modules())):
        own = _own_features(sub)
        if own is not None:
            return own
    return None


def _last_dim_op(module: nn.Module) -> bool:
    """A module that works on the last dimension: ``Linear`` or a (not ``*2d``) LayerNorm."""
    return isinstance(module, nn.Linear) or (
        isinstance(module, nn.LayerNorm) and not type(module).__name__.endswith("2d")
    )


def _channels_last(module: nn.Module, shape: tuple[int, ...]) -> bool:
    """Whether a 4-D output is ``[N, H, W, C]``: its last dim, not dim 1, holds the
    module's features; or the module is a last-dim ``LayerNorm`` (not a ``*2d`` one).
    A block counts only if it holds a last-dim op (a concat CNN block whose last branch
    happens to have ``width`` features is not channels-last)."""
    features = _features(module)
    if features is None:
        return False
    if _own_features(module) is None and not any(_last_dim_op(m) for m in module.modules()):
        return False
    return shape[-1] == features and (shape[1] != features or _last_dim_op(module))


def _conv_count(module: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in module.modules())


@dataclass(frozen=True)
class LayerInfo:
    """One layer of the catalogue, with its shape at the model's input size."""

    name: str
    kind: str  # "norm (pre-activation)" | "conv" | "block" | UNSUPPORTED_LAYOUT
    channels: int
    height: int
    width: int
    order: int  # position in forward order
    branch: str = ""  # Inception branch ("3x3", "pool", "concat", ...), "" outside one
    layout: str = "nchw"  # how the hooked tensor is laid out: "nchw" (more: see layer_reader)
    base: str = ""  # a derived layer (dictionary, directions): the catalogue layer it reads

    @property
    def tap(self) -> str:
        """The catalogue layer whose module is hooked (itself, or a derived layer's base)."""
        return self.base or self.name

    @property
    def supported(self) -> bool:
        """Whether units can live here (channels-first layout)."""
        return self.kind != UNSUPPORTED_LAYOUT

    def to_dict(self) -> dict:
        return asdict(self)


def tap_module(net: nn.Module, layer: str) -> tuple[nn.Module, str]:
    """The module to hook for ``layer`` and how: ``"pre"`` (forward pre-hook on the
    activation of a norm-act module) or ``"out"`` (forward hook on the module)."""
    try:
        module = net.get_submodule(layer)
    except AttributeError as exc:
        raise UnknownLayerError(f"unknown layer {layer!r}") from exc
    act = getattr(module, "act", None)
    if _is_norm(module) and isinstance(act, nn.Module):
        return act, "pre"
    return module, "out"


# torchvision GoogLeNet Inception module: child -> branch (index in the Sequential-like
# branch: BasicConv2d 0 is the reduce conv, 1 the conv of the branch; branch4.0 is a pool).
# branch3 is labelled 5x5 by its role although torchvision's conv there is 3x3.
_TV_BRANCHES = {
    ("branch1",): "1x1",
    ("branch2", "0"): "3x3 reduce", ("branch2", "1"): "3x3",
    ("branch3", "0"): "5x5 reduce", ("branch3", "1"): "5x5",
    ("branch4", "1"): "pool",
}


def layer_branch(net: nn.Module, layer: str) -> str:
    """The Inception branch ``layer`` belongs to ("" when it is in none): the net's own
    ``layer_branch`` (``inceptionv1``), else torchvision GoogLeNet's module layout."""
    own = getattr(net, "layer_branch", None)
    if callable(own):
        return str(own(layer))
    parts = layer.split(".")
    for i in range(len(parts)):
        module = net.get_submodule(".".join(parts[: i + 1]))
        if type(module).__name__ == "Inception" and hasattr(module, "branch4"):
            rest = tuple(parts[i + 1:])
            if not rest:
                return "concat"
            return _TV_BRANCHES.get(rest[:1], "") or _TV_BRANCHES.get(rest[:2], "")
    return ""


def _candidates(net: nn.Module) -> dict[str, str]:
    has_norm = any(_is_norm(m) for m in net.modules())
    out: dict[str, str] = {}
    for name, module in net.named_modules():
        if not name:
            continue
        own_kind = getattr(module, "unit_layer_kind", None)
        if isinstance(own_kind, str):
            out[name] = own_kind
        elif _is_norm(module):
            out[name] = "norm (pre-activation)"
        elif isinstance(module, nn.Conv2d):
            if not has_norm:
                out[name] = "conv"
        elif (
            not isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict)
            and _conv_count(module) > 1
        ):
            out[name] = "block"
    return out


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[int, list[LayerInfo]]] = (
    weakref.WeakKeyDictionary()
)


def list_layers(model: nn.Module) -> list[LayerInfo]:
    """Every layer a unit can live in, in forward order, with shapes at the input size."""
    from causalvis.models.zoo import CausalvisModel

    if not isinstance(model, CausalvisModel):
        raise TypeError("list_layers expects a CausalvisModel")
    cached = _CACHE.setdefault(model.net, {})
    if model.input_size in cached:
        return cached[model.input_size]
    candidates = _candidates(model.net)
    seen: dict[str, tuple[int, ...]] = {}
    handles = []

    def record(name: str):
        def hook(_mod, args, output=None):
            tensor = args[0] if output is None else output
            if isinstance(tensor, torch.Tensor) and tensor.dim() == 4 and name not in seen:
                seen[name] = tuple(tensor.shape)

        return hook

    for name in candidates:
        module, how = tap_module(model.net, name)
        if how == "pre":
            handles.append(module.register_forward_pre_hook(record(name)))
        else:
            handles.append(module.register_forward_hook(record(name)))
    try:
        x = torch.zeros(1, 3, model.input_size, model.input_size, device=model.device)
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    layers = []
    for order, (name, shape) in enumerate(seen.items()):
        if _channels_last(model.net.get_submodule(name), shape):
            layers.append(LayerInfo(name, UNSUPPORTED_LAYOUT, shape[3], shape[1], shape[2], order))
        else:
            layers.append(LayerInfo(name, candidates[name], shape[1], shape[2], shape[3], order,
                                    layer_branch(model.net, name)))
    cached[model.input_size] = layers
    return layers


@runtime_checkable
class DerivedLayer(Protocol):
    """Units computed from another layer's canonical map (directions, dictionary features).

    Registered on a model as ``model.derived[NAME]`` (an ``nn.Module``); ``NAME:J`` is then a
    unit like ``LAYER:CHANNEL``. ``forward`` maps the base layer's canonical map
    ``[N, C, H, W]`` to ``[N, features, H, W]`` position by position.
    """

    base: str
    features: int
    kind: str

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...


def _derived_infos(model: nn.Module, layers: list[LayerInfo]) -> list[LayerInfo]:
    """Catalogue entries of the derived layers registered on ``model`` (not cached: they
    may be attached after the catalogue was traced)."""
    derived = getattr(model, "derived", None)
    if not derived:
        return []
    by_name = {i.name: i for i in layers}
    out = []
    for name, layer in derived.items():
        base = by_name.get(layer.base)
        if base is None or not base.supported or base.base:
            raise UnknownLayerError(
                f"{name}: its layer {layer.base!r} is not a unit layer of model "
                f"{getattr(model, 'name', '?')} (see `causalvis layers`)"
            )
        out.append(LayerInfo(name, layer.kind, int(layer.features), base.height, base.width,
                             base.order, base.branch, base.layout, base.name))
    return out


def layer_reader(model: nn.Module, info: LayerInfo) -> Callable[[torch.Tensor], torch.Tensor]:
    """How to turn the tensor hooked at ``info.tap`` into the layer's canonical map
    ``[N, C, H, W]`` (channel = unit index), the one form every stage reads."""
    if info.base:
        base = layer_reader(model, resolve_layer(model, info.base))
        derived = model.derived[info.name]
        return lambda tensor: derived(base(tensor))
    if info.layout == "nchw":
        return _identity
    raise UnknownLayerError(f"layer {info.name!r}: unknown layout {info.layout!r}")


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def resolve_layer(model: nn.Module, layer: str) -> LayerInfo:
    """The catalogue entry for ``layer``, or a clear error naming close alternatives."""
    layers = list_layers(model)
    for info in [*layers, *_derived_infos(model, layers)]:
        if info.name == layer:
            if not info.supported:
                raise UnknownLayerError(
                    f"layer {layer!r} of model {getattr(model, 'name', '?')} outputs "
                    f"channels-last [N, H, W, C] tensors ({info.height}x{info.width}, "
                    f"{info.channels} channels), which causalvis cannot read as units yet: "
                    "pick a layer of another kind in `causalvis layers`"
                )
            return info
    close = [i.name for i in layers if i.name.startswith(layer.split(".")[0])][:8]
    hint = f"; e.g. {', '.join(close)}" if close else ""
    raise UnknownLayerError(
        f"unknown layer {layer!r} for model {getattr(model, 'name', '?')}"
        f" (see `causalvis layers`){hint}"
    )


def parse_unit(spec: str, model: nn.Module | None = None) -> tuple[str, int]:
    """Parse ``LAYER:CHANNEL``; with a model, check that both exist."""
    if ":" not in spec:
        raise UnknownLayerError(f"unit {spec!r} must look like LAYER:CHANNEL, e.g. blocks.3.2:17")
    layer, _, channel_text = spec.rpartition(":")
    try:
        channel = int(channel_text)
    except ValueError as exc:
        raise UnknownLayerError(
            f"unit {spec!r}: channel {channel_text!r} is not an integer"
        ) from exc
    if model is not None:
        info = resolve_layer(model, layer)
        if not 0 <= channel < info.channels:
            raise UnknownLayerError(
                f"unit {spec!r}: layer {layer} has channels 0..{info.channels - 1}"
            )
    return layer, channel
