"""Exact incremental occlusion inference (Krypton, Nakandala et al., SIGMOD 2019).

An occluding patch changes only a window of each feature map: the patch box, grown by
each convolution's reach and shrunk by its stride. This engine computes the unoccluded
feature maps once, then for each occluded image recomputes **only that window** at every
layer, reading the unchanged context around it from the stored maps; the unit activation
(spatial mean) is the base map's sum corrected by the window. The result equals the full
forward pass up to float rounding.

Supported (explicit allow-lists, :data:`NETS`, :data:`BLOCKS`, :data:`CONVS`,
:data:`POINTWISE`, matched by exact type before any attribute is read): timm
``EfficientNet`` / ``MobileNetV3`` nets (``conv_stem``, ``bn1``, ``blocks`` of
``DepthwiseSeparableConv`` / ``InvertedResidual`` without squeeze-excitation, which is
global and would change every position) up to a block output, e.g. the embedded ``lite0``,
EfficientNet-Lite, MobileNetV2. Derived layers (dictionary features, directions: pointwise over their base block's map)
are applied to the base and window maps, exactly. Any other module raises :class:`Unsupported` (a
``NotImplementedError`` naming the module type, logged once) and ``occlusion.engine =
"auto"`` falls back to the plain truncated sweep.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from causalvis.models import CausalvisModel
from causalvis.stimuli.occlusion import Occluder, Sweep

log = logging.getLogger("causalvis.occlusion")


@dataclass
class _Op:
    kind: str  # "conv" (spatial), "point" (elementwise / 1x1), "push", "add", "mark"
    module: nn.Module | None = None
    name: str = ""  # the layer a "mark" op reads out


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
# Modules acting on each position alone (per-channel affine, elementwise activations).
POINTWISE = (
    "Identity", "BatchNorm2d", "BatchNormAct2d", "Dropout", "DropPath",
    "ReLU", "ReLU6", "SiLU", "Swish", "Hardswish", "HardSwish", "Hardsigmoid", "HardSigmoid",
    "Sigmoid", "Tanh", "GELU", "Mish", "LeakyReLU", "PReLU", "ELU",
)


class Unsupported(NotImplementedError):
    """A module the incremental engine does not understand (named by its type)."""

    def __init__(self, module: nn.Module, where: str, why: str = "") -> None:
        self.module_type = type(module).__name__
        self.where = where or "the net"
        super().__init__(f"{self.module_type} at {self.where}" + (f" ({why})" if why else ""))


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


def _conv_or_point(m: nn.Module, where: str) -> _Op:
    """A spatial convolution op, a pointwise op, or :class:`Unsupported`."""
    name = type(m).__name__
    if name in CONVS and not (name == "Conv2d" and m.kernel_size == (1, 1)
                              and m.stride == (1, 1) and m.padding in ((0, 0), 0)):
        k, s, p = m.kernel_size, m.stride, m.padding
        if (len(set(k)) != 1 or len(set(s)) != 1 or m.dilation != (1, 1)
                or m.padding_mode != "zeros" or (isinstance(p, tuple) and len(set(p)) != 1)
                or isinstance(p, str) or any(True for _ in m.children())):
            raise Unsupported(m, where, "non-square, dilated or non-zero-padded convolution")
        return _Op("conv", m)
    _check_pointwise(m, where)
    return _Op("point", m)


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
    if type(net).__name__ not in NETS:
        raise Unsupported(net, "", "not a timm EfficientNet / MobileNetV3-style net")
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


_LOGGED: set[tuple[str, str]] = set()


def log_fallback(model: CausalvisModel, exc: NotImplementedError) -> None:
    """One log line per net type and unsupported module type (or reason): which module
    sends the sweep to ``full``."""
    key = (type(model.net).__name__, getattr(exc, "module_type", str(exc)))
    if key not in _LOGGED:
        _LOGGED.add(key)
        log.info("occlusion: the incremental engine does not support %s; using the full "
                 "sweep for it", exc)


def _pads(conv: nn.Conv2d, size: int) -> tuple[int, int]:
    """(before, after) padding of ``conv`` on a ``size`` input (timm 'same' or static)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    if type(conv).__name__ == "Conv2dSame":
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        return total // 2, total - total // 2
    p = conv.padding[0]
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


CL = torch.channels_last  # window copies move contiguous runs of w * C values


class IncrementalSweep:
    """Occlusion sweep of block-output layers with window-only recomputation (exact)."""

    def __init__(self, model: CausalvisModel, layers: Sequence[str]) -> None:
        self.model = model
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
        for op in self.ops:
            inputs.append(x if op.kind in ("conv", "push", "mark") else None)
            if op.kind == "push":
                stack.append(x)
            elif op.kind == "add":
                x = x + stack.pop()
            elif op.kind != "mark":
                x = op.module(x)
        return inputs, x

    @torch.inference_mode()
    def run(self, occluder: Occluder, batch_size: int = 64,
            on_batch: Callable[[int], None] | None = None) -> Sweep:
        """All channels of every layer at every position, like :func:`occlusion_sweep`."""
        m = self.model
        dev = m.device
        norm = lambda t: (t.float().div(255.0) - m.mean) / m.std  # noqa: E731
        base_img = torch.from_numpy(occluder.image).permute(2, 0, 1)[None].to(dev)
        inputs, _ = self._base(norm(base_img).contiguous(memory_format=CL))
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
        size = inputs[0].shape[-1]
        stack: list[tuple[torch.Tensor, np.ndarray, torch.Tensor]] = []
        out: dict[str, torch.Tensor] = {}
        for op, base_in in zip(self.ops, inputs, strict=True):
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
            elif op.kind == "add":
                s_win, s_off, s_base = stack.pop()
                h, w = win.shape[-2:]
                if s_win.shape[-2:] == win.shape[-2:] == s_base.shape[-2:]:
                    win = win + s_win  # both cover the whole map
                    continue
                inside = ((s_off >= off).all() and (s_off + s_win.shape[-1] <= off + h).all())
                if not inside:
                    raise RuntimeError("shortcut window outside the block's output window")
                win = win + _materialize(s_base, s_win, s_off, off, (h, w))
            else:
                win, off, size = self._conv(op.module, win, off, base_in, size)
        return out

    @staticmethod
    def _conv(conv: nn.Conv2d, win, off, base_in, size):
        k, s = conv.kernel_size[0], conv.stride[0]
        before, after = _pads(conv, size)
        out_size = (size + before + after - k) // s + 1
        h = win.shape[-1]
        # outputs touched by input rows [y, y + h): o*s - before in (y - k + 1, y + h - 1]
        lo = np.ceil((off + before - (k - 1)) / s).astype(np.int64)
        n_out = min((h - 1 + k - 1) // s + 1, out_size)
        o0 = np.clip(lo, 0, out_size - n_out)
        n_in = (n_out - 1) * s + k
        if h == size:  # the window already covers the whole map: a plain convolution
            ctx = F.pad(win, (before, after, before, after))
        else:
            padded = F.pad(base_in, (before, after, before, after)).contiguous(memory_format=CL)
            ctx = _materialize(padded, win, off + before, o0 * s, (n_in, n_in))
        out = F.conv2d(ctx, conv.weight, conv.bias, s, 0, 1, conv.groups)
        return out, o0, out_size
