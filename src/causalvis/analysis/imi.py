"""Import the IMI dataset's trial-level responses (Zimmermann, Klein & Brendel, NeurIPS 2023,
"Scale alone does not improve mechanistic interpretability in vision models";
github.com/brendel-group/imi, data on zenodo.org/records/8131197).

The released CSVs (``responses_main.csv`` = passed checks, ``responses_lower_quality.csv``,
``responses_all.csv``) are written by the "Export Data" cell of the authors'
``tools/data_analysis/comparison.ipynb``: one row per jsPsych trial of the
``2afc-image-confidence-response`` plugin, with the trial structure and the per-HIT check
results appended. The columns used here (defaults of :data:`IMI_COLUMNS`, overridable with
``--map ROLE=COLUMN``):

======================  =====================================================================
``participant_id``      anonymised worker (``P0001`` …)
``model``               model of the experiment (``googlenet``, ``resnet50``, ``clip-vit_b32``,
                        ``resnet50_hard95`` …; catch trials carry ``catch/manual``)
``layer``, ``channel``  the unit; our ``unit`` is ``layer:channel``
``mode``                explanation: ``natural`` / ``optimized`` (= our ``synthetic``);
                        ``catch_trial`` on catch rows
``batch``               image set of the unit (our ``image_set``)
``correct``             bool; ``confidence`` 1..3; ``rt`` in ms
``is_demo``             practice trial; ``catch_trial``: catch trial
``task_id``             HIT task; with ``corrected_trial_index`` it identifies the trial shown
                        to every participant of that task; ``response_index`` the response
``button_pressed``      0–2 = a confidence button of the upper query, 3–5 of the lower
``total_response_time_details_extracted`` (s), ``instruction_time_details_extracted`` (s),
``demo_trials_details_extracted`` (practice blocks): per-HIT check values
``multi_participation`` responses the authors flagged as flawed (dropped here)
``passed_checks``       per-HIT result of the authors' checks, honoured when present
======================  =====================================================================

As IMI analyses it: the unit of exclusion is the **HIT response** (``task_id`` /
``response_index`` / worker), so ``participant_id`` here is that HIT and the worker is kept
in ``worker_id`` (a worker with several HITs is judged per HIT). A model name with a
difficulty suffix (``resnet50_hard95``: a separate, harder experiment) is split into
``model`` = ``resnet50`` and ``difficulty`` = ``hard95``; unsuffixed models are ``easy``,
the difficulty of IMI's main figure.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd

from causalvis.analysis.load import canonicalize
from causalvis.errors import CausalvisError

# Canonical role -> IMI column (the roles ``--map`` may override for ``--format imi``).
IMI_COLUMNS: dict[str, str] = {
    "participant_id": "participant_id",
    "correct": "correct",
    "confidence": "confidence",
    "rt": "rt",
    "model": "model",
    "layer": "layer",
    "channel": "channel",
    "condition": "mode",
    "image_set": "batch",
    "is_demo": "is_demo",
    "catch_trial": "catch_trial",
    "task_id": "task_id",
    "trial_index": "corrected_trial_index",
    "response_index": "response_index",
    "button_pressed": "button_pressed",
    "total_time_s": "total_response_time_details_extracted",
    "instruction_time_s": "instruction_time_details_extracted",
    "practice_attempts": "demo_trials_details_extracted",
    "multi_participation": "multi_participation",
    "passed_checks": "passed_checks",
}
# IMI's harder query windows were separate experiments named <model>_hard<percentile>.
_DIFFICULTY = re.compile(r"^(?P<model>.+?)_(?P<difficulty>hard\d{2})$")
EASY = "easy"
REQUIRED_ROLES = ("participant_id", "correct", "condition", "layer", "channel")
# Raw check columns holding a dict (written as its repr) when the extracted ones are absent.
_DETAILS = {
    "total_time_s": ("total_response_time_details", "total_time"),
    "instruction_time_s": ("instruction_time_details", "total_time"),
    "practice_attempts": ("demo_trials_details", "n_demo_trials_blocks"),
}
MODES = {"natural": "natural", "optimized": "synthetic", "synthetic": "synthetic"}
# The paper's models in the order of its main figure ("Model (Ordered by Scale)", the
# experiments list of comparison.ipynb), used to order models.
MODEL_ORDER = ("googlenet", "densenet_201", "resnet50", "resnet50-l2", "clip-resnet50",
               "wide_resnet50", "in1k-vit_b32", "clip-vit_b32", "convnext_b")


def load_imi_csv(path: str | Path, mapping: dict[str, str] | None = None) -> pd.DataFrame:
    """The IMI response CSV as the canonical response table (with ``model``).

    ``mapping`` overrides the IMI column of a role (keys of :data:`IMI_COLUMNS`). Rows the
    authors flagged ``multi_participation`` are dropped; their count is kept in
    ``df.attrs["imi"]``.
    """
    path = Path(path)
    if not path.is_file():
        raise CausalvisError(f"--responses-csv: no such file {path}")
    try:
        raw = pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise CausalvisError(f"{path}: cannot read as CSV: {exc}") from exc
    return imi_frame(raw, mapping, source=str(path))


def imi_frame(raw: pd.DataFrame, mapping: dict[str, str] | None = None,
              source: str = "IMI responses") -> pd.DataFrame:
    """:func:`load_imi_csv` on a frame already in memory."""
    mapping = mapping or {}
    unknown = sorted(set(mapping) - set(IMI_COLUMNS))
    if unknown:
        raise CausalvisError(f"--map (IMI format): unknown role(s) {', '.join(unknown)}; "
                             f"roles: {', '.join(IMI_COLUMNS)}")
    cols = {**IMI_COLUMNS, **mapping}
    bad = [f"{r}={c}" for r, c in mapping.items() if c not in raw.columns]
    if bad:
        raise CausalvisError(f"{source}: --map names column(s) not in the table: "
                             f"{', '.join(bad)}")
    absent = [f"{r} (column {cols[r]!r})" for r in REQUIRED_ROLES if cols[r] not in raw.columns]
    if absent:
        raise CausalvisError(f"{source}: not in the IMI layout, missing {', '.join(absent)}; "
                             "map them with --map ROLE=COLUMN")

    def col(role: str) -> pd.Series | None:
        return raw[cols[role]] if cols[role] in raw.columns else None

    n_flawed = 0
    mp = col("multi_participation")
    if mp is not None:
        flawed = _truthy(mp, "multi_participation", source)
        n_flawed = int(flawed.sum())
        raw = raw.loc[~flawed].reset_index(drop=True)
    if raw.empty:
        raise CausalvisError(f"{source}: no responses")

    demo = _truthy(col("is_demo"), "is_demo", source) if col("is_demo") is not None \
        else np.zeros(len(raw), bool)
    catch = _truthy(col("catch_trial"), "catch_trial", source) if col("catch_trial") is not None \
        else np.zeros(len(raw), bool)
    mode = col("condition").map(lambda v: None if pd.isna(v) else str(v).strip().lower())
    catch = catch | (mode == "catch_trial").to_numpy()
    kind = np.where(demo, "practice", np.where(catch, "catch", "main"))
    main = kind == "main"
    out = pd.DataFrame({"participant_id": col("participant_id").astype(str),
                        "correct": col("correct"), "kind": kind})
    condition = mode.map(lambda m: MODES.get(m, m) if m is not None else None)
    unknown_modes = sorted({m for m in condition[main].dropna() if m not in MODES.values()})
    if unknown_modes:
        raise CausalvisError(f"{source}: unknown explanation mode(s) {', '.join(unknown_modes)} "
                             f"in column {cols['condition']!r} (expected natural / optimized)")
    model = col("model").map(lambda v: None if pd.isna(v) else str(v).strip())
    model, difficulty = split_difficulty(model)
    layer = col("layer").map(lambda v: None if pd.isna(v) else str(v).strip())
    channel = pd.to_numeric(col("channel"), errors="coerce")
    # Practice and catch trials belong to the session of a model and condition; the export
    # leaves them without one (catch rows say "catch/manual"): take the session's.
    session = _session_ids(raw, cols)
    out["session_id"] = session
    out["worker_id"] = out["participant_id"]
    out["participant_id"] = session  # IMI excludes per HIT response, not per worker
    out["model"] = _fill_from_session(model.where(main), session)
    out["difficulty"] = _fill_from_session(difficulty.where(main), session)
    out["condition"] = _fill_from_session(condition.where(main), session)
    if out["condition"].isna().any():
        n = int(out["condition"].isna().sum())
        raise CausalvisError(f"{source}: {n} row(s) have no explanation mode and their session "
                             "has no main trial to take it from")
    out["layer"] = layer.where(main)
    out["channel"] = channel.where(main)
    out["unit"] = [f"{la}:{int(ch)}" if m and la is not None and pd.notna(ch) else None
                   for m, la, ch in zip(main, layer, channel, strict=True)]
    for role in ("confidence", "rt"):
        if col(role) is not None:
            out[role] = col(role).to_numpy()
    if col("image_set") is not None:
        out["image_set"] = col("image_set").where(main)
    if col("trial_index") is not None and col("task_id") is not None:
        idx = pd.to_numeric(col("trial_index"), errors="coerce")
        out["trial_id"] = [f"{t}#{int(i)}" if k != "practice" and pd.notna(i) else None
                           for t, i, k in zip(col("task_id"), idx, kind, strict=True)]
    if col("button_pressed") is not None:
        b = pd.to_numeric(col("button_pressed"), errors="coerce")
        out["side"] = np.where(b.isna(), None, np.where(b < 3, "upper", "lower"))
    for role in ("total_time_s", "instruction_time_s", "practice_attempts"):
        values = _check_value(raw, cols[role], *_DETAILS[role])
        if values is not None:
            out[role] = values
    if col("passed_checks") is not None:
        passed = col("passed_checks")
        known = passed.notna().to_numpy()
        flags = _truthy(passed.where(passed.notna(), False), "passed_checks", source)
        out["passed_checks"] = np.where(known, flags, None)
    df = canonicalize(out, {}, source=source)
    df.attrs["imi"] = {"dropped_multi_participation": n_flawed,
                       "n_rows": int(len(df)), "columns": cols,
                       "difficulties": sorted(df["difficulty"].dropna().unique().tolist()),
                       "exclusion_unit": "HIT response (task_id/response_index/worker)"}
    return df


def split_difficulty(models: pd.Series) -> tuple[pd.Series, pd.Series]:
    """``resnet50_hard95`` -> (``resnet50``, ``hard95``); other names -> (name, ``easy``)."""
    def one(v: object) -> tuple[object, object]:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return None, None
        m = _DIFFICULTY.match(str(v))
        return (m["model"], m["difficulty"]) if m else (v, EASY)
    pairs = [one(v) for v in models.to_numpy()]
    return (pd.Series([p[0] for p in pairs], index=models.index, dtype=object),
            pd.Series([p[1] for p in pairs], index=models.index, dtype=object))


def model_order(models) -> list[str]:
    """The IMI models in the paper's scale order, unknown ones after, alphabetically."""
    present = {str(m) for m in models}
    known = [m for m in MODEL_ORDER if m in present]
    return known + sorted(present - set(known))


