"""Any ``nn.Module`` as a model: ``python:pkg.module:factory`` or ``python:/path/file.py:factory``.

The factory is called with no arguments and returns a :class:`UserModel` (or a dict with
the same keys): the network plus its preprocessing, so every stage feeds it images exactly
as it was trained on. ``--weights PATH`` loads a state dict into the returned network
(``random`` / none: the factory's own parameters). Every failure (no such module or file,
no such factory, the factory raising, a wrong return value) is one :class:`CausalvisError`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from causalvis.errors import CausalvisError, UnknownModelError


@dataclass
class UserModel:
    """What a ``python:`` factory returns.

    ``net`` takes normalized ``[N, 3, S, S]`` images; ``input_size`` is S; ``mean`` / ``std``
    normalize [0, 1] RGB (``(x - mean) / std``); ``crop_pct``: images are resized to
    ``input_size / crop_pct`` on the short side, then centre-cropped to ``input_size``.
    """

    net: nn.Module
    input_size: int
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    crop_pct: float = 0.875


def parse_python_name(name: str) -> tuple[str, str]:
    """``python:TARGET:FACTORY`` -> (TARGET, FACTORY); TARGET is a module or a .py file."""
    rest = name.removeprefix("python:")
    target, sep, factory = rest.rpartition(":")
    if not sep or not target or not factory.isidentifier():
        raise UnknownModelError(
            f"model {name!r}: use python:pkg.module:factory or python:/path/file.py:factory"
        )
    return target, factory


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target or "\\" in target


def absolute_name(name: str) -> str:
    """``python:FILE.py:factory`` with FILE made absolute (workers run elsewhere); any other
    name unchanged."""
    if not name.startswith("python:"):
        return name
    target, factory = parse_python_name(name)
    if not _is_file(target):
        return name
    return f"python:{Path(target).expanduser().resolve()}:{factory}"


def _import_target(name: str, target: str) -> Any:
    if _is_file(target):
        path = Path(target).expanduser().resolve()
        if not path.is_file():
            raise UnknownModelError(f"model {name!r}: file not found: {path}")
        mod_name = "causalvis_user_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        if mod_name in sys.modules:
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UnknownModelError(f"model {name!r}: cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise CausalvisError(f"model {name!r}: importing {path} failed: {_line(exc)}") from exc
        sys.modules[mod_name] = module
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise UnknownModelError(f"model {name!r}: no module named {exc.name!r}") from exc
    except Exception as exc:
        raise CausalvisError(f"model {name!r}: importing {target} failed: {_line(exc)}") from exc


def _line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _as_user_model(name: str, value: Any) -> UserModel:
    allowed = {f.name for f in fields(UserModel)}
    if isinstance(value, dict):
        unknown = sorted(set(value) - allowed)
        missing = sorted({"net", "input_size"} - set(value))
        if unknown or missing:
            raise CausalvisError(
                f"model {name!r}: the factory's dict has "
                + (f"unknown keys {unknown}" if unknown else f"no {missing}")
                + f" (keys: {', '.join(sorted(allowed))})"
            )
        value = UserModel(**value)
    if not isinstance(value, UserModel):
        raise CausalvisError(
            f"model {name!r}: the factory returned {type(value).__name__}, not a "
            "causalvis.models.UserModel (or a dict with net, input_size, mean, std, crop_pct)"
        )
    if not isinstance(value.net, nn.Module):
        raise CausalvisError(f"model {name!r}: net is a {type(value.net).__name__}, not an "
                             "nn.Module")
    try:
        size = int(value.input_size)
        mean = tuple(float(v) for v in value.mean)
        std = tuple(float(v) for v in value.std)
        crop = float(value.crop_pct)
    except (TypeError, ValueError) as exc:
        raise CausalvisError(f"model {name!r}: bad preprocessing ({_line(exc)})") from exc
    if size < 8 or len(mean) != 3 or len(std) != 3 or min(std) <= 0 or not 0 < crop <= 1:
        raise CausalvisError(
            f"model {name!r}: preprocessing must be input_size >= 8, three means, three "
            "positive stds and 0 < crop_pct <= 1"
        )
    return UserModel(value.net, size, mean, std, crop)  # type: ignore[arg-type]


def load_user_model(name: str) -> UserModel:
    """Import the ``python:`` target, call its factory, check what it returns."""
    target, factory_name = parse_python_name(name)
    module = _import_target(name, target)
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise UnknownModelError(f"model {name!r}: {target} has no function {factory_name!r}")
    try:
        value = factory()
    except Exception as exc:
        raise CausalvisError(f"model {name!r}: the factory raised {_line(exc)}") from exc
    return _as_user_model(name, value)
