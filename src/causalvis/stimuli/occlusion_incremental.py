"""Exact incremental occlusion inference (Krypton, Nakandala et al., SIGMOD 2019).

An occluding patch changes only a window of each feature map: the patch box, grown by
each convolution's reach and shrunk by its stride. This engine computes the unoccluded
feature maps once, then for each occluded image recomputes **only that window** at every
layer, reading the unchanged context around it from the stored maps; the unit activation
(spatial mean) is the base map's sum corrected by the window. The result equals the full
forward pass up to float rounding.

Supported: timm EfficientNet-style nets (``conv_stem``, ``bn1``, ``blocks`` of
``DepthwiseSeparableConv`` / ``InvertedResidual`` without squeeze-excitation, which is
global and would change every position) up to a block output; e.g.
the embedded ``lite0``. Anything else raises :class:`NotImplementedError` and the
occlusion stage falls back to the plain truncated sweep (``occlusion.engine = "auto"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from causalvis.models import CausalvisModel
from causalvis.stimuli.occlusion import Occluder, Sweep


@dataclass
class _Op:
    kind: str  # "conv" (spatial), "point" (elementwise / 1x1), "push", "add", "mark"
    module: nn.Module | None = None
    name: str = ""  # the layer a "mark" op reads out


def _is_pointwise(m: nn.Module) -> bool:
    if isinstance(m, nn.Conv2d):
        return m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding in ((0, 0), 0)
    return True


def _conv_or_point(m: nn.Module) -> _Op:
    if isinstance(m, nn.Conv2d) and not _is_pointwise(m):
        if m.dilation != (1, 1) or type(m).__name__ not in ("Conv2d", "Conv2dSame"):
            raise NotImplementedError(f"unsupported conv {m}")
        return _Op("conv", m)
    return _Op("point", m)


def _block_ops(block: nn.Module) -> list[_Op]:
    name = type(block).__name__
    if getattr(block, "conv_s2d", None) is not None or not isinstance(block.se, nn.Identity):
        raise NotImplementedError(f"{name} with space-to-depth or squeeze-excitation")
    if name == "InvertedResidual":
        inner = [block.conv_pw, block.bn1, block.conv_dw, block.bn2, block.aa, block.conv_pwl,
                 block.bn3]
    elif name == "DepthwiseSeparableConv":
        inner = [block.conv_dw, block.bn1, block.aa, block.conv_pw, block.bn2]
    else:
        raise NotImplementedError(f"unsupported block type {name}")
    ops = [_conv_or_point(m) for m in inner]
    return [_Op("push"), *ops, _Op("add")] if block.has_skip else ops


def chain(model: CausalvisModel, layers: Sequence[str]) -> list[_Op]:
    """The net as a flat op list up to the deepest of ``layers`` (block outputs, e.g.
    ``blocks.3.2``), with a ``mark`` op after each requested block."""
    net = model.net
    if not all(hasattr(net, a) for a in ("conv_stem", "bn1", "blocks")):
        raise NotImplementedError("incremental inference supports timm EfficientNet-style nets")
    wanted = set(layers)
    ops = [_conv_or_point(net.conv_stem), _Op("point", net.bn1)]
    for i, stage in enumerate(net.blocks):
        for j, block in enumerate(stage):
            ops += _block_ops(block)
            name = f"blocks.{i}.{j}"
            if name in wanted:
                ops.append(_Op("mark", name=name))
                wanted.discard(name)
            if not wanted:
                return ops
    raise NotImplementedError(f"incremental inference: {sorted(wanted)} are not block outputs")


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
        self.ops = chain(model, self.layers)

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
        p = occluder.grid.patch
        positions = occluder.positions
        results: dict[str, list[torch.Tensor]] = {name: [] for name in self.layers}
        for start in range(0, len(occluder), batch_size):
            idx = np.arange(start, min(len(occluder), start + batch_size))
            imgs = occluder.build_tensor(idx, dev)
            off = positions[idx].copy()
            win = torch.stack([imgs[b, :, y : y + p, x : x + p] for b, (y, x) in enumerate(off)])
            for name, acts in self._window_pass(norm(win).contiguous(memory_format=CL), off,
                                                inputs).items():
                results[name].append(acts.float().cpu())
            if on_batch is not None:
                on_batch(len(idx))
        ny, nx = occluder.grid.shape
        marks = {op.name: base for op, base in zip(self.ops, inputs, strict=True)
                 if op.kind == "mark"}
        return Sweep(
            occluder.grid,
            {n: torch.cat(v).numpy().reshape(ny, nx, -1).astype(np.float32)
             for n, v in results.items()},
            {n: marks[n].float().mean(dim=(2, 3))[0].cpu().numpy() for n in self.layers},
        )

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
                out[op.name] = self._means(base_in, win, off)
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
