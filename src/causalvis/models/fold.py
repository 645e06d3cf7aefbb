"""Frozen BatchNorm folded into the conv before it, for render steps and inference passes.

Eval-mode BatchNorm is a per-channel affine after each convolution, yet it costs about a
third of a render step (its own forward and backward kernels) and about a fifth of an
inference forward on the CPU (lite0, channels-last, heap allocations: 1.24× faster folded;
a memory-bound pass per conv). :func:`folded_model`
gives a copy of the model in which every eval-mode ``BatchNorm2d`` (and the norm part of
timm's ``BatchNormAct2d``) that reads the output of a plain ``Conv2d`` (which nothing
else reads) is folded into that conv's weight and bias; the norm module then passes its
input through (``BatchNormAct2d`` keeps its drop / act). Module types and names are
unchanged, so every catalogue layer taps the same tensor up to float rounding: a norm
layer's output (or its act's input) is now the folded conv's output. The user's model is
never modified; the copy is cached per model and rebuilt when its weights change.

In the same copy timm's TF-"SAME" convs skip their padded input copy
(:func:`as_shifted_same`, exact: the same products plus zeros).

Which conv feeds which norm, and that nothing else reads the conv's output, is traced on
one forward pass (module hooks + a ``TorchFunctionMode`` seeing every op on the tensor).

:class:`~causalvis.models.ActivationProbe` measures through the folded copy unless told
not to (``fold_norms=False``; the model's own ``fold_norms``, which a study's stages set
from ``model.fold_norms``; else ``CAUSALVIS_FOLD_NORMS=0`` for a whole process): every
activation a study stores is then computed the same way, within float rounding (≈ 1e-6
relative) of the unfolded network's.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import weakref
from collections import Counter, defaultdict

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

from causalvis.models.zoo import CausalvisModel

# model -> (fingerprint, folded copy or None when nothing folds: no strong ref to the key)
_CACHE: weakref.WeakKeyDictionary[CausalvisModel, tuple[tuple, CausalvisModel | None]] = (
    weakref.WeakKeyDictionary()
)


_FOLDED = "_causalvis_folded"  # set on folded copies: folding twice would scale twice


def fold_norms_default() -> bool:
    """Whether probes fold by default in this process (``CAUSALVIS_FOLD_NORMS=0``: no)."""
    return os.environ.get("CAUSALVIS_FOLD_NORMS", "1").strip().lower() not in ("0", "false")


def folds(model: CausalvisModel) -> bool:
    """Whether inference on ``model`` runs the folded copy: the model's own setting (a
    study's ``model.fold_norms``, set when its stages load it, so every stage and worker
    of one study agrees) or, for a model loaded outside a study, the process default."""
    own = getattr(model, "fold_norms", None)
    return fold_norms_default() if own is None else bool(own)


def is_folded(model: CausalvisModel) -> bool:
    """True for a copy :func:`folded_model` made."""
    return bool(getattr(model, _FOLDED, False))


def is_folded_norm(module: nn.Module) -> bool:
    """True for a norm whose affine :func:`fold_into` moved into its conv (it passes its
    input through): code that folds conv + norm pairs itself must skip it."""
    return "forward" in vars(module)


def inference_model(model: CausalvisModel, fold_norms: bool | None = None) -> CausalvisModel:
    """The network inference passes run: the folded copy unless ``fold_norms`` is False
    (``None``: :func:`folds`)."""
    if fold_norms is None:
        fold_norms = folds(model)
    return folded_model(model) if fold_norms else model


def _is_bn(module: nn.Module) -> bool:
    """A plain ``BatchNorm2d`` or timm's ``BatchNormAct2d`` in eval mode with statistics."""
    return (
        (type(module) is nn.BatchNorm2d or type(module).__name__ == "BatchNormAct2d")
        and isinstance(module, nn.BatchNorm2d)
        and not module.training
        and module.running_mean is not None
        and module.running_var is not None
    )


def _is_conv(module: nn.Module) -> bool:
    """A convolution linear in its weight and bias: ``Conv2d`` or timm's ``Conv2dSame``
    (TF padding); not weight-standardized subclasses (``StdConv2d``), where a scale cancels."""
    cls = type(module)
    return cls is nn.Conv2d or (
        cls.__name__ == "Conv2dSame" and cls.__module__.startswith("timm.")
    )


class _Readers(TorchFunctionMode):
    """Records, for each tracked tensor, which module was innermost when an op read it."""

    def __init__(self, produced: dict[int, str], stack: list[str], readers) -> None:
        super().__init__()
        self.produced, self.stack, self.readers = produced, stack, readers

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for leaf in tree_leaves((args, kwargs)):
            if isinstance(leaf, torch.Tensor) and id(leaf) in self.produced:
                self.readers[self.produced[id(leaf)]].append(self.stack[-1] if self.stack else "")
        return func(*args, **kwargs)


