"""Lucid's InceptionV1 (the paper's network), in the layout of Lucent's model zoo.

The paper's units live in this network, not in torchvision's GoogLeNet (which has batch
norm and other widths), so it is rebuilt here from its published description: a 7x7/2
stem conv (``conv2d0``), max pool, local response norm, 1x1 (``conv2d1``) and 3x3
(``conv2d2``) convs, local response norm, max pool, then nine mixed layers
``mixed3a`` … ``mixed5b`` of four branches each (1x1; 1x1 bottleneck -> 3x3; 1x1
bottleneck -> 5x5; 3x3/1 max pool -> 1x1 pool projection), max pools before ``mixed4a``
and ``mixed5a``, global average pool and a 1008-way linear layer. Every conv has a bias and
is followed by a ReLU.

Parameter names are Lucent's (``mixed3a_3x3_pre_relu_conv.weight``, ...,
``softmax2_pre_activation_matmul.bias``), so a state dict saved from Lucent's
``inceptionv1`` loads with ``strict=True``.

Unit layers: the layer ``mixed3a`` (etc.) is the **pre-ReLU concatenation** of the four
branch conv outputs (channel order 1x1, 3x3, 5x5, pool as in Lucid), so the paper's unit
``mixed3a:189`` is channel 189 of that tensor; ``ReLU(concat) = concat(ReLU)``, so the
network computes exactly what Lucent's does. The branch convs are layers too (their
outputs are pre-ReLU, the ReLUs are functional).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# name: (in, 1x1, 3x3 bottleneck, 3x3, 5x5 bottleneck, 5x5, pool projection)
MIXED: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "mixed3a": (192, 64, 96, 128, 16, 32, 32),
    "mixed3b": (256, 128, 128, 192, 32, 96, 64),
    "mixed4a": (480, 192, 96, 204, 16, 48, 64),
    "mixed4b": (508, 160, 112, 224, 24, 64, 64),
    "mixed4c": (512, 128, 128, 256, 24, 64, 64),
    "mixed4d": (512, 112, 144, 288, 32, 64, 64),
    "mixed4e": (528, 256, 160, 320, 32, 128, 128),
    "mixed5a": (832, 256, 160, 320, 48, 128, 128),
    "mixed5b": (832, 384, 192, 384, 48, 128, 128),
}
# Mixed layers followed by a 3x3/2 max pool.
_POOL_AFTER = {"mixed3b", "mixed4e"}
# Branch conv name suffix -> the branch label of `causalvis layers`.
_BRANCH_SUFFIX = {
    "_1x1_pre_relu_conv": "1x1",
    "_3x3_bottleneck_pre_relu_conv": "3x3 reduce",
    "_3x3_pre_relu_conv": "3x3",
    "_5x5_bottleneck_pre_relu_conv": "5x5 reduce",
    "_5x5_pre_relu_conv": "5x5",
    "_pool_reduce_pre_relu_conv": "pool",
}
# Lucid's LRN constants (as F.local_response_norm takes them).
_LRN = {"size": 9, "alpha": 9.99999974738e-05, "beta": 0.5, "k": 1.0}


def _lrn_band(channels: int, size: int = _LRN["size"]) -> torch.Tensor:
    """1x1-conv weight that averages x**2 over the ``size`` neighbouring channels with
    zero padding, as ``F.local_response_norm`` does (there via a slow avg_pool3d)."""
    idx = torch.arange(channels)
    lo, hi = size // 2, (size - 1) // 2
    diff = idx[None, :] - idx[:, None]
    band = ((diff >= -lo) & (diff <= hi)).float() / size
    return band[:, :, None, None]


def branch_widths(layer: str) -> dict[str, int]:
    """Channel count of each branch of a mixed layer's concatenation, in channel order."""
    _, w1, _, w3, _, w5, wp = MIXED[layer]
    return {"1x1": w1, "3x3": w3, "5x5": w5, "pool": wp}


def branch_ranges(layer: str) -> dict[str, range]:
    """The channel range of each branch inside the concatenated mixed layer."""
    out, start = {}, 0
    for branch, width in branch_widths(layer).items():
        out[branch] = range(start, start + width)
        start += width
    return out


