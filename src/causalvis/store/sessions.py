"""The session plan ``bundle/sessions.json`` and the bundle manifest ``bundle/manifest.json``.

Written by stage ``sessions`` and read by the server (and by whoever needs the plan) only
here, so the two files have one schema. :func:`read_sessions` checks the plan's own shape
and names the file and the session index of a bad entry; whether its trial ids exist in
``trials.csv`` and its assets on disk is the server's cross-check (``server.bundle``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, read_json_file, write_json


@dataclass(frozen=True)
class SessionEntry:
    """One planned session: one condition x one image set x a group of units.
    ``practice`` is the session's practice pool (obvious and non-obvious trials); each
    participant is given a draw from it (``SessionPlan.practice_draw``), the trials in
    ``practice_obvious`` (a subset; empty in plans written before the pools existed)
    counting as the obvious ones. ``reference_order`` maps a trial id to the order the
    session shows its references in (indices into the trial's ``reference_assets``;
    ``min_reference_order`` the same for 2-AFC minimal references), drawn from
    ``reference_seed``; a trial without an entry (plans written before it) is shown in
    the trial table's order."""

    session_id: str
    condition: str
    image_set: int | None
    trials: tuple[str, ...]
    practice: tuple[str, ...] = ()
    planned_participants: int = 1
    units: tuple[str, ...] = ()
    model: str | None = None  # multi-model studies: every session shows one model
    practice_obvious: tuple[str, ...] = ()
    reference_seed: int | None = None
    reference_order: dict[str, tuple[int, ...]] = field(default_factory=dict)
    min_reference_order: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def shown_order(self, trial_id: str, n: int, side: str = "max") -> list[int]:
        """The indices of a trial's ``n`` references (or minimal ones, ``side="min"``) in
        the order this session shows them."""
        order = (self.min_reference_order if side == "min" else self.reference_order).get(
            trial_id)
        return list(order) if order is not None and len(order) == n else list(range(n))

    def to_dict(self) -> dict[str, Any]:
        extra = {} if self.model is None else {"model": self.model}
        if self.reference_seed is not None:
            extra["reference_seed"] = self.reference_seed
        if self.reference_order:
            extra["reference_order"] = {k: list(v) for k, v in self.reference_order.items()}
        if self.min_reference_order:
            extra["min_reference_order"] = {
                k: list(v) for k, v in self.min_reference_order.items()}
        return {
            **extra,
            "session_id": self.session_id,
            "condition": self.condition,
            "image_set": self.image_set,
            "units": list(self.units),
            "trials": list(self.trials),
            "practice": list(self.practice),
            "practice_obvious": list(self.practice_obvious),
            "planned_participants": self.planned_participants,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], where: str) -> SessionEntry:
        try:
            image_set = raw.get("image_set")
            entry = cls(
                session_id=str(raw["session_id"]),
                condition=str(raw["condition"]),
                image_set=None if image_set is None else int(image_set),
                trials=_ids(raw["trials"]),
                practice=_ids(raw.get("practice") or ()),
                planned_participants=int(raw.get("planned_participants", 1)),
                units=_ids(raw.get("units") or ()),
                model=None if raw.get("model") is None else str(raw["model"]),
                practice_obvious=_ids(raw.get("practice_obvious") or ()),
                reference_seed=None if raw.get("reference_seed") is None
                else int(raw["reference_seed"]),
                reference_order=_orders(raw.get("reference_order")),
                min_reference_order=_orders(raw.get("min_reference_order")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CausalvisError(f"{where}: malformed session ({exc})") from exc
        if not entry.trials:
            raise CausalvisError(f"{where}: session has no trials")
        shown = set(entry.trials) | set(entry.practice)
        for name in ("reference_order", "min_reference_order"):
            for tid, order in getattr(entry, name).items():
                if tid not in shown:
                    raise CausalvisError(f"{where}: {name} names {tid!r}, not in the session")
                if sorted(order) != list(range(len(order))):
                    raise CausalvisError(
                        f"{where}: {name}[{tid!r}] is not an order of 0..{len(order) - 1}")
        stray = [t for t in entry.practice_obvious if t not in entry.practice]
        if stray:
            raise CausalvisError(f"{where}: practice_obvious trial {stray[0]!r} is not in practice")
        return entry


def _orders(value: Any) -> dict[str, tuple[int, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError(f"expected an object of trial id -> order, got {type(value).__name__}")
    return {str(k): tuple(int(i) for i in v) for k, v in value.items()}


def _ids(value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise TypeError(f"expected a list of trial ids, got {type(value).__name__}")
    return tuple(str(v) for v in value)


@dataclass(frozen=True)
class SessionPlan:
    """``bundle/sessions.json``. ``task``, ``study`` and ``conditions`` may be absent in
    plans written before they existed (None: the reader falls back to the study config).
    ``practice_draw`` says how many practice trials each participant is given
    (``n_total``) and how many of them from the obvious pool (``n_obvious``); plans
    written before it existed read as "all of the practice trials, none obvious"."""

    sessions: tuple[SessionEntry, ...]
    study: str | None = None
    task: str | None = None
    config_hash: str | None = None
    conditions: tuple[str, ...] | None = None
    models: tuple[str, ...] = ()
    instructions_example: dict[str, str] = field(default_factory=dict)
    practice_draw: dict[str, int] = field(default_factory=dict)

    @property
    def n_participants_needed(self) -> int:
        return int(sum(s.planned_participants for s in self.sessions))

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "task": self.task,
            "config_hash": self.config_hash,
            "conditions": list(self.conditions or ()),
            **({"models": list(self.models)} if self.models else {}),
            "sessions": [s.to_dict() for s in self.sessions],
            "instructions_example": dict(self.instructions_example),
            "practice_draw": dict(self.practice_draw),
            "n_participants_needed": self.n_participants_needed,
        }


def write_sessions(path: str | Path, plan: SessionPlan) -> None:
    write_json(path, plan.to_dict())


def read_sessions(path: str | Path) -> SessionPlan:
    """The plan, shape-checked; errors name ``path`` and the session index."""
    path = Path(path)
    raw = read_json_file(path, f"no session plan at {path} (run `causalvis build` first)")
    if not isinstance(raw, dict):
        raise CausalvisError(f"{path}: the plan must be a JSON object")
    raw_sessions = raw.get("sessions") or []
    if not isinstance(raw_sessions, list):
        raise CausalvisError(f"{path}: sessions must be a list")
    sessions = []
    for i, item in enumerate(raw_sessions):
        where = f"{path}: sessions[{i}]"
        if not isinstance(item, dict):
            raise CausalvisError(f"{where}: malformed session (not an object)")
        sessions.append(SessionEntry.from_dict(item, where))
    if not sessions:
        raise CausalvisError(f"{path}: the plan has no sessions")
    examples = raw.get("instructions_example") or {}
    if not isinstance(examples, dict):
        raise CausalvisError(f"{path}: instructions_example must be an object")
    conditions = raw.get("conditions")
    draw = _practice_draw(raw.get("practice_draw"), sessions, path)
    return SessionPlan(
        sessions=tuple(sessions),
        study=None if raw.get("study") is None else str(raw["study"]),
        task=None if not raw.get("task") else str(raw["task"]),
        config_hash=None if raw.get("config_hash") is None else str(raw["config_hash"]),
        conditions=tuple(map(str, conditions)) if conditions else None,
        models=tuple(map(str, raw.get("models") or ())),
        instructions_example={str(k): str(v) for k, v in examples.items()},
        practice_draw=draw,
    )


def _practice_draw(raw: Any, sessions: list[SessionEntry], path: Path) -> dict[str, int]:
    """The plan's practice draw, checked; absent (an older plan): every practice trial of
    a session, none of them obvious."""
    if raw is None:
        return {"n_total": max(len(s.practice) for s in sessions), "n_obvious": 0}
    try:
        draw = {"n_total": int(raw["n_total"]), "n_obvious": int(raw["n_obvious"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise CausalvisError(f"{path}: malformed practice_draw ({exc!r})") from exc
    if not 0 <= draw["n_obvious"] <= draw["n_total"]:
        raise CausalvisError(f"{path}: practice_draw needs 0 <= n_obvious <= n_total, not {draw}")
    return draw


# -- manifest ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """``bundle/manifest.json``: what a bundle was built from, so an archived copy can be
    checked and served elsewhere. ``files`` maps a study-relative path to its SHA-256."""

    study: str
    software_version: str
    config_hash: str
    created: str
    files: dict[str, str]
    n_assets: int
    assets_digest: str
    software: str = "causalvis"

    def to_dict(self) -> dict[str, Any]:
        return {
            "study": self.study,
            "software": self.software,
            "software_version": self.software_version,
            "config_hash": self.config_hash,
            "created": self.created,
            "files": dict(self.files),
            "n_assets": self.n_assets,
            "assets_digest": self.assets_digest,
        }


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_manifest(
    paths: StudyPaths, *, study: str, config_hash: str, software_version: str
) -> Manifest:
    """The manifest of the bundle as it is on disk now (trial table, plan, config, assets)."""
    assets = sorted(p.name for p in paths.assets.glob("*.png"))
    files = {
        p.relative_to(paths.root).as_posix(): sha256_file(p)
        for p in (paths.trials, paths.sessions, paths.config)
    }
    return Manifest(
        study=study,
        software_version=software_version,
        config_hash=config_hash,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        files=files,
        n_assets=len(assets),
        assets_digest=hashlib.sha256("\n".join(assets).encode()).hexdigest(),
    )


def write_manifest(path: str | Path, manifest: Manifest) -> None:
    write_json(path, manifest.to_dict())


def read_manifest(path: str | Path) -> Manifest:
    path = Path(path)
    raw = read_json_file(path, f"no bundle manifest at {path} (run `causalvis build` first)")
    try:
        return Manifest(
            study=str(raw["study"]),
            software=str(raw.get("software", "causalvis")),
            software_version=str(raw["software_version"]),
            config_hash=str(raw["config_hash"]),
            created=str(raw["created"]),
            files={str(k): str(v) for k, v in dict(raw["files"]).items()},
            n_assets=int(raw["n_assets"]),
            assets_digest=str(raw["assets_digest"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CausalvisError(f"{path}: malformed manifest ({exc!r})") from exc
