"""The op list of the incremental occlusion engine (:mod:`occlusion_incremental`): the op
type, its refusal and the class-path matcher, below the engine and the per-family chain
builders (:mod:`incremental_inception`, :mod:`incremental_convnext`) so those need not import the engine."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class _Op:
    # "conv" (spatial conv or max-pool), "point" (elementwise / 1x1), "push" (save the
    # block input), "swap" (exchange the current map and the saved one: the shortcut's
    # own ops run next), "add", "mark"; branches concatenated on channels (Inception):
    # "fork" (save the input), "branch" (keep this branch's map, restart from the saved
    # input), "cat" (the kept maps and the current one, on the box holding all windows);
    # "module": a module a family builder leaves to the engine's allow-lists (it becomes
    # a "conv" or "point" op, or :class:`Unsupported`)
    kind: str
    module: nn.Module | None = None
    name: str = ""  # the layer a "mark" op reads out; else the module's path


# Modules acting on each position alone (per-channel affine, elementwise activations).
POINTWISE = (
    "Identity", "BatchNorm2d", "BatchNormAct2d", "Dropout", "DropPath",
    "ReLU", "ReLU6", "SiLU", "Swish", "Hardswish", "HardSwish", "Hardsigmoid", "HardSigmoid",
    "Sigmoid", "Tanh", "GELU", "Mish", "LeakyReLU", "PReLU", "ELU",
)


def _path(m: nn.Module) -> str:
    return f"{type(m).__module__}.{type(m).__qualname__}"


class Unsupported(NotImplementedError):
    """A module the incremental engine does not understand (named by its type)."""

    def __init__(self, module: nn.Module, where: str, why: str = "") -> None:
        self.module_type = type(module).__name__
        self.where = where or "the net"
        super().__init__(f"{self.module_type} at {self.where}" + (f" ({why})" if why else ""))
