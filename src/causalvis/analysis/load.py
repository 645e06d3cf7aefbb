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
    "difficulty",  # one difficulty level per experiment (IMI: easy, hard85, hard95, hard99)
    "worker_id",  # the person behind a participant_id that is one HIT (IMI)
    "passed_checks",  # a platform's or the authors' own per-participant check result
)
CANONICAL = REQUIRED + OPTIONAL
# Columns taken from STUDY/trials.csv when the responses lack them (joined on trial_id).
TRIAL_COLUMNS = ("base_trial_id", "unit", "layer", "channel", "image_set", "rel_diff", "model")

_TRUE = {"true", "t", "1", "yes", "y", "correct"}
_FALSE = {"false", "f", "0", "no", "n", "incorrect", "wrong"}


def parse_map(spec: str | None, fields: Sequence[str] = CANONICAL) -> dict[str, str]:
    """``"participant_id=subj,correct=hit"`` -> ``{"participant_id": "subj", ...}``;
    ``fields`` are the names allowed left of ``=`` (an importer's roles, e.g. IMI's).

    ``FIELD=`` (nothing after ``=``) maps the field to ``""``: the field is dropped, so a
    same-named column is not read for it."""
    mapping: dict[str, str] = {}
    if not spec:
        return mapping
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        field, sep, column = item.partition("=")
        field, column = field.strip(), column.strip()
        if not sep or not field:
            raise CausalvisError(f"--map: {item!r} is not FIELD=COLUMN (or FIELD= to drop it)")
        if field not in fields:
            raise CausalvisError(
                f"--map: unknown field {field!r}; known fields: {', '.join(fields)}"
            )
        if field in mapping:
            raise CausalvisError(f"--map: field {field!r} mapped twice")
        mapping[field] = column
    return mapping


def load_csv(path: str | Path, mapping: dict[str, str] | None = None, *, auto: bool = True,
             rt_unit: str = "ms", where: str | None = None,
             by: str | None = None) -> pd.DataFrame:
    """Read a trial-level CSV and return the canonical table (see :func:`canonicalize`).

    ``where``: a pandas query over the file's own columns (``--where``), applied first.
    ``by``: a column of the file whose values become the canonical ``level`` (``--by``:
    each level is also analysed on its own)."""
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(f"--responses-csv: no such file {path}")
    try:
        raw = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CausalvisError(f"{path}: cannot read as CSV: {exc}") from exc
    if where:
        raw = filter_rows(raw, where, source=str(path))
    if by is not None and by not in raw.columns:
        raise CausalvisError(f"--by: no column {by!r} in {path} "
                             f"(columns: {', '.join(map(str, raw.columns))})")
    df = canonicalize(raw, mapping or {}, source=str(path), auto=auto, rt_unit=rt_unit)
    if by is not None:
        df["level"] = raw[by].map(_set_text).to_numpy()
    df.attrs["load"].update(where=where, by=by)
    return df


def filter_rows(raw: pd.DataFrame, where: str, source: str = "responses") -> pd.DataFrame:
    """Rows matching a pandas query (``"difficulty == 'easy' and n_refs == 1"``)."""
    try:
        out = raw.query(where)
    except Exception as exc:  # pandas raises many kinds for a bad expression
        raise CausalvisError(f"--where {where!r}: {type(exc).__name__}: {exc} "
                             f"(columns: {', '.join(map(str, raw.columns))})") from None
    if out.empty:
        raise CausalvisError(f"{source}: no rows match --where {where!r}")
    return out


def resolve_mapping(columns: Sequence[str], mapping: dict[str, str],
                    auto: bool = True) -> dict[str, dict[str, str]]:
    """Which column each canonical field is read from: ``{field: {"column", "how"}}``,
    ``how`` = ``mapped`` (``--map``) or ``auto`` (a same-named column; only with ``auto``).
    A field mapped to ``""`` is dropped and never auto-detected."""
    cols = {str(c) for c in columns}
    missing = [c for c in mapping.values() if c and c not in cols]
    if missing:
        raise CausalvisError(
            f"--map names column(s) not in the table: {', '.join(missing)} "
            f"(columns: {', '.join(map(str, columns))})"
        )
    out: dict[str, dict[str, str]] = {}
    for field in CANONICAL:
        if field in mapping:
            if mapping[field]:
                out[field] = {"column": mapping[field], "how": "mapped"}
        elif auto and field in cols:
            out[field] = {"column": field, "how": "auto"}
    return out


