"""Load responses into the canonical trial-level table (docs/study-folder.md, "Responses").

Two sources share one normaliser: any CSV (published datasets) with a ``--map`` from
canonical field to CSV column, and a study folder (the database export of
:mod:`causalvis.responses.export` joined with the study's private ``trials.csv``).
Everything downstream reads only canonical columns. A study folder's files are read once,
into :class:`StudyInputs`, and handed down; analysis never opens an image asset.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.responses import export
from causalvis.store.layout import StudyPaths
from causalvis.store.trials import read_trials
from causalvis.store.units import unit_spec

REQUIRED = ("participant_id", "condition", "correct")
OPTIONAL = (
    "unit",
    "kind",
    "catch",
    "confidence",
    "rt",
    "trial_id",
    "base_trial_id",
    "image_set",
    "layer",
    "channel",
    "choice",
    "left_option",
    "side",
    "session_id",
    "status",
    "rel_diff",
    "total_time_s",
    "instruction_time_s",
    "practice_attempts",
    "model",
)
CANONICAL = REQUIRED + OPTIONAL
# Columns taken from STUDY/trials.csv when the responses lack them (joined on trial_id).
TRIAL_COLUMNS = ("base_trial_id", "unit", "layer", "channel", "image_set", "rel_diff", "model")

_TRUE = {"true", "t", "1", "yes", "y", "correct"}
_FALSE = {"false", "f", "0", "no", "n", "incorrect", "wrong"}


def parse_map(spec: str | None, fields: Sequence[str] = CANONICAL) -> dict[str, str]:
    """``"participant_id=subj,correct=hit"`` -> ``{"participant_id": "subj", ...}``;
    ``fields`` are the names allowed left of ``=`` (an importer's roles, e.g. IMI's)."""
    mapping: dict[str, str] = {}
    if not spec:
        return mapping
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        field, sep, column = item.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not field or not column:
            raise CausalvisError(f"--map: {item!r} is not FIELD=COLUMN")
        if field not in fields:
            raise CausalvisError(
                f"--map: unknown field {field!r}; known fields: {', '.join(fields)}"
            )
        if field in mapping:
            raise CausalvisError(f"--map: field {field!r} mapped twice")
        mapping[field] = column
    return mapping


def load_csv(path: str | Path, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """Read a trial-level CSV and return the canonical table.

    Unmapped canonical fields are taken from same-named columns when present.
    """
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(f"--responses-csv: no such file {path}")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CausalvisError(f"{path}: cannot read as CSV: {exc}") from exc
    return canonicalize(raw, mapping or {}, source=str(path))


def canonicalize(raw: pd.DataFrame, mapping: dict[str, str], source: str = "responses") -> pd.DataFrame:
    """Rename mapped columns, check required fields, normalise types.

    Adds ``is_catch`` and ``is_main`` (main = kind ``main`` and not catch): only main
    trials enter accuracy; practice, repeated and other kinds are kept but ignored there.
    """
    missing_cols = [c for c in mapping.values() if c not in raw.columns]
    if missing_cols:
        raise CausalvisError(
            f"{source}: --map names column(s) not in the table: {', '.join(missing_cols)} "
            f"(columns: {', '.join(map(str, raw.columns))})"
        )
    df = pd.DataFrame(index=raw.index)
    for field in CANONICAL:
        column = mapping.get(field, field)
        if column in raw.columns:
            df[field] = raw[column].to_numpy()
    absent = [f for f in REQUIRED if f not in df.columns]
    if absent:
        raise CausalvisError(
            f"{source}: required field(s) {', '.join(absent)} missing; "
            f"map them with --map FIELD=COLUMN"
        )
    if df.empty:
        raise CausalvisError(f"{source}: no responses")
    for field in REQUIRED:
        if df[field].isna().any():
            raise CausalvisError(f"{source}: field {field!r} has empty values")
    df["participant_id"] = df["participant_id"].astype(str)
    df["condition"] = df["condition"].astype(str)
    df["correct"] = _as_bool(df["correct"], "correct", source)
    for field in ("unit", "trial_id", "base_trial_id", "layer", "session_id", "status", "side",
                  "model"):
        if field in df.columns:
            df[field] = df[field].map(_text).astype(object)
    if "image_set" in df.columns:
        df["image_set"] = df["image_set"].map(_set_text).astype(object)
    for field in ("choice", "left_option"):
        if field in df.columns:
            df[field] = df[field].map(lambda v: None if _text(v) is None else _text(v).lower())
    for field in (
        "confidence",
        "rt",
        "rel_diff",
        "channel",
        "total_time_s",
        "instruction_time_s",
        "practice_attempts",
    ):
        if field in df.columns:
            values = pd.to_numeric(df[field], errors="coerce")
            bad = values.isna() & df[field].notna()
            if bad.any():
                example = df.loc[bad, field].iloc[0]
                raise CausalvisError(f"{source}: field {field!r} has non-numeric value {example!r}")
            df[field] = values.astype(float)
    if "catch" in df.columns:
        df["catch"] = _as_bool(df["catch"].fillna(False), "catch", source)
    if "kind" in df.columns:
        df["kind"] = df["kind"].map(lambda v: "main" if pd.isna(v) else str(v).strip().lower())
    else:
        df["kind"] = "main"
    is_catch = (df["kind"] == "catch").to_numpy()
    if "catch" in df.columns:
        is_catch = is_catch | df["catch"].to_numpy(dtype=bool)
    df["is_catch"] = is_catch
    df["is_main"] = (df["kind"] == "main").to_numpy() & ~is_catch
    return df.reset_index(drop=True)


def _text(v: object) -> str | None:
    """Text of a cell; empty, NaN and NA become None."""
    if v is None or (not isinstance(v, str) and pd.isna(v)):
        return None
    s = str(v).strip()
    return s or None


def _set_text(v: object) -> str | None:
    """Image-set label; integral numbers print without a decimal point (3.0 -> "3")."""
    s = _text(v)
    if s is None:
        return None
    try:
        f = float(s)
    except ValueError:
        return s
    return str(int(f)) if f.is_integer() else s


def _as_bool(series: pd.Series, field: str, source: str) -> pd.Series:
    if series.dtype == bool:
        return series
    out = np.zeros(len(series), dtype=bool)
    for i, v in enumerate(series.to_numpy()):
        if isinstance(v, bool | np.bool_):
            out[i] = bool(v)
            continue
        if isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
            out[i] = bool(v)
            continue
        s = str(v).strip().lower()
        if s in _TRUE:
            out[i] = True
        elif s not in _FALSE:
            raise CausalvisError(
                f"{source}: field {field!r} must be boolean (true/false/1/0), got {v!r}"
            )
    return pd.Series(out, index=series.index)


def join_trials(df: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Fill per-trial columns (unit, layer, rel_diff, ...) from ``trials.csv`` by trial_id.

    A trial whose ``unit`` cell is empty gets ``LAYER:CHANNEL`` (``Unit.spec``, the one
    spelling of a ``unit`` column) from its layer and channel."""
    if "trial_id" not in df.columns or "trial_id" not in trials.columns:
        return df
    trials = trials.copy()
    trials["trial_id"] = trials["trial_id"].astype(str)
    if "image_set" in trials.columns:  # "3" and "3.0" must join as the same set
        trials["image_set"] = trials["image_set"].map(_set_text)
    if {"layer", "channel"} <= set(trials.columns):
        trials["unit"] = _units(trials)
    cols = [c for c in TRIAL_COLUMNS if c in trials.columns]
    info = trials.set_index("trial_id")[cols]
    info = info[~info.index.duplicated()]
    out = df.copy()
    for col in cols:
        looked_up = out["trial_id"].map(info[col])
        if col in ("unit", "layer", "base_trial_id", "image_set", "model"):
            looked_up = looked_up.map(_text)
        elif col in ("rel_diff", "channel"):
            looked_up = pd.to_numeric(looked_up, errors="coerce").astype(float)
        if col in out.columns:
            out[col] = out[col].where(out[col].notna(), looked_up)
        else:
            out[col] = looked_up
    return out


