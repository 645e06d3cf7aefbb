"""timm ConvNeXt as an op list for the exact incremental occlusion engine.

``stem`` (a patchify ``Conv2d`` + ``LayerNorm2d``, or an overlapping conv stem), then per
stage ``downsample`` (``Identity`` or ``LayerNorm2d`` + a 2x2 stride-2 ``Conv2d``) and
``blocks`` of ``ConvNeXtBlock``. A block is ``push`` (its input window), the depthwise
``conv_dw`` (a spatial conv op: the window grows by 3 each side for a 7x7 kernel), then
everything after it — norm, MLP, layer scale ``gamma``, drop-path — acts on each position
alone, so it is one ``point`` op (:class:`_Tail`, computing it as timm does, channels-last
or ``conv_mlp``), then ``add`` of the identity shortcut.

Matched by exact class path before any attribute is read; refused (:class:`Unsupported`,
so ``auto`` takes the full sweep): ``GlobalResponseNormMlp`` (ConvNeXt-V2: global over the
map), a non-identity block shortcut, dilated (output-stride) nets, other norms / MLPs.
Layers: block outputs (``stages.1.blocks.0``), stage outputs (``stages.1``), the stem and
downsample norms (``stem.1``, ``stages.1.downsample.0``) and the blocks' per-position
internals the catalogue lists (``norm``, ``mlp``, ``mlp.fc1``, ``mlp.fc2``: a channels-last
one is read permuted to ``[N, C, H, W]``, as :func:`causalvis.models.layers.layer_reader`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from causalvis.stimuli.incremental_ops import POINTWISE, Unsupported, _Op, _path

NET = "timm.models.convnext.ConvNeXt"
STAGE = "timm.models.convnext.ConvNeXtStage"
BLOCK = "timm.models.convnext.ConvNeXtBlock"
NORMS_2D = ("timm.layers.norm.LayerNorm2d",)  # NCHW in, per position over channels
NORMS_CL = ("timm.layers.norm.LayerNorm",)  # last-dim LayerNorm on [N, H, W, C]
MLPS = ("timm.layers.mlp.Mlp",)  # GlobalResponseNormMlp is global: refused
MLP_PARTS = ("fc1", "act", "drop1", "norm", "fc2", "drop2")
BLOCK_PARTS = ("conv_dw", "norm", "mlp", "shortcut", "drop_path")
# block parts a layer mark may follow (catalogue names; "mlp" = the whole MLP)
INNER = ("norm", "mlp.fc1", "mlp.fc2", "mlp")


class _LastDim(nn.Module):
    """``module`` applied on ``[N, H, W, C]`` (timm's permute) to an NCHW map; a
    channels-last window permutes to a contiguous NHWC view, so this copies nothing."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class _Scale(nn.Module):
    """Layer scale, as ``ConvNeXtBlock.forward``: ``x.mul(gamma.reshape(1, -1, 1, 1))``."""

    def __init__(self, gamma: torch.Tensor) -> None:
        super().__init__()
        self.gamma = gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(self.gamma.reshape(1, -1, 1, 1))


class _Tail(nn.Sequential):
    """A run of a block's per-position steps after ``conv_dw`` (one ``point`` op)."""


def _check_linear(m: nn.Module, where: str, conv: bool) -> None:
    if conv:
        if not (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1)
                and m.padding in ((0, 0), 0) and m.groups == 1):
            raise Unsupported(m, where, "not a 1x1 convolution")
    elif type(m) is not nn.Linear:
        raise Unsupported(m, where)


def _check_elementwise(m: nn.Module, where: str) -> None:
    if type(m).__name__ not in POINTWISE or any(True for _ in m.children()):
        raise Unsupported(m, where)


def _norm_2d(m: nn.Module, where: str) -> _Op:
    if _path(m) not in NORMS_2D:
        raise Unsupported(m, where)
    return _Op("point", m, where)


def _stem_ops(stem: nn.Module) -> list[_Op]:
    """The stem's parts: convolutions (window arithmetic), elementwise acts, LayerNorm2d."""
    if type(stem) is not nn.Sequential:
        raise Unsupported(stem, "stem")
    ops = []
    for name, m in stem.named_children():
        where = f"stem.{name}"
        ops.append(_norm_2d(m, where) if _path(m) in NORMS_2D else _Op("module", m, where))
    return ops


