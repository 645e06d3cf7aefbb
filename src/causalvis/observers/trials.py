"""``trials.csv`` (docs/study-folder.md) as the machine observers need it.

The table is parsed by the store's one reader (``store.trials.read_trials``: the schema,
typed columns, errors by file, line and column); here it becomes :class:`Trial` objects.
Observers see exactly what a participant sees: the served asset bytes under
``bundle/``, decoded to RGB. Boxes are ``x0 y0 x1 y1`` in query pixels, x1/y1 exclusive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from causalvis.errors import CausalvisError
from causalvis.store import trials as store_trials

# The causal-occlusion observers need the unit and both patches besides what every
# reader of the table relies on.
REQUIRED_COLUMNS = (*store_trials.REQUIRED_COLUMNS, "unit", "box_a", "box_b")


@dataclass(frozen=True)
class Box:
    """An occlusion patch in query pixels (x1, y1 exclusive)."""

    x0: int
    y0: int
    x1: int
    y1: int

    @classmethod
    def parse(cls, text: str, *, where: str = "box") -> Box:
        parts = str(text).split()
        try:
            x0, y0, x1, y1 = (int(round(float(p))) for p in parts)
        except ValueError as exc:
            raise CausalvisError(f"{where}: expected 'x0 y0 x1 y1', got {text!r}") from exc
        if x1 <= x0 or y1 <= y0:
            raise CausalvisError(f"{where}: empty box {text!r}")
        return cls(x0, y0, x1, y1)

    @property
    def center(self) -> tuple[float, float]:
        """True patch centre (x, y): pixel centres of x0..x1-1 average to (x0 + x1 - 1) / 2."""
        return ((self.x0 + self.x1 - 1) / 2.0, (self.y0 + self.y1 - 1) / 2.0)

    def slices(self) -> tuple[slice, slice]:
        """Row and column slices into an ``[H, W, ...]`` array."""
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


@dataclass(frozen=True)
class Trial:
    """One served trial as the observers need it."""

    trial_id: str
    kind: str
    condition: str
    unit: str
    query: str
    option_a: str
    option_b: str
    references: tuple[str, ...]
    box_a: Box
    box_b: Box
    correct: str  # "a" | "b"
    base_trial_id: str = ""
    image_set: int = -1


def read_trials(path: str | Path, required: Sequence[str] = REQUIRED_COLUMNS) -> pd.DataFrame:
    """``trials.csv`` through ``store.trials.read_trials`` (text columns ``str``, ``""``
    when empty), checked for the ``required`` columns."""
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(f"trials table not found: {path} (run `causalvis build` first)")
    return store_trials.read_trials(path, required=required)


def image_set_of(value) -> int:
    """The ``image_set`` cell as an int, -1 when empty."""
    return -1 if pd.isna(value) else int(value)


def load_trials(path: str | Path, kinds: tuple[str, ...] = ("main",)) -> list[Trial]:
    """The trials of the given kinds, in file order."""
    frame = read_trials(path)
    frame = frame[frame["kind"].isin(kinds)]
    out = []
    for row in frame.itertuples(index=False):
        tid = row.trial_id
        out.append(
            Trial(
                trial_id=tid,
                kind=row.kind,
                condition=row.condition,
                unit=row.unit,
                query=row.query_asset,
                option_a=row.option_a_asset,
                option_b=row.option_b_asset,
                references=tuple(row.reference_assets.split()),
                box_a=Box.parse(row.box_a, where=f"trial {tid} box_a"),
                box_b=Box.parse(row.box_b, where=f"trial {tid} box_b"),
                correct=row.correct,
                base_trial_id=row.base_trial_id or tid,
                image_set=image_set_of(row.image_set),
            )
        )
    return out


class AssetReader:
    """Decodes bundle assets once each (RGB uint8 arrays), as a browser would."""

    def __init__(self, bundle: str | Path) -> None:
        self.bundle = Path(bundle)
        self._read = lru_cache(maxsize=4096)(self._decode)

    def _decode(self, rel: str) -> np.ndarray:
        path = self.bundle / rel
        if not path.is_file():
            raise CausalvisError(f"asset not found: {path}")
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
        arr.setflags(write=False)
        return arr

    def __call__(self, rel: str) -> np.ndarray:
        return self._read(rel)