class PreReluConcat(nn.Module):
    """The concatenation of a mixed layer's pre-ReLU branch outputs: a parameter-free
    module so the layer catalogue and probes can hook it by name."""

    unit_layer_kind = "concat (pre-activation)"

    def forward(self, *branches: torch.Tensor) -> torch.Tensor:
        return torch.cat(branches, dim=1)


def _conv(cin: int, cout: int, k: int, stride: int = 1, pad: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=k, stride=stride, padding=pad, bias=True)


def _maxpool_same_tf(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's 'SAME' 3x3/2 max pool on even sizes: pad right/bottom by one."""
    return F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, stride=2)


class InceptionV1(nn.Module):
    """Lucid's InceptionV1 with Lucent's parameter names; returns the 1008 logits."""

    def __init__(self, num_classes: int = 1008) -> None:
        super().__init__()
        # Registration order = Lucent's, so state dicts list keys in the same order.
        self.conv2d0_pre_relu_conv = _conv(3, 64, 7, stride=2)
        self.conv2d1_pre_relu_conv = _conv(64, 64, 1)
        self.conv2d2_pre_relu_conv = _conv(64, 192, 3, pad=1)
        for name, (cin, w1, r3, w3, r5, w5, wp) in MIXED.items():
            setattr(self, f"{name}_1x1_pre_relu_conv", _conv(cin, w1, 1))
            setattr(self, f"{name}_3x3_bottleneck_pre_relu_conv", _conv(cin, r3, 1))
            setattr(self, f"{name}_5x5_bottleneck_pre_relu_conv", _conv(cin, r5, 1))
            setattr(self, f"{name}_pool_reduce_pre_relu_conv", _conv(cin, wp, 1))
            setattr(self, f"{name}_3x3_pre_relu_conv", _conv(r3, w3, 3, pad=1))
            setattr(self, f"{name}_5x5_pre_relu_conv", _conv(r5, w5, 5, pad=2))
        self.softmax2_pre_activation_matmul = nn.Linear(1024, num_classes)
        for name in MIXED:
            setattr(self, name, PreReluConcat())
        # Not parameters: never in the state dict (Lucent's key layout stays exact).
        self.register_buffer("lrn_band64", _lrn_band(64), persistent=False)
        self.register_buffer("lrn_band192", _lrn_band(192), persistent=False)

    def _lrn(self, x: torch.Tensor) -> torch.Tensor:
        band = self.lrn_band64 if x.shape[1] == 64 else self.lrn_band192
        div = F.conv2d(x * x, band.to(x.dtype))
        return x / (div * _LRN["alpha"] + _LRN["k"]).pow(_LRN["beta"])

    def _mixed(self, name: str, x: torch.Tensor) -> torch.Tensor:
        conv = lambda suffix: getattr(self, f"{name}_{suffix}_pre_relu_conv")  # noqa: E731
        b1 = conv("1x1")(x)
        b3 = conv("3x3")(F.relu(conv("3x3_bottleneck")(x)))
        b5 = conv("5x5")(F.relu(conv("5x5_bottleneck")(x)))
        bp = conv("pool_reduce")(F.max_pool2d(x, 3, stride=1, padding=1))
        return F.relu(getattr(self, name)(b1, b3, b5, bp))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv2d0_pre_relu_conv(F.pad(x, (2, 3, 2, 3))))
        x = self._lrn(_maxpool_same_tf(x))
        x = F.relu(self.conv2d1_pre_relu_conv(x))
        x = F.relu(self.conv2d2_pre_relu_conv(x))
        x = _maxpool_same_tf(self._lrn(x))
        for name in MIXED:
            x = self._mixed(name, x)
            if name in _POOL_AFTER:
                x = _maxpool_same_tf(x)
        # Lucent pools 7x7 at 224 px; the mean over the map is the same there and also
        # works at other input sizes. Logits, not Lucent's softmax.
        return self.softmax2_pre_activation_matmul(x.mean(dim=(2, 3)))

    @staticmethod
    def layer_branch(layer: str) -> str:
        """The branch a layer belongs to, for `causalvis layers` ("" for stem layers)."""
        if layer in MIXED:
            return "concat"
        for suffix, branch in _BRANCH_SUFFIX.items():
            if layer.endswith(suffix) and layer[: -len(suffix)] in MIXED:
                return branch
        return ""