def _block_steps(block: nn.Module, where: str) -> list[tuple[str, nn.Module]]:
    """(catalogue name after the step, step) for everything after ``conv_dw``."""
    children = dict(block.named_children())
    unknown = set(children) - set(BLOCK_PARTS)
    if unknown:
        raise Unsupported(block, where, f"unknown parts {sorted(unknown)}")
    if type(children.get("shortcut")) is not nn.Identity:
        raise Unsupported(children.get("shortcut", block), f"{where}.shortcut",
                          "only the identity shortcut")
    _check_elementwise(children.get("drop_path", nn.Identity()), f"{where}.drop_path")
    conv = bool(block.use_conv_mlp)
    norm, mlp = children["norm"], children["mlp"]
    if _path(norm) not in (NORMS_2D if conv else NORMS_CL):
        raise Unsupported(norm, f"{where}.norm")
    if _path(mlp) not in MLPS:
        raise Unsupported(mlp, f"{where}.mlp", "global response norm" if "GlobalResponse"
                          in type(mlp).__name__ else "")
    parts = dict(mlp.named_children())
    if set(parts) != set(MLP_PARTS):
        raise Unsupported(mlp, f"{where}.mlp", f"parts {sorted(parts)}")
    _check_linear(parts["fc1"], f"{where}.mlp.fc1", conv)
    _check_linear(parts["fc2"], f"{where}.mlp.fc2", conv)
    for p in ("act", "drop1", "norm", "drop2"):
        _check_elementwise(parts[p], f"{where}.mlp.{p}")
    if type(parts["norm"]) is not nn.Identity:
        raise Unsupported(parts["norm"], f"{where}.mlp.norm")

    wrap = (lambda m: m) if conv else _LastDim  # noqa: E731
    steps = [(f"{where}.norm", wrap(norm)),
             (f"{where}.mlp.fc1", wrap(parts["fc1"])),
             ("", wrap(nn.Sequential(parts["act"], parts["drop1"], parts["norm"]))),
             (f"{where}.mlp.fc2", wrap(parts["fc2"])),
             (f"{where}.mlp", wrap(parts["drop2"]))]
    if block.gamma is not None:
        steps.append(("", _Scale(block.gamma)))
    steps.append(("", children.get("drop_path", nn.Identity())))
    return steps


def _block_ops(block: nn.Module, where: str, wanted: set[str]) -> list[_Op]:
    """push, conv_dw, the per-position tail (split only where a layer is marked), add."""
    if _path(block) != BLOCK:
        raise Unsupported(block, where)
    if "conv_dw" not in dict(block.named_children()):
        raise Unsupported(block, where, "no conv_dw")
    ops = [_Op("push", name=where), _Op("module", block.conv_dw, f"{where}.conv_dw")]
    run: list[nn.Module] = []
    for name, step in _block_steps(block, where):
        run.append(step)
        if name in wanted:
            ops += [_Op("point", _Tail(*run), f"{where}.tail"), _Op("mark", name=name)]
            wanted.discard(name)
            run = []
    if run:
        ops.append(_Op("point", _Tail(*run), f"{where}.tail"))
    return [*ops, _Op("add", name=where)]


def convnext_chain(net: nn.Module, layers: Sequence[str]) -> list[_Op]:
    """A timm ConvNeXt up to the deepest of ``layers`` (see the module docstring), with a
    ``mark`` after each; :class:`Unsupported` for any part outside the allow-lists."""
    wanted = set(layers)
    ops: list[_Op] = []

    def take(new: list[_Op], marks: Sequence[str] = ()) -> bool:
        for op in new:
            ops.append(op)
            if op.kind == "point" and op.name in wanted and op.name not in marks:
                ops.append(_Op("mark", name=op.name))
                wanted.discard(op.name)
        for name in marks:
            if name in wanted:
                ops.append(_Op("mark", name=name))
                wanted.discard(name)
        return not wanted

    if take(_stem_ops(net.stem)):
        return ops
    for i, stage in enumerate(net.stages):
        where = f"stages.{i}"
        if _path(stage) != STAGE:
            raise Unsupported(stage, where)
        ds = stage.downsample
        if type(ds) is nn.Sequential:
            if len(ds) != 2:
                raise Unsupported(ds, f"{where}.downsample", "unknown parts")
            if take([_norm_2d(ds[0], f"{where}.downsample.0"),
                     _Op("module", ds[1], f"{where}.downsample.1")]):
                return ops
        elif type(ds) is not nn.Identity:
            raise Unsupported(ds, f"{where}.downsample")
        n = len(stage.blocks)
        for j, block in enumerate(stage.blocks):
            name = f"{where}.blocks.{j}"
            new = _block_ops(block, name, wanted)  # marks the block's inner layers
            if take(new, [name] + ([where] if j == n - 1 else [])):
                return ops
    raise NotImplementedError(
        f"incremental inference: {sorted(wanted)} are not ConvNeXt block, stage or norm layers")


CHAINS = {NET: convnext_chain}
