"""Exact incremental occlusion inference (Krypton, Nakandala et al., SIGMOD 2019).

An occluding patch changes only a window of each feature map: the patch box, grown by
each convolution's reach and shrunk by its stride. This engine computes the unoccluded
feature maps once, then for each occluded image recomputes **only that window** at every
layer, reading the unchanged context around it from the stored maps; the unit activation
(spatial mean) is the base map's sum corrected by the window. The result equals the full
forward pass up to float rounding.

Supported (explicit allow-lists, :data:`NETS`, :data:`BLOCKS`, :data:`RESNETS`,
:data:`RES_BLOCKS`, :data:`CONVS`, :data:`POOLS`, :data:`POINTWISE`, matched by exact type
before any attribute is read):

* timm ``EfficientNet`` / ``MobileNetV3`` nets (``conv_stem``, ``bn1``, ``blocks`` of
  ``DepthwiseSeparableConv`` / ``InvertedResidual`` without squeeze-excitation, which is
  global and would change every position) up to a block output, e.g. the embedded
  ``lite0``, EfficientNet-Lite, MobileNetV2;
* timm and torchvision ``ResNet`` nets (matched by module path: stem ``conv1`` — a deep
  ``Sequential`` stem too — ``bn1``, act, ``MaxPool2d`` — the window arithmetic of a
  convolution on a context padded with -inf — then ``BasicBlock`` / ``Bottleneck``): a
  block is ``push`` (its input window), the main path, ``swap`` + the ``downsample``
  shortcut (a strided 1x1 conv + BN on the pushed window) when it has one, ``add`` (the
  two windows summed on the box holding both), the post-add act. Layers: block outputs
  and the plain ``BatchNorm2d`` norm layers (pre-activation, the shortcut's too). Each
  ``Conv2d`` + ``BatchNorm2d`` pair is folded into one op (eval statistics). Not
  supported: SE / attention blocks, anti-aliasing, drop-block, the average-pool shortcut
  of ResNet-D (``resnet*d``, ``resnet10t``), dilation.
* torchvision ``GoogLeNet`` (:mod:`incremental_inception`): ``transform_input``, the
  stem and each ``Inception`` module as ``fork``, its four branches split by ``branch``
  ops, ``cat`` (the branch windows concatenated on channels, on the box holding them all,
  each materialized from its own base map as ``add`` does). ``MaxPool2d`` ``ceil_mode``
  is its extra right / bottom padding (:func:`_pads`). Layers: the ``BatchNorm2d`` layers
  (pre-ReLU, inside branches too) and the ``Inception`` module outputs.
* our Lucent-layout ``InceptionV1`` (same module): the same forks; its stem's asymmetric
  padding is an op's ``fixed_pads``, its TF-'SAME' pools ``ceil_mode`` pools, its LRN a
  pointwise op. Layers: the conv layers and the mixed (pre-ReLU concat) layers.
* timm ``ConvNeXt`` (:mod:`causalvis.stimuli.incremental_convnext`): stem, downsample
  (``LayerNorm2d`` + 2x2 stride-2 conv), blocks as push, the 7x7 depthwise conv, one
  pointwise op for everything after it (norm, MLP, layer scale), add. Layers: block and
  stage outputs, the stem / downsample norms, the blocks' ``norm`` / ``mlp`` / ``mlp.fc1``
  / ``mlp.fc2`` (channels-last ones read permuted, as the catalogue does). Not supported:
  ConvNeXt-V2's global response norm, dilation. The windows grow by 6 positions a block,
  so (224 px, a 40 % patch) they cover the map within stage 1: the saving is the early
  stages (docs/occlusion.md: 2.4-2.7x CPU at ``stages.0``, 1.1-1.4x at ``stages.3``).

Derived layers (dictionary features, directions: pointwise over their base layer's map)
are applied to the base and window maps, exactly. Any other module raises
:class:`Unsupported` (a ``NotImplementedError`` naming the module type, logged once) and
``occlusion.engine = "auto"`` falls back to the plain truncated sweep.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from causalvis.malloc import heap_allocations
from causalvis.models import CausalvisModel
from causalvis.models.fold import inference_model, is_folded_norm
from causalvis.stimuli import incremental_convnext, incremental_inception
from causalvis.stimuli.incremental_ops import POINTWISE, Unsupported, _Op, _path
from causalvis.stimuli.occlusion import Occluder, Sweep

log = logging.getLogger("causalvis.occlusion")
CL = torch.channels_last  # window copies move contiguous runs of w * C values


# -- what the engine understands: explicit allow-lists, checked by exact type name before
# any attribute is read (anything else falls back to the full sweep, never guessed) --------

# Nets whose forward is conv_stem → bn1 → blocks (timm's EfficientNet / MobileNetV3 classes).
NETS = ("EfficientNet", "MobileNetV3")
# Blocks and their children in forward order (timm ``_efficientnet_blocks``); an exact type
# match, so subclasses with other maths (e.g. CondConvResidual) are not taken for these.
BLOCKS: dict[str, tuple[str, ...]] = {
    "InvertedResidual": ("conv_pw", "bn1", "conv_dw", "bn2", "aa", "se", "conv_pwl", "bn3"),
    "DepthwiseSeparableConv": ("conv_dw", "bn1", "aa", "se", "conv_pw", "bn2"),
}
BLOCK_EXTRA = ("drop_path", "conv_s2d", "bn_s2d")  # identity in eval / must be absent
# Spatial convolutions the window arithmetic models (square kernel and stride, dilation 1).
CONVS = ("Conv2d", "Conv2dSame")


# ResNets (timm and torchvision, matched by module path and class name): the stem's parts
# in forward order, then ``layer1`` .. ``layer4`` of the blocks below.
RESNETS: dict[str, tuple[str, ...]] = {
    "timm.models.resnet.ResNet": ("conv1", "bn1", "act1", "maxpool"),
    "torchvision.models.resnet.ResNet": ("conv1", "bn1", "relu", "maxpool"),
}
# block -> (main path in forward order, after the residual add); torchvision reuses one
# ``relu`` module. ``downsample`` (the shortcut), ``se`` (must be absent: global) and
# ``drop_path`` (identity in eval) are handled apart.
RES_BLOCKS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "timm.models.resnet.BasicBlock": (
        ("conv1", "bn1", "drop_block", "act1", "aa", "conv2", "bn2"), ("act2",)),
    "timm.models.resnet.Bottleneck": (
        ("conv1", "bn1", "act1", "conv2", "bn2", "drop_block", "act2", "aa", "conv3", "bn3"),
        ("act3",)),
    "torchvision.models.resnet.BasicBlock": (("conv1", "bn1", "relu", "conv2", "bn2"),
                                             ("relu",)),
    "torchvision.models.resnet.Bottleneck": (
        ("conv1", "bn1", "relu", "conv2", "bn2", "relu", "conv3", "bn3"), ("relu",)),
}
RES_BLOCK_EXTRA = ("downsample", "se", "drop_path")
POOLS = ("MaxPool2d",)  # the window arithmetic of a convolution, context padded with -inf
# net class path -> op-list builder of the families kept in their own modules (they import
# only :mod:`incremental_ops`; their "module" ops go through the allow-lists here)
FAMILY_CHAINS = {**incremental_inception.CHAINS, **incremental_convnext.CHAINS}


def _check_pointwise(m: nn.Module, where: str) -> None:
    """``m`` and all its children act position by position (or raise :class:`Unsupported`)."""
    name = type(m).__name__
    if name == "Conv2d":
        if not (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding in ((0, 0), 0)):
            raise Unsupported(m, where, "not a 1x1 convolution")
        return
    if name not in POINTWISE:
        raise Unsupported(m, where)
    for child_name, child in m.named_children():
        _check_pointwise(child, f"{where}.{child_name}")


def _not_inplace(m: nn.Module) -> nn.Module:
    """``m`` itself, or a shallow copy computing out of place: an in-place activation
    would overwrite a stored map (a mark, a shortcut) or the window it reads."""
    if getattr(m, "inplace", False) is True:
        m = copy.copy(m)
        m.inplace = False
    return m


def _conv_or_point(m: nn.Module, where: str) -> _Op:
    """A spatial convolution (or max-pool) op, a pointwise op, or :class:`Unsupported`."""
    name = type(m).__name__
    if name in POOLS:
        k, s, p, d = (m.kernel_size, m.stride, m.padding, m.dilation)
        if not (isinstance(k, int) and isinstance(s, int) and isinstance(p, int)
                and d == 1 and not m.return_indices):
            raise Unsupported(m, where, "non-square or dilated pooling")
        return _Op("conv", m, where)
    if name in CONVS and not (name == "Conv2d" and m.kernel_size == (1, 1)
                              and m.stride == (1, 1) and m.padding in ((0, 0), 0)):
        k, s, p = m.kernel_size, m.stride, m.padding
        if (len(set(k)) != 1 or len(set(s)) != 1 or m.dilation != (1, 1)
                or m.padding_mode != "zeros" or (isinstance(p, tuple) and len(set(p)) != 1)
                or isinstance(p, str) or any(True for _ in m.children())):
            raise Unsupported(m, where, "non-square, dilated or non-zero-padded convolution")
        return _Op("conv", m, where)
    _check_pointwise(m, where)
    return _Op("point", _not_inplace(m), where)


def _seq_ops(m: nn.Module, where: str) -> list[_Op]:
    """A module, or an ``nn.Sequential`` of them (a deep stem, a ``downsample``), as ops."""
    if type(m).__name__ == "Sequential":
        return [op for name, child in m.named_children()
                for op in _seq_ops(child, f"{where}.{name}")]
    return [_conv_or_point(m, where)]


def _block_ops(block: nn.Module, where: str) -> list[_Op]:
    name = type(block).__name__
    if name not in BLOCKS:
        raise Unsupported(block, where)
    children = dict(block.named_children())
    unknown = set(children) - set(BLOCKS[name]) - set(BLOCK_EXTRA)
    if unknown:
        raise Unsupported(block, where, f"unknown parts {sorted(unknown)}")
    if getattr(block, "conv_s2d", None) is not None:
        raise Unsupported(block, where, "space-to-depth")
    if type(children.get("se")).__name__ != "Identity":
        raise Unsupported(children["se"], f"{where}.se", "squeeze-excitation is global")
    _check_pointwise(children.get("drop_path", nn.Identity()), f"{where}.drop_path")
    ops = [_conv_or_point(children[c], f"{where}.{c}") for c in BLOCKS[name]]
    return [_Op("push"), *ops, _Op("add")] if getattr(block, "has_skip", False) else ops


def chain(model: CausalvisModel, layers: Sequence[str]) -> list[_Op]:
    """The net as a flat op list up to the deepest of ``layers`` (block outputs, e.g.
    ``blocks.3.2``), with a ``mark`` op after each requested block; :class:`Unsupported`
    (a ``NotImplementedError``) for any module outside the allow-lists."""
    net = model.net
    if _path(net) in RESNETS:
        return _resnet_chain(net, layers)
    if _path(net) in FAMILY_CHAINS:  # GoogLeNet, InceptionV1, ConvNeXt: own modules
        raw = FAMILY_CHAINS[_path(net)](net, layers)
        return _fold_bn([_conv_or_point(op.module, op.name) if op.kind == "module" else op
                         for op in raw])
    if type(net).__name__ not in NETS:
        raise Unsupported(net, "", "not a timm EfficientNet / MobileNetV3 or ResNet net")
    wanted = set(layers)
    ops = [_conv_or_point(net.conv_stem, "conv_stem"), _conv_or_point(net.bn1, "bn1")]
    for i, stage in enumerate(net.blocks):
        if type(stage).__name__ != "Sequential":
            raise Unsupported(stage, f"blocks.{i}")
        for j, block in enumerate(stage):
            name = f"blocks.{i}.{j}"
            ops += _block_ops(block, name)
            if name in wanted:
                ops.append(_Op("mark", name=name))
                wanted.discard(name)
            if not wanted:
                return ops
    raise NotImplementedError(f"incremental inference: {sorted(wanted)} are not block outputs")


def _res_block_ops(block: nn.Module, where: str) -> list[_Op]:
    """push, the main path, [swap, the ``downsample`` shortcut], add, the post-add act."""
    kind = _path(block)
    if kind not in RES_BLOCKS:
        raise Unsupported(block, where)
    main, post = RES_BLOCKS[kind]
    children = dict(block.named_children())
    unknown = set(children) - set(main) - set(post) - set(RES_BLOCK_EXTRA)
    if unknown:
        raise Unsupported(block, where, f"unknown parts {sorted(unknown)}")
    if children.get("se") is not None:
        raise Unsupported(children["se"], f"{where}.se", "attention is global")
    _check_pointwise(children.get("drop_path", nn.Identity()), f"{where}.drop_path")
    ops = [_Op("push", name=where)]
    ops += [op for c in main for op in _seq_ops(children[c], f"{where}.{c}")]
    if children.get("downsample") is not None:
        ops.append(_Op("swap", name=where))
        ops += _seq_ops(children["downsample"], f"{where}.downsample")
    ops.append(_Op("add", name=where))
    ops += [op for c in post for op in _seq_ops(children[c], f"{where}.{c}")]
    return ops


class _FoldedConv(nn.Module):
    """A ``Conv2d`` with the ``BatchNorm2d`` that follows it folded in (eval statistics):
    one op instead of two on every window, equal up to float rounding."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        weight = (conv.weight * scale.view(-1, 1, 1, 1)).detach()
        self.weight = nn.Parameter(weight.contiguous(memory_format=CL), requires_grad=False)
        self.bias = nn.Parameter(((bias - bn.running_mean) * scale + bn.bias).detach(),
                                 requires_grad=False)
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, 1, self.groups)