def canonicalize(raw: pd.DataFrame, mapping: dict[str, str], source: str = "responses", *,
                 auto: bool = True, rt_unit: str = "ms") -> pd.DataFrame:
    """Read the mapped (and, with ``auto``, same-named) columns, check required fields,
    normalise types.

    Adds ``is_catch`` and ``is_main`` (main = kind ``main`` and not catch): only main
    trials enter accuracy; practice, repeated and other kinds are kept but ignored there.
    An auto-detected column whose values do not fit its field is skipped with a warning
    (the user did not ask for it); a mapped one is an error. ``df.attrs["load"]`` records
    the mapping used and the warnings (``--show-mapping``, ``summary.json`` "input").
    """
    if rt_unit not in RT_UNITS:
        raise CausalvisError(f"--rt-unit: unknown unit {rt_unit!r} (s | ms)")
    try:
        used = resolve_mapping(list(raw.columns), mapping, auto)
    except CausalvisError as exc:
        raise CausalvisError(f"{source}: {exc}") from None
    warnings: list[str] = []
    df = pd.DataFrame(index=raw.index)
    for field, m in used.items():
        df[field] = raw[m["column"]].to_numpy()
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

    def skip_or_fail(field: str, problem: str) -> None:
        if used[field]["how"] == "mapped":
            raise CausalvisError(f"{source}: field {field!r} {problem}")
        warnings.append(f"auto-detected column {used[field]['column']!r} not used for "
                        f"{field!r}: {problem} (map it, or drop it with --map {field}=)")
        del df[field]
        used[field] = {**used[field], "how": "skipped"}

    df["participant_id"] = df["participant_id"].astype(str)
    df["condition"] = df["condition"].map(_text).astype(object)
    df["correct"] = _as_bool(df["correct"], "correct", source)
    for field in ("unit", "trial_id", "base_trial_id", "layer", "session_id", "status",
                  "model", "difficulty", "worker_id"):
        if field in df.columns:
            df[field] = df[field].map(_text).astype(object)
    if "channel" in df.columns:
        df["channel"] = _channel(df["channel"])
    if "image_set" in df.columns:
        df["image_set"] = df["image_set"].map(_set_text).astype(object)
    if "side" in df.columns:
        sides = df["side"].map(_side)
        bad = sides.isna() & df["side"].map(_text).notna()
        if bad.any():
            skip_or_fail("side", f"has value {df.loc[bad, 'side'].iloc[0]!r}; sides are "
                         f"{', '.join(sorted(_SIDES))}")
        else:
            df["side"] = sides.astype(object)
    for field in ("choice", "left_option"):
        if field in df.columns:
            df[field] = df[field].map(lambda v: None if _text(v) is None else _text(v).lower())
    for field in ("confidence", "rt", "rel_diff", "total_time_s", "instruction_time_s",
                  "practice_attempts"):
        if field in df.columns:
            values = pd.to_numeric(df[field], errors="coerce")
            bad = values.isna() & df[field].notna()
            if bad.any():
                skip_or_fail(field, f"has non-numeric value {df.loc[bad, field].iloc[0]!r}")
            else:
                df[field] = values.astype(float)
    if "rt" in df.columns:
        df["rt"] = df["rt"] * RT_UNITS[rt_unit]
        warning = rt_unit_warning(raw[used["rt"]["column"]], rt_unit)
        if warning:
            warnings.append(warning)
    if "unit" not in df.columns and "channel" in df.columns:
        df["unit"] = _units(df)
        used["unit"] = {"column": "layer:channel" if "layer" in df.columns else "channel",
                        "how": "derived"}
    if "catch" in df.columns:
        df["catch"] = _as_bool(df["catch"].fillna(False), "catch", source)
    if "passed_checks" in df.columns:
        known = df["passed_checks"].notna().to_numpy()
        flags = _as_bool(df["passed_checks"].where(known, False), "passed_checks", source)
        df["passed_checks"] = pd.Series(np.where(known, flags, None), index=df.index,
                                        dtype=object)
    if "kind" in df.columns:
        df["kind"] = df["kind"].map(lambda v: "main" if pd.isna(v) else str(v).strip().lower())
    else:
        df["kind"] = "main"
    is_catch = (df["kind"] == "catch").to_numpy()
    if "catch" in df.columns:
        is_catch = is_catch | df["catch"].to_numpy(dtype=bool)
    df["is_catch"] = is_catch
    df["is_main"] = (df["kind"] == "main").to_numpy() & ~is_catch
    df = df.reset_index(drop=True)
    dropped = sorted(f for f, c in mapping.items() if not c)
    df.attrs["load"] = {"mapping": used, "dropped": dropped, "auto": auto,
                        "rt_unit": rt_unit, "warnings": warnings}
    return df


