"""Per-participant exclusion criteria (PROTOCOL.md defaults, ``ExclusionConfig``).

Each criterion is evaluated independently so the report can say how many participants it
removed. A criterion whose columns are absent is reported as ``available: false``: it is
never silently counted as passed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from causalvis.config import ExclusionConfig


@dataclass
class ExclusionResult:
    included: list[str]
    excluded: list[str]
    criteria: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_participant: pd.DataFrame = field(default_factory=pd.DataFrame)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_participants": len(self.included) + len(self.excluded),
            "n_included": len(self.included),
            "n_excluded": len(self.excluded),
            "excluded_participants": sorted(self.excluded),
            "criteria": self.criteria,
        }


def participant_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """One row per participant: catch accuracy, times, practice attempts, same-side share."""
    groups = df.groupby("participant_id", sort=True)
    out = pd.DataFrame(index=pd.Index(sorted(df["participant_id"].unique()), name="participant_id"))
    catch = df[df["is_catch"]]
    out["n_catch"] = catch.groupby("participant_id").size().reindex(out.index, fill_value=0)
    out["catch_accuracy"] = catch.groupby("participant_id")["correct"].mean().reindex(out.index)
    for col in ("total_time_s", "instruction_time_s", "practice_attempts"):
        if col in df.columns:
            out[col] = groups[col].max().reindex(out.index)
    side = _chose_left(df)
    if side is not None:
        answered = df.assign(_left=side)[side.notna() & (df["is_main"] | df["is_catch"])]
        left = answered.groupby("participant_id")["_left"].agg(["mean", "size"])
        frac = np.maximum(left["mean"], 1 - left["mean"])
        out["same_side_fraction"] = frac.reindex(out.index)
        out["n_sided"] = left["size"].reindex(out.index).fillna(0)
        # IMI's "row variability": how often the less chosen side was chosen.
        rarer = np.minimum(left["mean"], 1 - left["mean"]) * left["size"]
        out["n_rarer_side"] = rarer.round().reindex(out.index)
    if "status" in df.columns:
        out["status"] = groups["status"].last().reindex(out.index)
    return out


def _chose_left(df: pd.DataFrame) -> pd.Series | None:
    """1.0 where the participant clicked the left (or upper: IMI's layout) image, 0.0 right
    (lower), NaN unknown."""
    if "side" in df.columns:
        s = df["side"].map(lambda v: None if v is None else str(v).strip().lower())
        return s.map({"left": 1.0, "l": 1.0, "right": 0.0, "r": 0.0, "upper": 1.0, "top": 1.0,
                      "lower": 0.0, "bottom": 0.0}).astype(float)
    if {"choice", "left_option"} <= set(df.columns):
        known = df["choice"].notna() & df["left_option"].notna()
        return (df["choice"] == df["left_option"]).astype(float).where(known)
    return None


def apply_exclusions(df: pd.DataFrame, cfg: ExclusionConfig | None = None, *,
                     min_side_choices: int | None = None) -> ExclusionResult:
    """Evaluate every criterion; a participant failing any one is excluded.

    ``min_side_choices`` (default: ``cfg.min_choices_per_side``; 0 = off) is IMI's "row variability" check: each of the two answer positions must have
    been chosen at least that often on main + catch trials (IMI: 5 of 45)."""
    cfg = cfg or ExclusionConfig()
    if min_side_choices is None:
        min_side_choices = cfg.min_choices_per_side
    m = participant_metrics(df)
    ids = m.index.to_numpy()
    criteria: dict[str, dict[str, Any]] = {}
    failed = pd.Series(False, index=m.index)

    def record(name: str, rule: str, mask: pd.Series | None, why_unavailable: str = "") -> None:
        nonlocal failed
        if mask is None:
            criteria[name] = {"rule": rule, "available": False, "n_excluded": None,
                              "reason": why_unavailable}
            return
        mask = mask.fillna(False).astype(bool)
        failed = failed | mask
        criteria[name] = {
            "rule": rule,
            "available": True,
            "n_excluded": int(mask.sum()),
            "participants": sorted(map(str, ids[mask.to_numpy()])),
        }

    has_catch = bool(df["is_catch"].any())
    record(
        "catch_accuracy",
        f"catch accuracy < {cfg.min_catch_accuracy:.3g}",
        (m["catch_accuracy"] < cfg.min_catch_accuracy - 1e-9) if has_catch else None,
        "no catch trials in the data",
    )
    if "n_catch" in m and has_catch:
        criteria["catch_accuracy"]["n_without_catch_trials"] = int((m["n_catch"] == 0).sum())
    record(
        "total_time",
        f"total time outside [{cfg.min_total_time_s:g}, {cfg.max_total_time_s:g}] s",
        ((m["total_time_s"] < cfg.min_total_time_s) | (m["total_time_s"] > cfg.max_total_time_s))
        if _present(m, "total_time_s") else None,
        "no total_time_s column",
    )
    record(
        "instruction_time",
        f"instruction time < {cfg.min_instruction_time_s:g} s",
        (m["instruction_time_s"] < cfg.min_instruction_time_s)
        if _present(m, "instruction_time_s") else None,
        "no instruction_time_s column",
    )
    record(
        "practice_attempts",
        f"practice attempts > {cfg.max_practice_attempts}",
        (m["practice_attempts"] > cfg.max_practice_attempts)
        if _present(m, "practice_attempts") else None,
        "no practice_attempts column",
    )
    t = cfg.max_same_side_fraction
    if _present(m, "same_side_fraction"):
        frac = m["same_side_fraction"]
        mask = (frac >= 1.0 - 1e-12) if t >= 1.0 else (frac > t)
        mask = mask & (m["n_sided"] >= 2)
    else:
        mask = None
    record(
        "one_sided",
        "chose the same side on every trial" if t >= 1.0 else f"same-side share > {t:g}",
        mask,
        "no side information (needs choice + left_option, or side)",
    )
    if min_side_choices > 0:
        record(
            "side_variability",
            f"either answer position chosen fewer than {min_side_choices} times",
            ((m["n_rarer_side"] < min_side_choices) & (m["n_sided"] > 1))
            if _present(m, "n_rarer_side") else None,
            "no side information (needs choice + left_option, or side)",
        )
    if _present(m, "status"):
        record("unfinished", "status is not 'finished'", m["status"] != "finished")
    m["excluded"] = failed
    excluded = sorted(map(str, ids[failed.to_numpy()]))
    included = sorted(map(str, ids[~failed.to_numpy()]))
    return ExclusionResult(included, excluded, criteria, m)


def _present(m: pd.DataFrame, col: str) -> bool:
    return col in m.columns and bool(m[col].notna().any())