def _fold_bn(ops: list[_Op]) -> list[_Op]:
    """Each plain ``Conv2d`` op directly followed by a plain ``BatchNorm2d`` op (affine,
    tracking statistics) becomes one :class:`_FoldedConv` op named by the norm (so a mark
    of the norm layer reads its output)."""
    out: list[_Op] = []
    i = 0
    while i < len(ops):
        op = ops[i]
        nxt = ops[i + 1] if i + 1 < len(ops) else None
        if (op.kind in ("conv", "point") and type(op.module).__name__ == "Conv2d"
                and nxt is not None and type(nxt.module).__name__ == "BatchNorm2d"
                and nxt.module.affine and nxt.module.running_var is not None
                and not is_folded_norm(nxt.module)):
            out.append(_Op(op.kind, _FoldedConv(op.module, nxt.module), nxt.name))
            i += 2
            continue
        out.append(op)
        i += 1
    return out


def _resnet_chain(net: nn.Module, layers: Sequence[str]) -> list[_Op]:
    """A timm / torchvision ResNet up to the deepest of ``layers``: block outputs
    (``layer2.1``) and plain ``BatchNorm2d`` norm layers (``bn1``, ``layer2.1.bn2``,
    ``layer2.0.downsample.1``), each followed by its ``mark``."""
    wanted = set(layers)
    parts = dict(net.named_children())
    ops: list[_Op] = []

    def add(new: list[_Op], block: str | None = None) -> bool:
        for op in _fold_bn(new):
            ops.append(op)
            if (op.kind in ("conv", "point") and op.name in wanted
                    and type(op.module).__name__ in ("BatchNorm2d", "_FoldedConv")):
                ops.append(_Op("mark", name=op.name))
                wanted.discard(op.name)
        if block in wanted:
            ops.append(_Op("mark", name=block))
            wanted.discard(block)
        return not wanted

    for name in RESNETS[_path(net)]:
        if name not in parts:
            raise Unsupported(net, name, "missing stem part")
        if add(_seq_ops(parts[name], name)):
            return ops
    for i in range(1, 5):
        stage = parts.get(f"layer{i}")
        if type(stage).__name__ != "Sequential":
            raise Unsupported(stage if stage is not None else net, f"layer{i}")
        for j, block in enumerate(stage):
            name = f"layer{i}.{j}"
            if add(_res_block_ops(block, name), name):
                return ops
    raise NotImplementedError(
        f"incremental inference: {sorted(wanted)} are not block outputs or BatchNorm2d layers")