# Multiplier from the CSV's RT unit to milliseconds (the canonical unit).
RT_UNITS = {"ms": 1.0, "s": 1000.0}
# Below (ms) / above (s) this median the RT column looks like the other unit.
RT_PLAUSIBLE_MEDIAN = 20.0


def rt_unit_warning(values: pd.Series, rt_unit: str) -> str | None:
    """A warning when the median RT looks like the other unit (human 2-AFC answers take
    ~0.5–20 s): below 20 read as ms, or above 20 read as s."""
    v = pd.to_numeric(values, errors="coerce").dropna()
    if v.empty:
        return None
    med = float(v.median())
    if rt_unit == "ms" and med < RT_PLAUSIBLE_MEDIAN:
        return (f"rt: median {med:g} read as milliseconds looks like seconds; "
                f"pass --rt-unit s if it is")
    if rt_unit == "s" and med > RT_PLAUSIBLE_MEDIAN:
        return (f"rt: median {med:g} read as seconds looks like milliseconds; "
                f"pass --rt-unit ms if it is")
    return None


# Side spellings -> the exclusion rules' left/right (or upper/lower). Which of a/b or 0/1
# is "left" does not matter: the rules only count how often each side was chosen.
_SIDES = {"left": "left", "l": "left", "a": "left", "0": "left", "first": "left",
          "right": "right", "r": "right", "b": "right", "1": "right", "second": "right",
          "upper": "upper", "top": "upper", "lower": "lower", "bottom": "lower"}


def _side(v: object) -> str | None:
    s = _set_text(v)  # 0.0 -> "0"
    return None if s is None else _SIDES.get(s.lower())


def _channel(values: pd.Series) -> pd.Series:
    """Channel ids: numbers when every value is one (``float``, as before), else text
    (published data sets name channels ``channel_0``…)."""
    numeric = pd.to_numeric(values, errors="coerce")
    if not (numeric.isna() & values.notna()).any():
        return numeric.astype(float)
    return values.map(_set_text).astype(object)


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
    """``unit`` cells, filled from layer and channel: ``Unit.spec`` for a numeric channel,
    ``LAYER:CHANNEL`` or the channel alone for a text channel id."""
    given = trials["unit"].map(_text) if "unit" in trials.columns else [None] * len(trials)
    if "layer" not in trials.columns:  # the channel alone names the unit
        return [unit if unit is not None else _set_text(ch)
                for unit, ch in zip(given, trials["channel"], strict=True)]
    return [unit if unit is not None else _unit_of(layer, ch)
            for unit, layer, ch in zip(given, trials["layer"], trials["channel"], strict=True)]


def _unit_of(layer: object, channel: object) -> str | None:
    ch, layer = _set_text(channel), _text(layer)
    if ch is None or layer is None:
        return None
    return unit_spec(layer, int(ch)) if ch.isdigit() else f"{layer}:{ch}"


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