def foldable_pairs(model: CausalvisModel) -> list[tuple[str, str]]:
    """``(conv, norm)`` module names where the norm's only reader of the conv's output is
    that norm, each module called once in a forward pass at the model's input size."""
    net = model.net
    names = {m: n for n, m in net.named_modules()}
    stack: list[str] = []
    produced: dict[int, str] = {}
    keep: list[torch.Tensor] = []  # ids stay unique while the tensors live
    readers: dict[str, list[str]] = defaultdict(list)
    calls: Counter[str] = Counter()
    feeds: dict[str, str] = {}  # norm -> conv whose output it received

    def pre(module, args):
        name = names[module]
        calls[name] += 1
        if _is_bn(module) and args and id(args[0]) in produced:
            feeds[name] = produced[id(args[0])]
        stack.append(name)

    def post(module, _args, output):
        stack.pop()
        if _is_conv(module) and isinstance(output, torch.Tensor):
            produced[id(output)] = names[module]
            keep.append(output)

    handles = []
    for module in names:
        if module is not net:
            handles.append(module.register_forward_pre_hook(pre))
            handles.append(module.register_forward_hook(post))
    x = torch.zeros(1, 3, model.input_size, model.input_size, device=model.device)
    try:
        with torch.no_grad(), _Readers(produced, stack, readers):
            model(x)
    finally:
        for h in handles:
            h.remove()
    return [
        (conv, norm) for norm, conv in feeds.items()
        if calls[norm] == 1 and calls[conv] == 1 and set(readers[conv]) == {norm}
    ]


def _passthrough(module: nn.Module):
    """The norm's forward without its affine: identity, or a BatchNormAct's drop + act."""
    if type(module) is nn.BatchNorm2d:
        return lambda x: x
    return lambda x: module.act(module.drop(x))


@torch.no_grad()
def fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Put ``bn``'s eval affine into ``conv`` (float64 arithmetic) and bypass it."""
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -mean * scale + (bn.bias.double() if bn.bias is not None else 0.0)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(mean)
    w = conv.weight
    conv.weight = nn.Parameter((w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype),
                               requires_grad=False)
    conv.bias = nn.Parameter((bias * scale + shift).to(w.dtype), requires_grad=False)
    bn.forward = _passthrough(bn)  # instance attribute: type and name stay the same


def _is_same_conv(module: nn.Module) -> bool:
    """timm's ``Conv2dSame`` (TensorFlow "SAME": zero-pad ``p // 2`` before, ``p - p // 2``
    after, then an unpadded conv) with dilation 1."""
    cls = type(module)
    return (cls.__name__ == "Conv2dSame" and cls.__module__.startswith("timm.")
            and tuple(module.dilation) == (1, 1))


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" zero padding (before, after) of one dimension."""
    pad = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def as_shifted_same(conv: nn.Conv2d) -> None:
    """Run a ``Conv2dSame`` without its ``F.pad`` copy of the input (forward and backward:
    three passes over the largest maps of a stride-2 stage). TF padding is symmetric or one
    more after; the second case is the symmetric ``after`` padding with one zero row /
    column put before the kernel, so the windows start one pixel earlier and read the same
    pixels — the same products plus exact zeros (≈ 1/3 less time for lite0's stride-2
    depthwise convs)."""

    def forward(x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = conv.weight.shape[-2:], conv.stride
        (th, bh), (lw, rw) = _same_pad(x.shape[-2], kh, sh), _same_pad(x.shape[-1], kw, sw)
        w = conv.weight
        if bh > th or rw > lw:
            w = F.pad(w, (rw - lw, 0, bh - th, 0))
            if conv.weight.is_contiguous(memory_format=torch.channels_last):
                w = w.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, w, conv.bias, conv.stride, (bh, rw), 1, conv.groups)

    conv.forward = forward  # instance attribute: type and name stay the same


def _fingerprint(model: CausalvisModel) -> tuple:
    """What a cached copy depends on: the module tree (a replaced submodule), each
    parameter's identity and version (in-place updates, ``load_state_dict``), the buffers'
    contents (``.to`` replaces buffer objects), devices and dtypes."""
    params = tuple((n, id(p), p._version, str(p.device), p.dtype)
                   for n, p in model.named_parameters())
    digest = hashlib.sha256()
    for n, b in model.named_buffers():
        digest.update(f"{n}{tuple(b.shape)}{b.device}{b.dtype}".encode())
        digest.update(b.detach().float().cpu().contiguous().numpy().tobytes())
    tree = tuple((n, id(m)) for n, m in model.named_modules())
    return (model.input_size, getattr(model, "tokens", None), tuple(model.derived.keys()),
            tree, params, digest.hexdigest())


def folded_model(model: CausalvisModel) -> CausalvisModel:
    """A frozen copy of ``model`` with its foldable BatchNorms folded and its ``Conv2dSame``
    run without a padded copy (:func:`as_shifted_same`), cached per model; ``model`` itself
    when there is nothing to change (or it is such a copy already)."""
    if is_folded(model):
        return model
    key = _fingerprint(model)
    hit = _CACHE.get(model)
    if hit is not None and hit[0] == key:
        return hit[1] or model
    pairs = foldable_pairs(model)
    same = [n for n, m in model.net.named_modules() if _is_same_conv(m)]
    out = None
    if pairs or same:
        out = copy.deepcopy(model)
        for module in out.modules():  # probes held open on the original stay there
            for hooks in (module._forward_hooks, module._forward_pre_hooks):
                for k in [k for k, f in hooks.items()
                          if "ActivationProbe" in getattr(f, "__qualname__", "")]:
                    del hooks[k]
        for conv, norm in pairs:
            fold_into(out.net.get_submodule(conv), out.net.get_submodule(norm))
        for name in same:
            as_shifted_same(out.net.get_submodule(name))
        for p in out.parameters():
            p.requires_grad_(False)
        setattr(out, _FOLDED, True)
    _CACHE[model] = (key, out)
    return out or model
