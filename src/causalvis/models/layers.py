"""The layers a unit can live in, discovered by tracing one forward pass.

Which tensor a layer name stands for (the README's table of layer kinds):

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

A unit is ``LAYER:CHANNEL``; its activation is the spatial mean of that channel's
canonical map ``[N, C, H, W]`` (:func:`layer_reader`), whatever the hooked tensor's layout:

* ``nchw``: channels-first maps, read as they are;
* ``nhwc``: channels-last 4-D maps (ConvNeXt's and Swin's ``LayerNorm`` over the last
  dimension, Swin blocks), permuted to channels-first (kinds ``channels-last (...)``);
* ``tokens``: ``[N, T, C]`` token tensors of timm vision transformers (any net with an
  integer ``num_prefix_tokens``: ViT, DeiT, EVA, DINOv2, CLIP / SigLIP towers, ...), kinds
  ``tokens (block)`` (``blocks.i``, the residual stream), ``tokens (norm)`` (``norm1``,
  ``norm2``, ``norm``), ``tokens (linear)`` (``mlp.fc1`` = pre-GELU, ``mlp.fc2``,
  ``attn.proj``). Which tokens count is the model's ``tokens`` policy (``[model] tokens``):
  ``patch`` (default; the ``num_prefix_tokens`` class / register tokens dropped) reshaped
  to the square patch grid (``[N, C, T, 1]`` when not square), ``cls`` (the first token,
  1x1), ``all`` (every token, ``[N, C, T, 1]``). Catalogue sizes are the canonical map's.
"""

from __future__ import annotations

import math
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


UNSUPPORTED_LAYOUT = "unsupported layout"  # no catalogue layer has it today
TOKEN_LINEARS = ("fc1", "fc2", "proj")  # mlp.fc1 (pre-GELU), mlp.fc2, attn.proj


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
    kind: str  # "norm (pre-activation)" | "conv" | "block" | "tokens (block)" | ...
    channels: int
    height: int
    width: int
    order: int  # position in forward order
    branch: str = ""  # Inception branch ("3x3", "pool", "concat", ...), "" outside one
    layout: str = "nchw"  # how the hooked tensor is laid out: "nchw" | "nhwc" | "tokens"
    base: str = ""  # a derived layer (dictionary, directions): the catalogue layer it reads
    tokens: str = ""  # token layers: the policy the canonical map applies (patch/cls/all)

    @property
    def tap(self) -> str:
        """The catalogue layer whose module is hooked (itself, or a derived layer's base)."""
        return self.base or self.name

    @property
    def supported(self) -> bool:
        """Whether units can live here (every layout the readers understand)."""
        return self.kind != UNSUPPORTED_LAYOUT

    @property
    def is_block(self) -> bool:
        """A block output (``block``, ``tokens (block)``, ``channels-last (block)``): the
        default scan layers and perceptual-feature layers."""
        return self.kind == "block" or self.kind.endswith("(block)")

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


def token_net(net: nn.Module) -> bool:
    """A vision transformer whose layers carry ``[N, T, C]`` tokens (timm's convention: an
    integer ``num_prefix_tokens``, the class / register tokens before the patch tokens)."""
    n = getattr(net, "num_prefix_tokens", None)
    return isinstance(n, int) and not isinstance(n, bool)


def _transformer_block(name: str, module: nn.Module) -> bool:
    """An element of a ``blocks`` list holding a last-dim op (ViT / Swin / ConvNeXt block)."""
    parent, _, last = name.rpartition(".")
    return (last.isdigit() and parent.rpartition(".")[2] == "blocks"
            and not isinstance(module, nn.Sequential | nn.ModuleList | nn.ModuleDict)
            and any(_last_dim_op(m) for m in module.modules()))


def _candidates(net: nn.Module) -> dict[str, str]:
    has_norm = any(_is_norm(m) for m in net.modules())
    out: dict[str, str] = {}
    for name, module in net.named_modules():
        if not name:
            continue
        own_kind = getattr(module, "unit_layer_kind", None)
        if isinstance(own_kind, str):
            out[name] = own_kind
        elif _transformer_block(name, module):
            out[name] = "block"
        elif isinstance(module, nn.Linear) and name.rpartition(".")[2] in TOKEN_LINEARS:
            out[name] = "linear"  # kept for token layers only (3-D outputs)
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


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, list[LayerInfo]]] = (
    weakref.WeakKeyDictionary()
)


