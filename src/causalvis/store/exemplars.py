"""``exemplars/<unit key>.json``: a unit's ranked images and its query / reference sets.

Written by stage ``exemplars`` and read by the occlusion and 2-AFC trials stages, only
through :func:`write_exemplars` / :func:`read_exemplars` (docs/study-folder.md lists the
fields). Ranks are 1-based: ``top`` from the most activating image down, ``bottom`` from
the least activating one up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, read_json_file, write_json
from causalvis.store.units import ROLES, Unit

SCHEMES = ("rank_bins", "imi")
# The imi scheme's query windows (fractions: ``stimuli.exemplars.DIFFICULTIES``).
DIFFICULTIES = ("easy", "hard99", "hard95", "hard85")


@dataclass(frozen=True)
class RankedImage:
    """One image at a rank of the unit's ranking, with its activation."""

    rank: int
    image_id: str
    activation: float

    def to_dict(self) -> dict[str, Any]:
        return {"rank": self.rank, "image_id": self.image_id, "activation": self.activation}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> RankedImage:
        if not isinstance(raw, Mapping):
            raise CausalvisError(f"{where}: expected an object, got {type(raw).__name__}")
        try:
            rank, activation = raw["rank"], raw["activation"]
            if isinstance(rank, bool) or int(rank) != rank or rank < 1:
                raise ValueError(f"rank {rank!r} is not a positive integer")
            return cls(int(rank), str(raw["image_id"]), float(activation))
        except KeyError as exc:
            raise CausalvisError(f"{where}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise CausalvisError(f"{where}: {exc}") from exc


@dataclass(frozen=True)
class ExemplarSet:
    """Image set ``b``: the query and references of the max side (and, for the imi
    scheme, of the min side)."""

    image_set: int
    query: RankedImage
    references: tuple[RankedImage, ...] = ()
    min_query: RankedImage | None = None
    min_references: tuple[RankedImage, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image_set": self.image_set, "query": self.query.to_dict(),
                               "references": [r.to_dict() for r in self.references]}
        if self.min_query is not None:
            out["min_query"] = self.min_query.to_dict()
            out["min_references"] = [r.to_dict() for r in self.min_references]
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ExemplarSet:
        if not isinstance(raw, Mapping):
            raise CausalvisError(f"{where}: expected an object, got {type(raw).__name__}")
        for name in ("image_set", "query"):
            if name not in raw:
                raise CausalvisError(f"{where}: missing field {name!r}")
        b = raw["image_set"]
        if isinstance(b, bool) or not isinstance(b, int) or b < 0:
            raise CausalvisError(f"{where}: image_set {b!r} is not a non-negative integer")
        min_query = raw.get("min_query")
        return cls(
            b,
            RankedImage.from_dict(raw["query"], f"{where}.query"),
            _ranked(raw.get("references", []), f"{where}.references"),
            None if min_query is None else RankedImage.from_dict(min_query, f"{where}.min_query"),
            _ranked(raw.get("min_references", []), f"{where}.min_references"),
        )


@dataclass(frozen=True)
class QueryGroupRule:
    """Present when no reference was to share its query's image group
    (``exemplars.exclude_query_group`` with groups known): the grouping (``photo``,
    ``subfolder``, ``csv``) and the fallbacks, references used a second time in their bin
    (``reused``) and references left in the query's group because the whole bin was
    (``same_group``)."""

    grouping: str
    reused: int = 0
    same_group: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"grouping": self.grouping, "reused": self.reused, "same_group": self.same_group}

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> QueryGroupRule:
        if not isinstance(raw, Mapping) or "grouping" not in raw:
            raise CausalvisError(f"{where}: expected an object with a 'grouping'")
        try:
            counts = [int(raw.get(k, 0)) for k in ("reused", "same_group")]
        except (TypeError, ValueError) as exc:
            raise CausalvisError(f"{where}: {exc}") from exc
        if min(counts) < 0:
            raise CausalvisError(f"{where}: negative count")
        return cls(str(raw["grouping"]), *counts)