def _units(trials: pd.DataFrame) -> list[str | None]:
    given = trials["unit"].map(_text) if "unit" in trials.columns else [None] * len(trials)
    channels = pd.to_numeric(trials["channel"], errors="coerce")
    return [
        unit if unit is not None or _text(layer) is None or pd.isna(ch)
        else unit_spec(str(layer).strip(), int(ch))
        for unit, layer, ch in zip(given, trials["layer"], channels, strict=True)
    ]


@dataclass(frozen=True)
class StudyInputs:
    """The study-folder files an analysis reads, each parsed once: ``study.toml`` (None
    without one) and ``trials.csv`` (typed, :func:`causalvis.store.trials.read_trials`;
    None without one)."""

    paths: StudyPaths
    config: StudyConfig | None
    trials: pd.DataFrame | None

    @classmethod
    def read(cls, study: str | Path | StudyInputs) -> StudyInputs:
        if isinstance(study, StudyInputs):
            return study
        paths = StudyPaths(Path(study))
        if not paths.root.is_dir():
            raise CausalvisError(f"no study folder at {paths.root}")
        config = StudyConfig.load(paths.config) if paths.config.is_file() else None
        trials = (read_trials(paths.trials, required=export.TRIALS_REQUIRED)
                  if paths.trials.is_file() else None)
        return cls(paths, config, trials)


def load_study(study: str | Path | StudyInputs, db_url: str | None = None) -> pd.DataFrame:
    """Responses of a study (its database, default ``STUDY/responses.sqlite``), canonical,
    joined with ``STUDY/trials.csv``."""
    inputs = StudyInputs.read(study)
    paths = inputs.paths
    if db_url is None:
        if not paths.database.is_file():
            raise CausalvisError(
                f"no responses database at {paths.database} (run `causalvis serve` first, "
                "pass --db URL, or use --responses-csv)"
            )
        db_url = f"sqlite:///{paths.database}"
    raw = export.responses_frame(db_url, paths.root, trials=inputs.trials)
    df = canonicalize(raw, {}, source=db_url)
    if inputs.trials is not None:
        df = join_trials(df, inputs.trials)
    return df