def list_layers(model: nn.Module) -> list[LayerInfo]:
    """Every layer a unit can live in, in forward order, with shapes at the input size."""
    from causalvis.models.zoo import CausalvisModel

    if not isinstance(model, CausalvisModel):
        raise TypeError("list_layers expects a CausalvisModel")
    cached = _CACHE.setdefault(model.net, {})
    policy = getattr(model, "tokens", "patch")
    key = (model.input_size, policy)
    if key in cached:
        return cached[key]
    candidates = _candidates(model.net)
    tokens = token_net(model.net)
    seen: dict[str, tuple[int, ...]] = {}
    handles = []

    def record(name: str):
        def hook(_mod, args, output=None):
            tensor = args[0] if output is None else output
            if (isinstance(tensor, torch.Tensor) and name not in seen
                    and (tensor.dim() == 4 or (tokens and tensor.dim() == 3))):
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
    prefix = int(getattr(model.net, "num_prefix_tokens", 0) or 0)
    for order, (name, shape) in enumerate(seen.items()):
        kind = candidates[name]
        if len(shape) == 3:
            h, w = _token_map_size(shape[1], prefix, policy)
            layers.append(LayerInfo(name, f"tokens ({_short(kind)})", shape[2], h, w, order,
                                    layout="tokens", tokens=policy))
        elif _channels_last(model.net.get_submodule(name), shape):
            layers.append(LayerInfo(name, f"channels-last ({_short(kind)})", shape[3],
                                    shape[1], shape[2], order, layout="nhwc"))
        elif kind != "linear":  # a Linear works on the last dim: never channels-first
            layers.append(LayerInfo(name, kind, shape[1], shape[2], shape[3], order,
                                    layer_branch(model.net, name)))
    cached[key] = layers
    return layers


def _short(kind: str) -> str:
    return "norm" if kind.startswith("norm") else kind


def _token_map_size(n_tokens: int, prefix: int, policy: str) -> tuple[int, int]:
    """(H, W) of a token layer's canonical map: the square patch grid, else T x 1."""
    if policy == "cls":
        return 1, 1
    if policy == "all":
        return n_tokens, 1
    patches = n_tokens - prefix
    side = math.isqrt(max(patches, 0))
    return (side, side) if side * side == patches else (patches, 1)


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
    if info.layout == "nhwc":
        return _nhwc
    if info.layout == "tokens":
        prefix = int(getattr(model.net, "num_prefix_tokens", 0) or 0)
        return _TokenReader(prefix, info.tokens or "patch")
    raise UnknownLayerError(f"layer {info.name!r}: unknown layout {info.layout!r}")


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _nhwc(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.permute(0, 3, 1, 2)


class _TokenReader:
    """``[N, T, C]`` tokens -> ``[N, C, H, W]`` under a token policy (module docstring).
    The grid follows the tokens actually seen, so inputs of another size read too."""

    def __init__(self, prefix: int, policy: str) -> None:
        self.prefix = prefix
        self.policy = policy

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        n, t, c = tensor.shape
        if self.policy == "cls":
            picked = tensor[:, :1]
        elif self.policy == "all":
            picked = tensor
        else:
            picked = tensor[:, self.prefix:]
        h, w = _token_map_size(picked.shape[1], 0, "patch") if self.policy == "patch" else (
            picked.shape[1], 1)
        return picked.transpose(1, 2).reshape(n, c, h, w)


def resolve_layer(model: nn.Module, layer: str) -> LayerInfo:
    """The catalogue entry for ``layer``, or a clear error naming close alternatives."""
    layers = list_layers(model)
    for info in [*layers, *_derived_infos(model, layers)]:
        if info.name == layer:
            if not info.supported:
                raise UnknownLayerError(
                    f"layer {layer!r} of model {getattr(model, 'name', '?')} has a tensor "
                    "layout causalvis cannot read as units: pick another layer in "
                    "`causalvis layers`"
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
