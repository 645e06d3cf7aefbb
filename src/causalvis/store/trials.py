"""The trial tables: ``stimuli/trials_base.csv`` and ``trials.csv`` (the schema, written once).

``trials_base.csv`` (stage ``trials``) holds one condition-free trial per (unit, image set);
``trials.csv`` (stage ``sessions``) one row per served trial. Both are written and read
only here: :func:`write_trials` keeps a rerun byte-identical (floats as ``repr``, so the
served ground truth survives the round trip exactly), :func:`read_trials` returns typed
columns and reports a bad cell by file, line and column.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from causalvis.errors import CausalvisError
from causalvis.store.layout import atomic_write

# "example": the worked example of the instructions, served and scored nowhere else.
KINDS = ("main", "practice", "catch", "example")
OPTIONS = ("a", "b")

# Condition-free trials of the causal occlusion task (stage ``trials``).
BASE_COLUMNS: tuple[str, ...] = (
    "trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
    "image_set", "query_asset", "option_a_asset", "option_b_asset", "reference_assets",
    "box_a", "box_b", "act_base", "act_a", "act_b", "correct", "rel_diff",
    "query_image_id",
)
# The 2-AFC task's base trials also name the minimal query's image.
TWO_AFC_BASE_COLUMNS: tuple[str, ...] = (*BASE_COLUMNS, "min_query_image_id")
# One row per served trial (stage ``sessions``); docs/study-folder.md lists their meaning.
SERVED_COLUMNS: tuple[str, ...] = (
    "trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
    "image_set", "query_asset", "option_a_asset", "option_b_asset", "reference_assets",
    "box_a", "box_b", "act_base", "act_a", "act_b", "correct", "rel_diff",
    "min_reference_assets", "model",
)
# What every reader may rely on; the other columns are filled ("" / NaN) when absent
# (bundles built before they existed).
REQUIRED_COLUMNS: tuple[str, ...] = (
    "trial_id", "kind", "condition", "query_asset", "option_a_asset", "option_b_asset",
    "reference_assets", "correct",
)
INT_COLUMNS = ("channel", "image_set")
FLOAT_COLUMNS = ("act_base", "act_a", "act_b", "rel_diff")
TEXT_COLUMNS = tuple(
    c for c in dict.fromkeys((*SERVED_COLUMNS, *TWO_AFC_BASE_COLUMNS))
    if c not in INT_COLUMNS + FLOAT_COLUMNS
)


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    return "" if value is None else value


def encode_trials(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> bytes:
    """The CSV bytes of ``rows`` (columns in this order; missing cells empty)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n",
                            extrasaction="raise")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: _cell(row.get(c)) for c in columns})
    return buf.getvalue().encode()


def write_trials(
    path: str | Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]
) -> bool:
    """Write the table unless the file already holds exactly these bytes (so a rerun
    leaves it, and everything downstream of it, untouched); True if it was written."""
    path = Path(path)
    unknown = [c for c in columns if c not in TEXT_COLUMNS + INT_COLUMNS + FLOAT_COLUMNS]
    if unknown:
        raise ValueError(f"trial columns not in the schema: {unknown}")
    data = encode_trials(rows, columns)
    if path.is_file() and path.read_bytes() == data:
        return False
    atomic_write(path, data)
    return True


def write_trials_frame(path: str | Path, frame: pd.DataFrame) -> bool:
    """:func:`write_trials` for a frame whose columns are (a subset of) the schema."""
    records = frame.to_dict("records")
    for rec in records:
        for col in INT_COLUMNS:
            if col in rec and not pd.isna(rec[col]):
                rec[col] = int(rec[col])
        for col, value in list(rec.items()):
            if isinstance(value, float) and pd.isna(value):
                rec[col] = ""
    return write_trials(path, records, list(frame.columns))


def read_trials(
    path: str | Path,
    *,
    required: Sequence[str] = REQUIRED_COLUMNS,
    missing_hint: str = "run `causalvis build` first",
) -> pd.DataFrame:
    """A trial table with typed columns: text as ``str`` (ids never become numbers, empty
    cells are ``""``), ``channel``/``image_set`` as nullable integers, activations and
    ``rel_diff`` as float. Schema columns the file lacks are added empty."""
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(f"no trial table at {path} ({missing_hint})")
    frame = read_text_table(path, required)
    for col in TEXT_COLUMNS:
        if col not in frame.columns:
            frame[col] = ""
        else:
            frame[col] = frame[col].str.strip()
    for col in INT_COLUMNS + FLOAT_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.NA if col in INT_COLUMNS else float("nan")
            frame[col] = frame[col].astype("Int64" if col in INT_COLUMNS else float)
            continue
        frame[col] = _numeric(frame[col], path, col, integer=col in INT_COLUMNS)
    _check_values(frame, path)
    return frame


def read_text_table(path: Path, required: Sequence[str]) -> pd.DataFrame:
    """A study-folder CSV with every cell as text ("" when empty), checked for its columns:
    the shared first step of every typed table reader."""
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CausalvisError(f"{path}: cannot read as CSV ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CausalvisError(f"{path}: missing columns {', '.join(missing)}")
    return frame


def _line(index: int) -> int:
    return int(index) + 2  # header is line 1


def _numeric(series: pd.Series, path: Path, col: str, *, integer: bool) -> pd.Series:
    text = series.str.strip()
    values = pd.to_numeric(text.where(text != ""), errors="coerce")
    bad = values.isna() & (text != "")
    if bad.any():
        i = bad.idxmax()
        raise CausalvisError(
            f"{path}:{_line(i)}: column {col!r}: {series[i]!r} is not a number"
        )
    if not integer:
        return values.astype(float)
    frac = values.notna() & (values != values.round())
    if frac.any():
        i = frac.idxmax()
        raise CausalvisError(f"{path}:{_line(i)}: column {col!r}: {series[i]!r} is not an integer")
    return values.round().astype("Int64")


def _check_values(frame: pd.DataFrame, path: Path) -> None:
    checks = (
        ("kind", KINDS),
        ("correct", OPTIONS),
    )
    for col, allowed in checks:
        bad = ~frame[col].isin(allowed)
        if bad.any():
            i = bad.idxmax()
            raise CausalvisError(
                f"{path}:{_line(i)}: column {col!r}: {col} must be "
                f"{' or '.join(allowed) if len(allowed) == 2 else 'one of ' + ', '.join(allowed)}"
                f", not {frame[col][i]!r}"
            )
    empty = frame["trial_id"] == ""
    if empty.any():
        raise CausalvisError(f"{path}:{_line(empty.idxmax())}: column 'trial_id' is empty")
    dup = frame["trial_id"].duplicated()
    if dup.any():
        i = dup.idxmax()
        raise CausalvisError(
            f"{path}:{_line(i)}: column 'trial_id': duplicate {frame['trial_id'][i]!r}"
        )


def split_assets(cell: str) -> list[str]:
    """A space-separated asset list (``reference_assets``) as a list."""
    return str(cell or "").split()
