"""Exact incremental occlusion inference for InceptionV1: torchvision's GoogLeNet and
our Lucent-layout ``inceptionv1`` (:func:`inceptionv1_chain`).

The net as an op list (:mod:`incremental_ops`; its plain modules as ``module`` ops, which
the engine, :mod:`occlusion_incremental`, checks against its allow-lists and whose conv +
BN pairs it folds: this module does not import it): ``transform_input`` (a per-channel
affine, pointwise) when set, the stem, and each ``Inception`` module as ``fork``, its four
branches separated by ``branch`` ops, ``cat`` (the branches' windows concatenated on the
box holding all of them). ``BasicConv2d`` is conv → BN → ``F.relu`` (called in its forward, no module: added here as an op). The
``MaxPool2d`` layers use ``ceil_mode`` (the engine's padding arithmetic models the extra
right / bottom cells). The aux classifiers run only in training mode (refused).

Layers: the ``BatchNorm2d`` layers (pre-ReLU, e.g. ``inception4a.branch2.1.bn``, the
paper2021 preset's units), ``BasicConv2d`` outputs (post-ReLU) and the ``Inception``
module outputs (``inception4a``). Matched by exact class path; anything else raises
:class:`Unsupported`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from causalvis.stimuli.incremental_ops import Unsupported, _Op, _path

GOOGLENETS = ("torchvision.models.googlenet.GoogLeNet",)
BASIC_CONV = "torchvision.models.googlenet.BasicConv2d"
INCEPTION = "torchvision.models.googlenet.Inception"
# the net's children in forward order (aux1 / aux2: training only; avgpool .. fc: after)
PARTS = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b",
         "maxpool3", "inception4a", "inception4b", "inception4c", "inception4d",
         "inception4e", "maxpool4", "inception5a", "inception5b")
TAIL = ("aux1", "aux2", "avgpool", "dropout", "fc")
BRANCHES = ("branch1", "branch2", "branch3", "branch4")


class _TransformInput(nn.Module):
    """GoogLeNet's ``transform_input`` (ImageNet normalization → the (x - 0.5) / 0.5 one
    its original weights expect), as torchvision computes it: ``x * a + b`` per channel."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        std, mean = (0.229, 0.224, 0.225), (0.485, 0.456, 0.406)
        self.register_buffer("a", torch.tensor([s / 0.5 for s in std], device=device))
        self.register_buffer("b", torch.tensor([(m - 0.5) / 0.5 for m in mean], device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.a.view(1, -1, 1, 1) + self.b.view(1, -1, 1, 1)


class _Builder:
    """The op list, with a ``mark`` after each wanted layer; done once none is left."""

    def __init__(self, layers: Sequence[str]) -> None:
        self.wanted = set(layers)
        self.ops: list[_Op] = []

    def result(self) -> list[_Op]:
        """The ops up to the last mark (the rest of a module after a unit inside one of its
        branches changes no requested layer)."""
        last = max(i for i, op in enumerate(self.ops) if op.kind == "mark")
        return self.ops[: last + 1]

    def emit(self, op: _Op) -> None:
        self.ops.append(op)
        if op.name in self.wanted and op.kind in ("module", "point", "conv", "cat"):
            self.ops.append(_Op("mark", name=op.name))
            self.wanted.discard(op.name)

    def basic_conv(self, m: nn.Module, where: str) -> None:
        """conv → BN (the engine folds them into one op named by the BN) → ReLU (named by
        the module)."""
        children = dict(m.named_children())
        if set(children) != {"conv", "bn"} or type(children["bn"]).__name__ != "BatchNorm2d":
            raise Unsupported(m, where, f"unknown parts {sorted(children)}")
        self.emit(_Op("module", children["conv"], f"{where}.conv"))
        self.emit(_Op("module", children["bn"], f"{where}.bn"))
        self.emit(_Op("point", nn.ReLU(), where))

    def part(self, m: nn.Module, where: str) -> None:
        """A ``BasicConv2d``, a max-pool, an ``Inception`` module or a ``Sequential``."""
        kind = _path(m)
        if kind == BASIC_CONV:
            self.basic_conv(m, where)
        elif kind == INCEPTION:
            self.inception(m, where)
        elif type(m).__name__ == "Sequential":
            for name, child in m.named_children():
                self.part(child, f"{where}.{name}")
        elif type(m).__name__ == "MaxPool2d":
            self.emit(_Op("module", m, where))
        else:
            raise Unsupported(m, where)

    def inception(self, m: nn.Module, where: str) -> None:
        children = dict(m.named_children())
        if set(children) != set(BRANCHES):
            raise Unsupported(m, where, f"unknown parts {sorted(children)}")
        self.ops.append(_Op("fork", name=where))
        for k, name in enumerate(BRANCHES):
            if k:
                self.ops.append(_Op("branch", name=where))
            self.part(children[name], f"{where}.{name}")
        self.emit(_Op("cat", name=where))


def googlenet_chain(net: nn.Module, layers: Sequence[str]) -> list[_Op]:
    """torchvision GoogLeNet up to the deepest of ``layers`` (see the module docstring),
    its modules left as ``module`` ops for the engine's allow-lists."""
    if net.training:
        raise Unsupported(net, "", "training mode (batch statistics, aux classifiers)")
    children = dict(net.named_children())
    odd = (set(children) - set(PARTS) - set(TAIL)) | (set(PARTS) - set(children))
    if odd:
        raise Unsupported(net, "", f"unknown or missing parts {sorted(odd)}")
    b = _Builder(layers)
    if net.transform_input:
        device = next(net.parameters()).device
        b.ops.append(_Op("point", _TransformInput(device), "transform_input"))
    for name in PARTS:
        b.part(children[name], name)
        if not b.wanted:
            return b.result()
    raise NotImplementedError(
        f"incremental inference: {sorted(b.wanted)} are not BatchNorm2d, BasicConv2d or "
        "Inception outputs of GoogLeNet")


# -- our Lucent-layout InceptionV1 (causalvis.models.inceptionv1): no BN, LRN in the stem --

INCEPTIONV1S = ("causalvis.models.inceptionv1.InceptionV1",)


class _PadConv(nn.Module):
    """A convolution on an input padded ``(before, after)`` on each spatial side
    (InceptionV1's stem: ``F.pad(x, (2, 3, 2, 3))`` then a 7x7/2 conv without padding)."""

    def __init__(self, conv: nn.Conv2d, before: int, after: int) -> None:
        super().__init__()
        self.weight, self.bias, self.groups = conv.weight, conv.bias, conv.groups
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, (0, 0)
        self.fixed_pads = (before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, a = self.fixed_pads
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (b, a, b, a)),
                                          self.weight, self.bias, self.stride, 0, 1,
                                          self.groups)


class _LRN(nn.Module):
    """The net's local response norm: across channels at each position (pointwise)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.lrn = net._lrn  # a bound method: the net's own band buffers and constants

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lrn(x)


def inceptionv1_chain(net: nn.Module, layers: Sequence[str]) -> list[_Op]:
    """Our InceptionV1 up to the deepest of ``layers``: its conv layers (pre-ReLU) and the
    mixed layers (the pre-ReLU concatenation). Its forward as ops: stem conv on the (2, 3)
    padded input, ReLU, the TF-'SAME' 3x3/2 max-pool (= ``ceil_mode`` without padding, at
    every size), LRN, ...; each mixed layer a fork of its four branches, ``cat``, ReLU."""
    from causalvis.models import inceptionv1 as v1  # noqa: PLC0415 (models: a lower layer)

    b = _Builder(layers)
    conv = lambda name: _Op("module", getattr(net, name), name)  # noqa: E731
    relu = lambda: b.emit(_Op("point", nn.ReLU(), ""))  # noqa: E731
    pool = lambda: b.emit(_Op("conv", nn.MaxPool2d(3, 2, ceil_mode=True), ""))  # noqa: E731
    stem = net.conv2d0_pre_relu_conv
    if stem.padding != (0, 0) or stem.kernel_size != (7, 7):
        raise Unsupported(stem, "conv2d0_pre_relu_conv", "not the 7x7 stem on a padded input")
    b.emit(_Op("conv", _PadConv(stem, 2, 3), "conv2d0_pre_relu_conv"))
    relu()
    pool()
    b.emit(_Op("point", _LRN(net), ""))
    for name in ("conv2d1_pre_relu_conv", "conv2d2_pre_relu_conv"):
        b.emit(conv(name))
        relu()
    b.emit(_Op("point", _LRN(net), ""))
    pool()
    for mixed in v1.MIXED:
        if not b.wanted:
            return b.result()
        b.ops.append(_Op("fork", name=mixed))
        for k, path in enumerate((("1x1",), ("3x3_bottleneck", "3x3"),
                                  ("5x5_bottleneck", "5x5"), ("pool", "pool_reduce"))):
            if k:
                b.ops.append(_Op("branch", name=mixed))
            for j, part in enumerate(path):
                if part == "pool":
                    b.emit(_Op("conv", nn.MaxPool2d(3, 1, 1), ""))
                    continue
                if j and path[0] != "pool":
                    relu()
                b.emit(conv(f"{mixed}_{part}_pre_relu_conv"))
        b.emit(_Op("cat", name=mixed))
        relu()
        if mixed in v1._POOL_AFTER:
            pool()
    if not b.wanted:
        return b.result()
    raise NotImplementedError(
        f"incremental inference: {sorted(b.wanted)} are not conv or mixed layers of "
        "InceptionV1")


# net class path -> its chain builder (dispatched from occlusion_incremental.chain)
CHAINS = {**dict.fromkeys(GOOGLENETS, googlenet_chain),
          **dict.fromkeys(INCEPTIONV1S, inceptionv1_chain)}
