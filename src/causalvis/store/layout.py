"""The study folder contract (DESIGN.md) as paths, plus atomic, hash-stamped outputs.

Every stage writes through :func:`atomic_write` (temp file + rename) and records the
hash of its inputs with :func:`write_stamp`, so a killed run never leaves a half-written
file and a changed config invalidates only what depends on it.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from causalvis.errors import CausalvisError

# Every study-folder file name, spelled here and nowhere else (docs/study-folder.md).
CONFIG_FILE = "study.toml"
UNITS_FILE = "units.json"
TRIALS_FILE = "trials.csv"
BASE_TRIALS_FILE = "trials_base.csv"
SESSIONS_FILE = "sessions.json"
MANIFEST_FILE = "manifest.json"
DATABASE_FILE = "responses.sqlite"
ACTIVATIONS_INDEX_FILE = "index.json"
SHARD_IDS_FILE = "ids.txt"
SHARD_SKIPPED_FILE = "skipped.json"
REFERENCE_META_FILE = "meta.json"
SUMMARY_FILE = "summary.json"
OBSERVERS_FILE = "observers.json"
OBSERVER_TRIALS_FILE = "observer_trials.csv"
POWER_FILE = "power.json"
REPORT_PAGE_FILE = "index.html"


@dataclass(frozen=True)
class StudyPaths:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def activations(self) -> Path:
        return self.root / "activations"

    @property
    def units(self) -> Path:
        return self.root / UNITS_FILE

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

    def reference_meta(self, method: str, key: str) -> Path:
        return self.reference_dir(method, key) / REFERENCE_META_FILE

    @property
    def activations_index(self) -> Path:
        return self.activations / ACTIVATIONS_INDEX_FILE

    def activation_shard(self, name: str) -> Path:
        """``activations/<shard>/``: one scan shard's folder."""
        return self.activations / name

    def shard_ids(self, name: str) -> Path:
        return self.activation_shard(name) / SHARD_IDS_FILE

    def shard_skipped(self, name: str) -> Path:
        return self.activation_shard(name) / SHARD_SKIPPED_FILE

    def shard_layer(self, name: str, layer: str) -> Path:
        """``activations/<shard>/<layer>.npy``: ``[n, C]``, float16 unless ``scan.dtype`` says float32."""
        return self.activation_shard(name) / f"{layer}.npy"

    def exemplar(self, key: str) -> Path:
        """``exemplars/<unit key>.json``."""
        return self.exemplars / f"{key}.json"

    def occlusion_result(self, key: str, image_set: int) -> Path:
        """``occlusion/<unit key>/set<b>.npz``."""
        return self.occlusion / key / f"set{image_set}.npz"

    def occlusion_figure(self, key: str, image_set: int) -> Path:
        return self.occlusion / key / f"set{image_set}.png"

    @property
    def stimuli(self) -> Path:
        """PRIVATE working copies of query / option images (names may carry meaning)."""
        return self.root / "stimuli"

    @property
    def base_trials(self) -> Path:
        """PRIVATE condition-free trials of stage ``trials`` (the sessions stage's input)."""
        return self.stimuli / BASE_TRIALS_FILE

    def trial_cache(self, key: str, image_set: int) -> Path:
        """PRIVATE ``stimuli/trials/<unit key>/set<b>.json``: one (unit, image set)'s
        trial (or why it was dropped), so a rerun only re-measures what changed."""
        return self.stimuli / "trials" / key / f"set{image_set}.json"

    @property
    def trials(self) -> Path:
        return self.root / TRIALS_FILE

    @property
    def bundle(self) -> Path:
        return self.root / "bundle"

    @property
    def assets(self) -> Path:
        return self.bundle / "assets"

    @property
    def sessions(self) -> Path:
        return self.bundle / SESSIONS_FILE

    @property
    def manifest(self) -> Path:
        return self.bundle / MANIFEST_FILE

    @property
    def database(self) -> Path:
        return self.root / DATABASE_FILE

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def summary_report(self) -> Path:
        return self.report / SUMMARY_FILE

    @property
    def observers_report(self) -> Path:
        return self.report / OBSERVERS_FILE

    @property
    def observer_trials(self) -> Path:
        return self.report / OBSERVER_TRIALS_FILE

    @property
    def power_report(self) -> Path:
        return self.report / POWER_FILE

    @property
    def stamps(self) -> Path:
        return self.root / ".stamps"

    def stamp(self, name: str) -> Path:
        """``.stamps/<work item name>.json`` (names may hold ``/``: one folder per part)."""
        return self.stamps / f"{name}.json"

    @property
    def substudies(self) -> Path:
        """``models/``: one sub-study per model of a multi-model study."""
        return self.root / "models"

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


# Fixed zip timestamp: .npz files must be byte-identical whichever process wrote them.
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def npz_bytes(**arrays: Any) -> bytes:
    """A compressed .npz readable by ``np.load`` whose bytes depend on the arrays only."""
    import numpy as np

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def read_json_file(path: str | Path, missing: str) -> Any:
    """A study-folder JSON file, or one clear error: ``missing`` when it is absent, the
    path and the parser's reason when it is not JSON."""
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(missing)
    try:
        return read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CausalvisError(f"{path}: invalid JSON ({exc})") from exc


def write_stamp(paths: StudyPaths, name: str, digest: str, **info: Any) -> None:
    """Mark work item ``name`` done for inputs hashing to ``digest``."""
    write_json(paths.stamp(name), {"digest": digest, **info})


def read_stamp(paths: StudyPaths, name: str) -> dict[str, Any]:
    """What :func:`write_stamp` recorded for ``name`` ({} when absent or unreadable)."""
    stamp = paths.stamp(name)
    if not stamp.is_file():
        return {}
    try:
        data = read_json(stamp)
    except (json.JSONDecodeError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def stamp_matches(paths: StudyPaths, name: str, digest: str) -> bool:
    return read_stamp(paths, name).get("digest") == digest
