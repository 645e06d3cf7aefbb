"""Unit identity and ``units.json``.

A unit is written ``LAYER:CHANNEL`` by users and in every ``unit`` column (``Unit.spec``);
``Unit.key`` is its file-system safe form for folder and file names
(``blocks.3.2:17`` -> ``blocks.3.2-c0017``). Both come from this one type, so a join on
``unit`` never compares two spellings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, read_json_file, write_json

ROLES = ("main", "practice", "catch")


@dataclass(frozen=True, order=True)
class Unit:
    """One unit of a model: a channel of a layer."""

    layer: str
    channel: int

    @classmethod
    def parse(cls, spec: str, *, where: str = "unit") -> Unit:
        """``"blocks.3.2:17"`` -> ``Unit("blocks.3.2", 17)``; the layer may contain ``:``."""
        layer, sep, channel = str(spec).strip().rpartition(":")
        if not sep or not layer or not channel.strip().lstrip("-").isdigit():
            raise CausalvisError(f"{where}: {spec!r} is not LAYER:CHANNEL (e.g. blocks.3.2:17)")
        value = int(channel)
        if value < 0:
            raise CausalvisError(f"{where}: channel of {spec!r} must be >= 0")
        return cls(layer, value)

    @property
    def spec(self) -> str:
        """How users and every ``unit`` column write the unit."""
        return f"{self.layer}:{self.channel}"

    @property
    def key(self) -> str:
        """File-system safe id for folders and file names (not for ``unit`` columns)."""
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", self.layer)
        return f"{safe}-c{self.channel:04d}"

    def __str__(self) -> str:
        return self.spec


def unit_key(layer: str, channel: int) -> str:
    """``Unit(layer, channel).key``, for callers that hold the two parts."""
    return Unit(layer, int(channel)).key


def unit_spec(layer: str, channel: int) -> str:
    """``Unit(layer, channel).spec``: the one spelling of a ``unit`` column value."""
    return Unit(layer, int(channel)).spec


@dataclass(frozen=True)
class UnitEntry:
    """A unit as the study uses it: its role and its own seed (``units.json``)."""

    unit: Unit
    role: str = "main"
    seed: int = 0

    @property
    def layer(self) -> str:
        return self.unit.layer

    @property
    def channel(self) -> int:
        return self.unit.channel

    @property
    def key(self) -> str:
        return self.unit.key

    @property
    def spec(self) -> str:
        return self.unit.spec

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "channel": self.channel, "key": self.key,
                "role": self.role, "seed": self.seed}

    @classmethod
    def from_dict(cls, raw: Any, *, where: str) -> UnitEntry:
        if not isinstance(raw, dict):
            raise CausalvisError(f"{where}: expected an object, got {type(raw).__name__}")
        try:
            layer, channel = str(raw["layer"]), raw["channel"]
            if not isinstance(channel, int) or isinstance(channel, bool) or channel < 0:
                raise ValueError(f"channel {channel!r} is not a non-negative integer")
            role = str(raw.get("role", "main"))
            seed = int(raw.get("seed", 0))
        except KeyError as exc:
            raise CausalvisError(f"{where}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise CausalvisError(f"{where}: {exc}") from exc
        if role not in ROLES:
            raise CausalvisError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        return cls(Unit(layer, int(channel)), role, seed)


@dataclass(frozen=True)
class UnitsFile:
    """The content of ``units.json``."""

    units: tuple[UnitEntry, ...]
    skipped_dead: tuple[str, ...] = ()

    def of_role(self, role: str | None) -> list[UnitEntry]:
        return [u for u in self.units if role is None or u.role == role]


def write_units(
    paths: StudyPaths, units: Iterable[UnitEntry], skipped_dead: Iterable[str] = ()
) -> None:
    write_json(paths.units, {"units": [u.to_dict() for u in units],
                             "skipped_dead": list(skipped_dead)})


def read_units_file(paths: StudyPaths) -> UnitsFile:
    """``units.json``, validated; a missing or malformed file is one clear error."""
    path = paths.units
    data = read_json_file(
        path, f"no {path}: run `causalvis build {paths.root} --stage units` first"
    )
    if not isinstance(data, dict) or not isinstance(data.get("units"), list):
        raise CausalvisError(f"{path}: expected an object with a 'units' list")
    units = tuple(
        UnitEntry.from_dict(raw, where=f"{path}: units[{i}]") for i, raw in enumerate(data["units"])
    )
    seen: set[Unit] = set()
    for i, entry in enumerate(units):
        if entry.unit in seen:
            raise CausalvisError(f"{path}: units[{i}]: {entry.spec} is listed twice")
        seen.add(entry.unit)
    return UnitsFile(units, tuple(str(s) for s in data.get("skipped_dead") or ()))


def read_units(paths: StudyPaths, role: str | None = None) -> list[UnitEntry]:
    """The units of ``units.json`` in file order (optionally only one role)."""
    units = read_units_file(paths).of_role(role)
    if not units and role is None:
        raise CausalvisError(f"{paths.units} lists no units")
    return units
