"""The study folder contract (DESIGN.md) as paths, plus atomic, hash-stamped outputs.

Every stage writes through :func:`atomic_write` (temp file + rename) and records the
hash of its inputs with :func:`write_stamp`, so a killed run never leaves a half-written
file and a changed config invalidates only what depends on it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def unit_key(layer: str, channel: int) -> str:
    """File-system safe unit id: ``blocks.3.2:17`` -> ``blocks.3.2-c0017``."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", layer)
    return f"{safe}-c{channel:04d}"


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "study.toml"

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def units(self) -> Path:
        return self.root / "units.json"

    @property
    def exemplars(self) -> Path:
        return self.root / "exemplars"

    @property
    def occlusion(self) -> Path:
        return self.root / "occlusion"

    @property
    def references(self) -> Path:
        return self.root / "references"

    def reference_dir(self, method: str, key: str) -> Path:
        return self.references / method / key

    @property
    def stimuli(self) -> Path:
        """PRIVATE working copies of query / option images (names may carry meaning)."""
        return self.root / "stimuli"

    @property
    def trials(self) -> Path:
        return self.root / "trials.csv"

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def assets(self) -> Path:
        return self.bundle / "assets"

    @property
    def sessions(self) -> Path:
        return self.bundle / "sessions.json"

    @property
    def manifest(self) -> Path:
        return self.bundle / "manifest.json"

    @property
    def database(self) -> Path:
        return self.root / "responses.sqlite"

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def stamps(self) -> Path:
        return self.root / ".stamps"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write(path: str | Path, data: bytes | str) -> None:
    with atomic_path(path) as tmp:
        if isinstance(data, str):
            tmp.write_text(data)
        else:
            tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_stamp(paths: StudyPaths, name: str, digest: str, **info: Any) -> None:
    """Mark work item ``name`` done for inputs hashing to ``digest``."""
    write_json(paths.stamps / f"{name}.json", {"digest": digest, **info})


def stamp_matches(paths: StudyPaths, name: str, digest: str) -> bool:
    stamp = paths.stamps / f"{name}.json"
    if not stamp.is_file():
        return False
    try:
        return read_json(stamp).get("digest") == digest
    except (json.JSONDecodeError, OSError):
        return False