def _truthy(series: pd.Series, name: str, source: str) -> np.ndarray:
    def one(v: object) -> bool:
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            return False
        if isinstance(v, bool | np.bool_ | int | float | np.integer | np.floating):
            return bool(v)
        s = str(v).strip().lower()
        if s in ("true", "1", "yes", "t", "1.0"):
            return True
        if s in ("false", "0", "no", "f", "0.0", ""):
            return False
        raise CausalvisError(f"{source}: column {name!r} must be boolean, got {v!r}")
    return np.array([one(v) for v in series.to_numpy()], dtype=bool)


def _session_ids(raw: pd.DataFrame, cols: dict[str, str]) -> pd.Series:
    """One id per HIT response: task and response index (participant when absent)."""
    parts = [raw[cols[r]].astype(str) for r in ("task_id", "response_index")
             if cols[r] in raw.columns]
    if not parts:
        return raw[cols["participant_id"]].astype(str)
    sid = parts[0]
    for p in parts[1:]:
        sid = sid + "/" + p
    return sid + "/" + raw[cols["participant_id"]].astype(str)


def _fill_from_session(values: pd.Series, session: pd.Series) -> pd.Series:
    """Missing values take the most frequent value of their session's main rows."""
    frame = pd.DataFrame({"v": values, "s": session.to_numpy()})
    common = frame.dropna().groupby("s")["v"].agg(lambda v: v.value_counts().index[0])
    return values.where(values.notna(), session.map(common)).astype(object)


def _check_value(raw: pd.DataFrame, column: str, details: str, key: str) -> pd.Series | None:
    """A per-HIT check value: the extracted column, else parsed from the details dict."""
    if column in raw.columns:
        return pd.to_numeric(raw[column], errors="coerce")
    if details not in raw.columns:
        return None

    def parse(v: object) -> float:
        if not isinstance(v, str):
            return float("nan")
        try:
            d = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            return float("nan")
        x = d.get(key) if isinstance(d, dict) else None
        return float(x) if isinstance(x, int | float) else float("nan")
    return raw[details].map(parse).astype(float)
