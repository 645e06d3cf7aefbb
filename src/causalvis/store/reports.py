"""The machine-readable reports in ``report/``: ``summary.json`` (``causalvis analyze``),
``observers.json`` + ``observer_trials.csv`` (``causalvis observe``) and ``power.json``
(``causalvis power``). One writer and one reader each; JSON is written without NaN (strict
JSON that any tool can read), atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from causalvis.errors import CausalvisError
from causalvis.store.layout import (
    SUMMARY_FILE,
    StudyPaths,
    atomic_path,
    atomic_write,
    read_json_file,
)
from causalvis.store.trials import read_text_table

# One row per applicable main trial and observer (docs/observers.md).
OBSERVER_TRIAL_COLUMNS: tuple[str, ...] = (
    "trial_id", "observer", "choice", "p_correct", "delta", "hit", "condition", "unit",
)
_OBSERVER_TRIAL_NUMBERS = ("p_correct", "delta", "hit")


def write_report_json(path: str | Path, obj: Any) -> None:
    """Strict JSON (a NaN is a bug in the caller, not a value), written atomically."""
    atomic_write(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def _read_report(path: Path, what: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = read_json_file(path, f"no {what} at {path}")
    if not isinstance(data, dict):
        raise CausalvisError(f"{path}: expected a JSON object ({what})")
    return data


def write_summary(out: str | Path, summary: dict[str, Any]) -> Path:
    """``summary.json`` in the report folder ``out`` (the study's ``report/`` or ``--out``)."""
    path = Path(out) / SUMMARY_FILE
    write_report_json(path, summary)
    return path


def read_summary(out: str | Path) -> dict[str, Any] | None:
    return _read_report(Path(out) / SUMMARY_FILE, "analysis summary")


def write_observers(paths: StudyPaths, summary: dict[str, Any], decisions: pd.DataFrame) -> None:
    """``observers.json`` and the per-trial decisions ``observer_trials.csv``."""
    missing = [c for c in OBSERVER_TRIAL_COLUMNS if c not in decisions.columns]
    if missing:
        raise ValueError(f"observer decisions lack columns {missing}")
    write_report_json(paths.observers_report, summary)
    with atomic_path(paths.observer_trials) as tmp:
        decisions[list(OBSERVER_TRIAL_COLUMNS)].to_csv(tmp, index=False)


def read_observers_report(paths: StudyPaths) -> dict[str, Any] | None:
    """``observers.json``, or None before ``causalvis observe`` has run."""
    return _read_report(paths.observers_report, "observers report")


def read_observer_trials(paths: StudyPaths) -> pd.DataFrame | None:
    """``observer_trials.csv`` typed (ids and labels as text, numbers as float), or None."""
    path = paths.observer_trials
    if not path.is_file():
        return None
    frame = read_text_table(path, OBSERVER_TRIAL_COLUMNS)
    for col in _OBSERVER_TRIAL_NUMBERS:
        frame[col] = pd.to_numeric(frame[col].where(frame[col] != ""), errors="coerce")
    return frame


def write_power(paths: StudyPaths, result: dict[str, Any]) -> None:
    write_report_json(paths.power_report, result)


def read_power(paths: StudyPaths) -> dict[str, Any] | None:
    return _read_report(paths.power_report, "power analysis")