_LOGGED: set[tuple[str, str]] = set()


def log_fallback(model: CausalvisModel, exc: NotImplementedError) -> None:
    """One log line per net type and unsupported module type (or reason): which module
    sends the sweep to ``full``."""
    key = (type(model.net).__name__, getattr(exc, "module_type", str(exc)))
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("occlusion: the incremental engine does not support %s; using the full "
                 "sweep for it", exc)


def _geometry(m: nn.Module) -> tuple[int, int, int]:
    """(kernel, stride, static padding) of a convolution or a max-pool op."""
    if type(m).__name__ in POOLS:
        return m.kernel_size, m.stride, m.padding
    return m.kernel_size[0], m.stride[0], m.padding[0]


def _pads(conv: nn.Module, size: int) -> tuple[int, int]:
    """(before, after) padding of ``conv`` on a ``size`` input (timm 'same' or static; a
    ``ceil_mode`` max-pool: the extra right / bottom cells its last window reaches; an op
    with ``fixed_pads``: those)."""
    k, s, p = _geometry(conv)
    fixed = getattr(conv, "fixed_pads", None)  # a conv on an explicitly padded input
    if fixed is not None:
        return fixed
    if type(conv).__name__ == "Conv2dSame":
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2
    if getattr(conv, "ceil_mode", False):
        out = -(-(size + 2 * p - k) // s) + 1
        if (out - 1) * s >= size + p:  # PyTorch: the last window must start inside
            out -= 1
        return p, max(p, (out - 1) * s + k - size - p)
    return p, p


def _materialize(base: torch.Tensor, win: torch.Tensor, off: np.ndarray, start: np.ndarray,
                 size: tuple[int, int]) -> torch.Tensor:
    """Per image b: ``base[0, :, r:r+h, c:c+w]`` with ``(r, c) = start[b]``, overwritten by
    the changed window ``win[b]`` (top-left ``off[b]`` in base coordinates) where they
    overlap. Two block copies per image (cheaper than element gathers)."""
    h, w = size
    n, wh, ww = win.shape[0], win.shape[-2], win.shape[-1]
    out = torch.empty((n, base.shape[1], h, w), dtype=base.dtype, device=base.device,
                      memory_format=torch.channels_last)
    for b in range(n):
        r, c = int(start[b, 0]), int(start[b, 1])
        out[b] = base[0, :, r : r + h, c : c + w]
        y0, x0 = int(off[b, 0]), int(off[b, 1])
        ty0, tx0 = max(y0, r), max(x0, c)
        ty1, tx1 = min(y0 + wh, r + h), min(x0 + ww, c + w)
        if ty1 > ty0 and tx1 > tx0:
            out[b, :, ty0 - r : ty1 - r, tx0 - c : tx1 - c] = win[
                b, :, ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0
            ]
    return out



class IncrementalSweep:
    """Occlusion sweep of block-output layers with window-only recomputation (exact)."""

    def __init__(
        self, model: CausalvisModel, layers: Sequence[str], *, fold_norms: bool | None = None
    ) -> None:
        # the network ActivationProbe measures (models.fold): the plain sweep and this
        # engine compute the same numbers up to float rounding
        model = self.model = inference_model(model, fold_norms)
        self.layers = list(dict.fromkeys(layers))
        # a derived layer (dictionary, directions) is pointwise over its base block's map:
        # applied to the base and window maps it gives the exact occluded features
        derived = getattr(model, "derived", {})
        self.derived = {n: derived[n] for n in self.layers if n in derived}
        self.tap = {n: self.derived[n].base if n in self.derived else n for n in self.layers}
        try:
            self.ops = chain(model, list(dict.fromkeys(self.tap.values())))
        except NotImplementedError as exc:
            log_fallback(model, exc)
            raise

    @torch.inference_mode()
    def _base(self, x: torch.Tensor) -> tuple[list[torch.Tensor | None], list[torch.Tensor]]:
        """Full maps on the unoccluded input: the input of every op (conv / push: the
        context; mark: the layer's map)."""
        inputs: list[torch.Tensor | None] = []
        stack: list[torch.Tensor] = []
        forks: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        for op in self.ops:
            inputs.append(x if op.kind != "point" else None)
            if op.kind == "push":
                stack.append(x)
            elif op.kind == "fork":
                forks.append((x, []))
            elif op.kind == "branch":
                forks[-1][1].append(x)
                x = forks[-1][0]
            elif op.kind == "cat":
                x = torch.cat([*forks.pop()[1], x], 1)
            elif op.kind == "swap":
                x, stack[-1] = stack[-1], x
            elif op.kind == "add":
                x = x + stack.pop()
            elif op.kind != "mark":
                x = op.module(x)
        return inputs, x

    def run(self, occluder: Occluder, batch_size: int = 64,
            on_batch: Callable[[int], None] | None = None) -> Sweep:
        """All channels of every layer at every position, like :func:`occlusion_sweep`."""
        # as ActivationProbe: channels-last weights for CL windows. Outside inference mode:
        # weights converted there would become inference tensors, and a later feature
        # visualization on the same (shared) model could not backpropagate through them.
        self.model.to(memory_format=CL)
        with heap_allocations(self.model.device.type == "cpu"):  # no fresh pages per batch
            return self._run(occluder, batch_size, on_batch)

    @torch.inference_mode()
    def _run(self, occluder: Occluder, batch_size: int,
             on_batch: Callable[[int], None] | None) -> Sweep:
        m = self.model
        dev = m.device
        norm = lambda t: (t.float().div(255.0) - m.mean) / m.std  # noqa: E731
        base_img = torch.from_numpy(occluder.image).permute(2, 0, 1)[None].to(dev)
        inputs, _ = self._base(norm(base_img).contiguous(memory_format=CL))
        self._padded: dict[int, torch.Tensor] = {}  # each conv's padded context, per query
        # the derived layers' unoccluded maps, computed once per query
        self._derived_base = {n: m for n, m in self._marks(inputs).items() if n in self.derived}
        positions = occluder.positions
        results: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        for start in range(0, len(occluder), batch_size):
            idx = np.arange(start, min(len(occluder), start + batch_size))
            off = positions[idx].copy()
            win = occluder.build_patches(idx, dev)  # the changed pixels alone
            for name, acts in self._window_pass(norm(win).contiguous(memory_format=CL), off,
                                                inputs).items():
                results[name].append(acts.float().cpu())
            if on_batch is not None:
                on_batch(len(idx))
        ny, nx = occluder.grid.shape
        return Sweep(
            occluder.grid,
            {n: torch.cat(v).numpy().reshape(ny, nx, -1).astype(np.float32)
             for n, v in results.items()},
            {n: base.float().mean(dim=(2, 3))[0].cpu().numpy()
             for n, base in self._marks(inputs).items()},
            engine="incremental",
        )

    def _marks(self, inputs) -> dict[str, torch.Tensor]:
        """Each requested layer's unoccluded map (a derived layer: applied to its base's)."""
        marks = {op.name: base for op, base in zip(self.ops, inputs, strict=True)
                 if op.kind == "mark"}
        return {n: self.derived[n](marks[t]) if n in self.derived else marks[t]
                for n, t in self.tap.items()}

    @staticmethod
    def _means(base: torch.Tensor, win: torch.Tensor, off: np.ndarray) -> torch.Tensor:
        """Spatial means of the occluded maps: base sum, minus the base under the window,
        plus the window."""
        region = _materialize(base, win[:, :, :0, :0], off, off, win.shape[-2:])
        total = base.sum(dim=(2, 3)) - region.sum(dim=(2, 3)) + win.sum(dim=(2, 3))
        return total / (base.shape[2] * base.shape[3])

    def _window_pass(self, win: torch.Tensor, off: np.ndarray, inputs) -> dict[str, torch.Tensor]:
        stack: list[tuple[torch.Tensor, np.ndarray, torch.Tensor]] = []
        forks: list[tuple[tuple[torch.Tensor, np.ndarray], list[tuple]]] = []
        out: dict[str, torch.Tensor] = {}
        for i, (op, base_in) in enumerate(zip(self.ops, inputs, strict=True)):
            if op.kind == "mark":
                for name, tap in self.tap.items():
                    if tap != op.name:
                        continue
                    if name in self.derived:
                        out[name] = self._means(self._derived_base[name], self.derived[name](win),
                                                off)
                    else:
                        out[name] = self._means(base_in, win, off)
            elif op.kind == "point":
                win = op.module(win)
            elif op.kind == "push":
                stack.append((win, off, base_in))
            elif op.kind == "swap":
                s_win, s_off, _ = stack.pop()
                stack.append((win, off, base_in))
                win, off = s_win, s_off
            elif op.kind == "add":
                win, off = self._add(win, off, base_in, *stack.pop())
            elif op.kind == "fork":
                forks.append(((win, off), []))
            elif op.kind == "branch":
                forks[-1][1].append((win, off, base_in))
                win, off = forks[-1][0]
            elif op.kind == "cat":
                win, off = self._cat([*forks.pop()[1], (win, off, base_in)])
            else:
                win, off = self._conv(op.module, win, off, base_in, i)
        return out

    @staticmethod
    def _add(win, off, base, s_win, s_off, s_base):
        """The sum of two changed windows (their maps' bases ``base``, ``s_base``) on the
        smallest box holding both: the other's window placed into the bigger one's box when
        it lies inside, else both materialized on their union."""
        h, sh = win.shape[-1], s_win.shape[-1]
        if h == sh == base.shape[-1]:
            return win + s_win, off  # both cover the whole map
        if (s_off >= off).all() and (s_off + sh <= off + h).all():
            return win + _materialize(s_base, s_win, s_off, off, (h, h)), off
        if (off >= s_off).all() and (off + h <= s_off + sh).all():
            return s_win + _materialize(base, win, off, s_off, (sh, sh)), s_off
        size = base.shape[-1]
        lo = np.minimum(off, s_off)
        n = min(int((np.maximum(off + h, s_off + sh) - lo).max()), size)
        start = np.clip(lo, 0, size - n)
        return (_materialize(base, win, off, start, (n, n))
                + _materialize(s_base, s_win, s_off, start, (n, n))), start

    @staticmethod
    def _cat(parts: list[tuple[torch.Tensor, np.ndarray, torch.Tensor]]):
        """Branch windows ``(win, off, base map)`` concatenated on channels, each placed on
        the smallest box holding all of them (one that already is that box as it is)."""
        size = parts[0][2].shape[-1]
        if all(w.shape[-1] == size for w, _, _ in parts):
            return torch.cat([w for w, _, _ in parts], 1), parts[0][1]
        lo = np.minimum.reduce([o for _, o, _ in parts])
        hi = np.maximum.reduce([o + w.shape[-1] for w, o, _ in parts])
        n = min(int((hi - lo).max()), size)
        start = np.clip(lo, 0, size - n)
        return torch.cat([w if w.shape[-1] == n and (o == start).all()
                          else _materialize(b, w, o, start, (n, n)) for w, o, b in parts],
                         1), start

    def _conv(self, conv: nn.Module, win, off, base_in, i: int):
        size = base_in.shape[-1]
        k, s, _ = _geometry(conv)
        before, after = _pads(conv, size)
        pool = type(conv).__name__ in POOLS
        fill = -math.inf if pool else 0.0  # max-pool padding never wins
        out_size = (size + before + after - k) // s + 1
        h = win.shape[-1]
        # outputs touched by input rows [y, y + h): o*s - before in (y - k + 1, y + h - 1]
        lo = np.ceil((off + before - (k - 1)) / s).astype(np.int64)
        n_out = min((h - 1 + k - 1) // s + 1, out_size)
        o0 = np.clip(lo, 0, out_size - n_out)
        n_in = (n_out - 1) * s + k
        pads = (before, after, before, after)
        if h == size:  # the window already covers the whole map: a plain convolution
            ctx = F.pad(win, pads, value=fill)
        else:
            padded = self._padded.get(i)
            if padded is None:  # once per query, not per batch
                padded = F.pad(base_in, pads, value=fill).contiguous(memory_format=CL)
                self._padded[i] = padded
            ctx = _materialize(padded, win, off + before, o0 * s, (n_in, n_in))
        if pool:
            return F.max_pool2d(ctx, k, s, 0), o0
        return F.conv2d(ctx, conv.weight, conv.bias, s, 0, 1, conv.groups), o0
