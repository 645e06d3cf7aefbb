"""Work items: the unit of scale-out, and the context an item function writes through.

A :class:`WorkItem` names an importable function (``"module:function"``) and its
JSON-serialisable keyword arguments, so any worker process (a local process, a Ray task,
a SLURM array job) can run it from the item alone. Items are idempotent: their outputs
go through :class:`ItemContext` (temp file + rename) and the worker records a stamp
``.stamps/<item name>.json`` with the item's input digest once the function returned, so
a rerun skips exactly the items that finished.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, atomic_path, npz_bytes, read_stamp
from causalvis.store.seeds import stable_seed

_NAME = re.compile(r"[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*")
_FUNC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def input_digest(*parts: Any) -> str:
    """Hash of JSON-able inputs (config values, upstream digests, file hashes)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def file_digest(path: str | Path) -> str:
    """Content hash of an input file, for item digests that depend on upstream outputs."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:32]


@dataclass(frozen=True)
class WorkItem:
    """One idempotent piece of a stage: ``func(ctx, **kwargs)`` run in any worker.

    ``digest`` must change whenever the item's output would; by default it hashes the
    function path and kwargs, so stages add config hashes / upstream file digests.
    """

    name: str
    func: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    digest: str = ""

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or any(
            part in {".", ".."} for part in self.name.split("/")
        ):
            raise CausalvisError(
                f"invalid work item name {self.name!r}: use letters, digits, '_', '.', '-' "
                "and '/' between parts (e.g. 'scan/shard-00003')"
            )
        if not _FUNC.fullmatch(self.func):
            raise CausalvisError(
                f"work item {self.name}: func {self.func!r} must be 'package.module:function'"
            )
        try:
            canonical = json.loads(json.dumps(self.kwargs, sort_keys=True))
        except (TypeError, ValueError) as exc:
            raise CausalvisError(
                f"work item {self.name}: kwargs must be JSON-serialisable ({exc})"
            ) from exc
        object.__setattr__(self, "kwargs", canonical)
        if not self.digest:
            object.__setattr__(self, "digest", input_digest(self.func, canonical))

    def resolve(self) -> Callable[..., Any]:
        """Import the item's function (inside the worker process)."""
        module_name, func_name = self.func.split(":")
        try:
            return getattr(importlib.import_module(module_name), func_name)
        except (ImportError, AttributeError) as exc:
            raise CausalvisError(
                f"work item {self.name}: cannot import {self.func} ({exc})"
            ) from exc


def item_done(paths: StudyPaths, item: WorkItem) -> bool:
    """True when the item's stamp holds its digest and every output it recorded exists."""
    data = read_stamp(paths, item.name)
    if data.get("digest") != item.digest:
        return False
    return all((paths.root / rel).is_file() for rel in data.get("outputs", []))


@dataclass
class ItemResult:
    """What a worker reports for one item (picklable, plain values only)."""

    name: str
    ok: bool
    seconds: float
    error: str = ""
    value: Any = None
    pid: int = 0
    host: str = ""

    @property
    def first_error_line(self) -> str:
        """``ExceptionType: message`` (the worker puts it before the traceback)."""
        lines = [ln for ln in self.error.strip().splitlines() if ln.strip()]
        return lines[0].strip() if lines else "unknown error"


@dataclass
class ItemContext:
    """Handed to an item function: where to write, which device, which seed.

    All writes are atomic and recorded, so the stamp lists the item's outputs and a
    missing output invalidates it. Seeds come from the item name, never process state.
    """

    root: Path
    item: WorkItem
    device: str = "cpu"
    outputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    @property
    def paths(self) -> StudyPaths:
        return StudyPaths(self.root)

    @property
    def seed(self) -> int:
        return stable_seed("work-item", self.item.name)

    def rng(self, *parts: object) -> np.random.Generator:
        """A numpy generator seeded by the item name (plus optional sub-stream parts)."""
        return np.random.default_rng(stable_seed("work-item", self.item.name, *parts))

    def _relative(self, path: str | Path) -> Path:
        path = Path(path)
        full = path if path.is_absolute() else self.root / path
        try:
            return full.resolve().relative_to(self.root.resolve())
        except ValueError as exc:
            raise CausalvisError(
                f"work item {self.item.name}: output {path} is outside the study folder"
            ) from exc

    @contextmanager
    def output(self, path: str | Path) -> Iterator[Path]:
        """Yield a temp path; it becomes ``path`` (relative to the study) on success."""
        rel = self._relative(path)
        with atomic_path(self.root / rel) as tmp:
            yield tmp
        self.outputs.append(rel.as_posix())

    def write_bytes(self, path: str | Path, data: bytes) -> None:
        with self.output(path) as tmp:
            tmp.write_bytes(data)

    def write_text(self, path: str | Path, text: str) -> None:
        self.write_bytes(path, text.encode())

    def write_json(self, path: str | Path, obj: Any) -> None:
        self.write_text(path, json.dumps(obj, indent=2) + "\n")

    def save_npy(self, path: str | Path, array: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, np.asarray(array), allow_pickle=False)
        self.write_bytes(path, buf.getvalue())

    def save_npz(self, path: str | Path, **arrays: np.ndarray) -> None:
        """Like ``np.savez_compressed`` but byte-deterministic (fixed zip timestamps)."""
        self.write_bytes(path, npz_bytes(**arrays))