@dataclass(frozen=True)
class ExemplarRecord:
    """The content of ``exemplars/<unit key>.json``."""

    unit: Unit
    scheme: str
    top: tuple[RankedImage, ...]
    bottom: tuple[RankedImage, ...]
    image_sets: tuple[ExemplarSet, ...]
    role: str = "main"
    n_images: int | None = None  # images ranked (hand-made records may leave it out)
    difficulty: str | None = None  # imi scheme: the one query window of the study
    exclude_query_group: QueryGroupRule | None = None  # None: the group rule was not applied

    @property
    def key(self) -> str:
        return self.unit.key

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"layer": self.unit.layer, "channel": self.unit.channel,
                               "key": self.key, "role": self.role, "scheme": self.scheme}
        if self.n_images is not None:
            out["n_images"] = self.n_images
        if self.difficulty is not None:
            out["difficulty"] = self.difficulty
        if self.exclude_query_group is not None:
            out["exclude_query_group"] = self.exclude_query_group.to_dict()
        out.update(top=[r.to_dict() for r in self.top],
                   bottom=[r.to_dict() for r in self.bottom],
                   image_sets=[s.to_dict() for s in self.image_sets])
        return out

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> ExemplarRecord:
        if not isinstance(raw, Mapping):
            raise CausalvisError(f"{where}: expected an object, got {type(raw).__name__}")
        for name in ("layer", "channel", "scheme", "image_sets"):
            if name not in raw:
                raise CausalvisError(f"{where}: missing field {name!r}")
        channel = raw["channel"]
        if isinstance(channel, bool) or not isinstance(channel, int) or channel < 0:
            raise CausalvisError(f"{where}: channel {channel!r} is not a non-negative integer")
        unit = Unit(str(raw["layer"]), channel)
        if raw.get("key", unit.key) != unit.key:
            raise CausalvisError(
                f"{where}: key {raw['key']!r} does not match unit {unit.spec} ({unit.key})"
            )
        scheme, role = raw["scheme"], raw.get("role", "main")
        if scheme not in SCHEMES:
            raise CausalvisError(f"{where}: scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
        if role not in ROLES:
            raise CausalvisError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        sets = raw["image_sets"]
        if not isinstance(sets, list):
            raise CausalvisError(f"{where}: image_sets must be a list")
        n_images = raw.get("n_images")
        difficulty = raw.get("difficulty")
        if difficulty is not None and difficulty not in DIFFICULTIES:
            raise CausalvisError(f"{where}: difficulty {difficulty!r} is not one of "
                                 f"{', '.join(DIFFICULTIES)}")
        rule = raw.get("exclude_query_group")
        return cls(
            unit=unit,
            scheme=scheme,
            top=_ranked(raw.get("top", []), f"{where}: top"),
            bottom=_ranked(raw.get("bottom", []), f"{where}: bottom"),
            image_sets=tuple(
                ExemplarSet.from_dict(s, f"{where}: image_sets[{i}]") for i, s in enumerate(sets)
            ),
            role=role,
            n_images=None if n_images is None else int(n_images),
            difficulty=difficulty,
            exclude_query_group=None if rule is None else QueryGroupRule.from_dict(
                rule, f"{where}: exclude_query_group"),
        )


def _ranked(raw: Any, where: str) -> tuple[RankedImage, ...]:
    if not isinstance(raw, list):
        raise CausalvisError(f"{where}: expected a list, got {type(raw).__name__}")
    return tuple(RankedImage.from_dict(r, f"{where}[{i}]") for i, r in enumerate(raw))


def write_exemplars(paths: StudyPaths, record: ExemplarRecord) -> None:
    write_json(paths.exemplar(record.key), record.to_dict())


def read_exemplars(paths: StudyPaths, key: str) -> ExemplarRecord:
    """``exemplars/<key>.json``, validated; a missing or malformed file is one clear error."""
    path = paths.exemplar(key)
    raw = read_json_file(path, f"{path} not found: run `causalvis build --stage exemplars` first")
    record = ExemplarRecord.from_dict(raw, str(path))
    if record.key != key:
        raise CausalvisError(f"{path}: holds unit {record.unit.spec}, not {key}")
    return record
