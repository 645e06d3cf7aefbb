"""The one exclusion rule set (``[exclusion]`` / ``ExclusionConfig``; docs/analysis.md).

The dashboard, the export, the Prolific failed-checks completion code and the report all
decide here, from one per-participant table (:func:`participant_metrics` builds it from a
canonical response table, :func:`database_metrics` from the database rows, both through
:func:`_answer_counts`), so a participant the report excludes is flagged on the dashboard
under the same criterion name. A criterion can also *warn* without excluding: answers
faster than ``min_rt_ms`` are always listed in ``ExclusionResult.warnings`` (shown on the
dashboard, counted in the report), but exclude only beyond ``max_fast_fraction``; warnings
never enter ``flags``, ``excluded`` or the criteria's ``n_excluded``. Each criterion is evaluated independently so the report can
say how many participants it removed; a criterion whose data are absent is reported as
``available: false``: it is never silently counted as passed.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import ValidationError

from causalvis.config import (
    THRESHOLD_FIELDS,
    ExclusionConfig,
    StudyConfig,
    format_validation_error,
    preset,
)
from causalvis.errors import CausalvisError
from causalvis.responses.db import Participant, Response
from causalvis.responses.summary import (
    participant_label,
    practice_attempts,
    status_label,
    total_time_s,
)
from causalvis.store.layout import StudyPaths

# Every criterion, in the order the report lists them and the dashboard shows its flags.
CRITERIA = ("catch_accuracy", "total_time", "instruction_time", "practice_attempts",
            "missing_steps", "one_sided", "side_variability", "fast_answers",
            "passed_checks", "unfinished")  # fmt: skip
_NO_SIDE = "no side information (needs choice + left_option, or side)"


@dataclass
class ExclusionResult:
    included: list[str]
    excluded: list[str]
    criteria: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_participant: pd.DataFrame = field(default_factory=pd.DataFrame)
    # participant -> the criteria it fails, in CRITERIA order (the dashboard's flags).
    flags: dict[str, list[str]] = field(default_factory=dict)
    # participant -> criteria that flag it without excluding it (``fast_answers`` with
    # n_fast > 0 while fast_fraction <= max_fast_fraction). Never counted as exclusions.
    warnings: dict[str, list[str]] = field(default_factory=dict)
    # Turned away by the device check (status ``screened_out``): never in the sample, so
    # neither included nor excluded (the report counts them apart).
    screened_out: list[str] = field(default_factory=list)
    # The thresholds in force: "default" and each overridden condition in the data.
    thresholds: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "n_participants": len(self.included) + len(self.excluded),
            "n_included": len(self.included),
            "n_excluded": len(self.excluded),
            "excluded_participants": sorted(self.excluded),
            "n_screened_out": len(self.screened_out),
            "n_flagged_only": sum(1 for w in self.warnings.values() if w),
            "criteria": self.criteria,
            "thresholds": self.thresholds,
        }


def resolve_exclusion(
    study: StudyConfig | str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    fmt: str = "csv",
) -> ExclusionConfig:
    """The exclusion config in force: the study's (a config, a study folder or its
    study.toml), else IMI's for ``fmt="imi"``, else the defaults; then ``overrides``
    (None values are ignored), validated."""
    config = _study_config(study)
    if config is not None:
        base = config.exclusion
    elif fmt == "imi":
        base = preset("imi2023").exclusion
    else:
        base = ExclusionConfig()
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    if not given:
        return base
    merged = {**base.model_dump(), **given}
    if "conditions" not in given:
        # A threshold given here (a command-line option) is meant for everyone: it replaces
        # the same field in the per-condition overrides too (``none``'s own time window).
        merged["conditions"] = {
            c: rest for c, fields in base.conditions.items()
            if (rest := {k: v for k, v in fields.items() if k not in given})}
    try:
        return ExclusionConfig.model_validate(merged)
    except ValidationError as exc:
        raise CausalvisError(format_validation_error(exc, "exclusion options")) from exc


def _study_config(study: StudyConfig | str | Path | None) -> StudyConfig | None:
    if study is None or isinstance(study, StudyConfig):
        return study
    path = Path(study)
    if path.is_dir():
        path = StudyPaths(path).config
    return StudyConfig.load(path) if path.is_file() else None


# -- the per-participant table --------------------------------------------------------------

def participant_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """One row per participant of a canonical table (:mod:`causalvis.analysis.load`):
    catch / main counts, times, practice attempts, same-side share, status."""
    groups = df.groupby("participant_id", sort=True)
    out = pd.DataFrame(index=pd.Index(sorted(df["participant_id"].unique()), name="participant_id"))
    for col in ("total_time_s", "instruction_time_s", "practice_attempts"):
        if col in df.columns:
            out[col] = groups[col].max().reindex(out.index)
    if "status" in df.columns:
        out["status"] = groups["status"].last().reindex(out.index)
    if "condition" in df.columns:  # the condition's thresholds apply ([exclusion.conditions])
        out["condition"] = groups["condition"].first().reindex(out.index)
    if "passed_checks" in df.columns and df["passed_checks"].notna().any():
        # A source's own per-participant verdict (IMI's per-HIT checks): failed anywhere.
        known = df.dropna(subset=["passed_checks"])
        verdict = known.groupby("participant_id")["passed_checks"].agg(lambda v: bool(all(v)))
        out["passed_checks"] = verdict.reindex(out.index).astype(object)
    if {"session_id", "kind"} <= set(df.columns):
        # The table does not carry the plan: a session has practice if anyone practised in it.
        with_practice = set(df.loc[df["kind"] == "practice", "session_id"])
        out["practice_required"] = groups["session_id"].first().isin(with_practice)
    answers = df[["participant_id", "is_main", "is_catch", "correct"]]
    if "rt" in df.columns:  # ms (the loader converts)
        answers = answers.assign(rt_ms=pd.to_numeric(df["rt"], errors="coerce"))
    side = _chose_left(df)
    return _answer_counts(out, answers if side is None else answers.assign(left=side))


def database_metrics(
    participants: Iterable[Participant], responses: Mapping[int, Sequence[Response]],
    practice_sessions: Collection[str] | None = None,
) -> pd.DataFrame:
    """:func:`participant_metrics` of the database rows (``responses``: participant id ->
    its rows), without going through the export: the same values the export's columns give.
    ``practice_sessions``: the plan's sessions with practice (default: those in which
    anyone practised, as the export's table tells)."""
    people, answers = [], []
    participants = list(participants)
    if practice_sessions is None:
        practice_sessions = {p.session_id for p in participants
                             if any(r.kind == "practice" for r in responses.get(p.id, ()))}  # fmt: skip
    for p in participants:
        rows = responses.get(p.id, ())
        label = participant_label(p)
        people.append({
            "participant_id": label,
            "total_time_s": total_time_s(p) if p.finished_at else None,
            "instruction_time_s": p.instruction_time_s,
            "practice_attempts": practice_attempts(rows),
            "practice_required": p.session_id in practice_sessions,
            "status": status_label(p),
            "condition": p.condition,
        })  # fmt: skip
        for r in rows:
            known = r.choice is not None and r.left_option is not None
            answers.append({
                "participant_id": label, "is_main": r.kind == "main",
                "is_catch": r.kind == "catch", "correct": bool(r.correct),
                "left": float(r.choice == r.left_option) if known else np.nan,
                "rt_ms": np.nan if r.rt_ms is None else float(r.rt_ms),
            })  # fmt: skip
    out = pd.DataFrame(people, columns=["participant_id", "total_time_s", "instruction_time_s",
                                        "practice_attempts", "practice_required", "status",
                                        "condition"])
    out = out.set_index("participant_id").sort_index()
    for col in ("total_time_s", "instruction_time_s"):
        out[col] = out[col].astype(float)
    frame = pd.DataFrame(answers, columns=["participant_id", "is_main", "is_catch", "correct",
                                           "left", "rt_ms"])
    frame = frame.astype({"is_main": bool, "is_catch": bool, "correct": bool, "left": float,
                          "rt_ms": float})
    return _answer_counts(out, frame)


def _answer_counts(out: pd.DataFrame, answers: pd.DataFrame) -> pd.DataFrame:
    """Add the answer-based columns; ``answers`` has participant_id, is_main, is_catch,
    correct and, when the side is known at all, ``left`` (1 left / upper, 0 right, NaN),
    when reaction times are, ``rt_ms``."""
    catch = answers[answers["is_catch"]].groupby("participant_id")["correct"]
    main = answers[answers["is_main"]].groupby("participant_id")["correct"]
    out["n_catch"] = catch.size().reindex(out.index, fill_value=0)
    out["catch_accuracy"] = catch.mean().reindex(out.index)
    out["n_main"] = main.size().reindex(out.index, fill_value=0)
    out["n_main_correct"] = main.sum().reindex(out.index, fill_value=0).astype(int)
    if "left" in answers.columns:
        sided = answers[answers["left"].notna() & (answers["is_main"] | answers["is_catch"])]
        left = sided.groupby("participant_id")["left"].agg(["mean", "size"])
        out["same_side_fraction"] = np.maximum(left["mean"], 1 - left["mean"]).reindex(out.index)
        out["n_sided"] = left["size"].reindex(out.index).fillna(0)
        # IMI's "row variability": how often the less chosen side was chosen.
        rarer = np.minimum(left["mean"], 1 - left["mean"]) * left["size"]
        out["n_rarer_side"] = rarer.round().reindex(out.index)
    if "rt_ms" in answers.columns and answers["rt_ms"].notna().any():
        timed = answers[answers["rt_ms"].notna() & (answers["is_main"] | answers["is_catch"])]
        # The RTs themselves: the threshold is the config's, applied in :func:`evaluate`.
        rts = timed.groupby("participant_id")["rt_ms"].agg(lambda v: tuple(sorted(v)))
        out["rts_ms"] = rts.reindex(out.index).map(lambda v: v if isinstance(v, tuple) else ())
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


# -- the rules ------------------------------------------------------------------------------

def apply_exclusions(df: pd.DataFrame, cfg: ExclusionConfig | None = None, *,
                     min_side_choices: int | None = None) -> ExclusionResult:
    """:func:`evaluate` on a canonical response table."""
    return evaluate(participant_metrics(df), cfg, min_side_choices=min_side_choices)


def evaluate(m: pd.DataFrame, cfg: ExclusionConfig | None = None, *,
             min_side_choices: int | None = None) -> ExclusionResult:
    """Evaluate every criterion on a per-participant table; failing any one excludes.

    ``min_side_choices`` (default: ``cfg.min_choices_per_side``; 0 = off) is IMI's "row
    variability" check: each of the two answer positions must have been chosen at least
    that often on main + catch trials (IMI: 5 of 45)."""
    cfg = cfg or ExclusionConfig()
    side_given = min_side_choices is not None
    m = m.copy()
    ids = m.index.to_numpy()
    criteria: dict[str, dict[str, Any]] = {}
    masks: dict[str, pd.Series] = {}
    # Each participant's condition's thresholds ([exclusion.conditions]); the overridden
    # conditions present in the data are reported per criterion.
    conds = m["condition"] if "condition" in m.columns else pd.Series(None, index=m.index)
    present = sorted({str(c) for c in conds.dropna()} & set(cfg.conditions))
    per_cond = {c: cfg.for_condition(c) for c in present}

    def th(name: str) -> pd.Series:
        """Threshold ``name`` per participant (float; its condition's where overridden)."""
        value = float(getattr(cfg, name))
        out = pd.Series(value, index=m.index, dtype=float)
        for c, ccfg in per_cond.items():
            out[conds.astype(str) == c] = float(getattr(ccfg, name))
        return out

    def record(name: str, rule: Callable[[ExclusionConfig], str], mask: pd.Series | None,
               why_unavailable: str = "") -> None:
        text = rule(cfg)
        by_condition = {c: rule(ccfg) for c, ccfg in per_cond.items() if rule(ccfg) != text}
        if by_condition:  # every threshold that applies, in the rule text itself
            text += "; " + "; ".join(f"{c}: {r}" for c, r in by_condition.items())
        if mask is None:
            criteria[name] = {"rule": text, "available": False, "n_excluded": None,
                              "reason": why_unavailable}
        else:
            mask = mask.fillna(False).astype(bool)
            masks[name] = mask
            criteria[name] = {
                "rule": text,
                "available": True,
                "n_excluded": int(mask.sum()),
                "participants": sorted(map(str, ids[mask.to_numpy()])),
            }
        if by_condition:
            criteria[name]["rule_by_condition"] = {"default": rule(cfg), **by_condition}

    has_catch = bool((m["n_catch"] > 0).any())
    record(
        "catch_accuracy",
        lambda c: f"catch accuracy < {c.min_catch_accuracy:.3g}",
        (m["catch_accuracy"] < th("min_catch_accuracy") - 1e-9) if has_catch else None,
        "no catch trials in the data",
    )
    if has_catch:
        criteria["catch_accuracy"]["n_without_catch_trials"] = int((m["n_catch"] == 0).sum())
    record(
        "total_time",
        lambda c: f"total time outside [{c.min_total_time_s:g}, {c.max_total_time_s:g}] s",
        ((m["total_time_s"] < th("min_total_time_s"))
         | (m["total_time_s"] > th("max_total_time_s")))
        if _present(m, "total_time_s") else None,
        "no total_time_s column",
    )
    record(
        "instruction_time",
        lambda c: f"instruction time < {c.min_instruction_time_s:g} s",
        (m["instruction_time_s"] < th("min_instruction_time_s"))
        if _present(m, "instruction_time_s") else None,
        "no instruction_time_s column",
    )
    record(
        "practice_attempts",
        lambda c: f"practice attempts > {c.max_practice_attempts}",
        (m["practice_attempts"] > th("max_practice_attempts"))
        if _present(m, "practice_attempts") else None,
        "no practice_attempts column",
    )
    record(
        "missing_steps",
        lambda c: "answered trials without recorded instructions, or without practice where "
        "the session has practice",
        _missing_steps(m),
        "no instruction_time_s column",
    )
    mask = None
    if _present(m, "same_side_fraction"):
        frac, t = m["same_side_fraction"], th("max_same_side_fraction")
        mask = ((frac >= 1.0 - 1e-12) & (t >= 1.0) | (frac > t) & (t < 1.0)) & (m["n_sided"] >= cfg.min_sided_trials)
    record(
        "one_sided",
        lambda c: "chose the same side on every trial" if c.max_same_side_fraction >= 1.0
        else f"same-side share > {c.max_same_side_fraction:g}",
        mask,
        _NO_SIDE,
    )
    sides = (pd.Series(float(min_side_choices), index=m.index) if side_given
             else th("min_choices_per_side"))  # fmt: skip

    def side_rule(c: ExclusionConfig) -> str:
        n = min_side_choices if side_given else c.min_choices_per_side
        return f"either answer position chosen fewer than {n} times" if n > 0 else "off"

    side_limits = ([min_side_choices] if side_given
                   else [c.min_choices_per_side for c in [cfg, *per_cond.values()]])
    if max(side_limits) > 0:
        record(
            "side_variability",
            side_rule,
            ((m["n_rarer_side"] < sides) & (m["n_sided"] > 1))
            if _present(m, "n_rarer_side") else None,
            _NO_SIDE,
        )
    fast = _fast_answers(m, th("min_rt_ms"))
    f = th("max_fast_fraction")

    def fast_rule(c: ExclusionConfig) -> str:
        if c.max_fast_fraction < 1.0:
            return (f"more than {c.max_fast_fraction:.3g} of main + catch answers faster than "
                    f"{c.min_rt_ms:g} ms")
        return f"answers faster than {c.min_rt_ms:g} ms (flagged, never excluded)"

    record(
        "fast_answers",
        fast_rule,
        None if fast is None else (m["fast_fraction"] > f + 1e-12) & (f < 1.0),
        "no reaction times (rt) in the data",
    )
    warned = pd.Series(False, index=m.index)
    if fast is not None:
        warned = fast & ~masks["fast_answers"]
        criteria["fast_answers"].update(
            min_rt_ms=cfg.min_rt_ms, max_fast_fraction=cfg.max_fast_fraction,
            n_flagged=int(fast.sum()),
            flagged_participants=sorted(map(str, ids[fast.to_numpy()])),
            n_fast_answers=int(m["n_fast"].sum()))
    if "passed_checks" in m.columns:  # only imported data sets carry a verdict of their own
        verdict = m["passed_checks"]
        record("passed_checks", lambda c: "the source's own checks failed (e.g. IMI's "
               "passed_checks)",
               verdict.notna() & (verdict == False))  # noqa: E712 - object column
    screened = (m["status"] == "screened_out") if "status" in m.columns \
        else pd.Series(False, index=m.index)
    if _present(m, "status"):
        record("unfinished", lambda c: "status is not 'finished'",
               (m["status"] != "finished") & ~screened)
    failed = pd.Series(False, index=m.index)
    for mask in masks.values():
        failed = failed | mask
    failed = failed & ~screened
    m["excluded"] = failed
    failing = {name: mask.to_numpy() for name, mask in masks.items()}
    flags = {str(pid): [name for name, fails in failing.items() if fails[i]]
             for i, pid in enumerate(ids)}  # fmt: skip
    warn = warned.to_numpy()
    warnings = {str(pid): ["fast_answers"] if warn[i] else [] for i, pid in enumerate(ids)}
    excluded = sorted(map(str, ids[failed.to_numpy()]))
    included = sorted(map(str, ids[~(failed | screened).to_numpy()]))
    thresholds = {name: {k: getattr(c, k) for k in THRESHOLD_FIELDS}
                  for name, c in {"default": cfg, **per_cond}.items()}  # fmt: skip
    return ExclusionResult(included, excluded, criteria, m, flags, warnings,
                           sorted(map(str, ids[screened.to_numpy()])), thresholds)


def is_fast(rt_ms: Any, min_rt_ms: float) -> Any:
    """The fast-answer rule (scalar or array): a reaction time below ``min_rt_ms``."""
    return rt_ms < min_rt_ms


def fast_answers_by_condition(df: pd.DataFrame, cfg: ExclusionConfig) -> dict[str, Any]:
    """Main + catch answers faster than ``min_rt_ms`` per condition of a canonical table
    (the report's count; the same rule as the ``fast_answers`` criterion)."""
    if "rt" not in df.columns or df["rt"].notna().sum() == 0:
        return {"available": False, "reason": "no reaction times (rt) in the data"}
    d = df[(df["is_main"] | df["is_catch"]) & df["rt"].notna()]
    limit = d["condition"].map(lambda c: cfg.for_condition(str(c)).min_rt_ms)
    d = d.assign(_fast=is_fast(d["rt"].astype(float), limit.astype(float)))
    by = {}
    for cond, g in d.groupby("condition", sort=True):
        fast = g[g["_fast"]]
        by[str(cond)] = {"n_answers": len(g), "n_fast": len(fast),
                         "min_rt_ms": cfg.for_condition(str(cond)).min_rt_ms,
                         "n_participants": int(g["participant_id"].nunique()),
                         "n_participants_fast": int(fast["participant_id"].nunique())}
    return {"available": True, "min_rt_ms": cfg.min_rt_ms,
            "max_fast_fraction": cfg.max_fast_fraction, "by_condition": by,
            "n_fast": int(d["_fast"].sum()), "n_answers": len(d)}


def _fast_answers(m: pd.DataFrame, min_rt_ms: pd.Series) -> pd.Series | None:
    """Adds ``n_fast`` (main + catch answers with rt < the participant's ``min_rt_ms``),
    ``fast_fraction`` and ``fast_flag`` (n_fast > 0) to ``m``; returns the flag, or None
    without RTs."""
    if "rts_ms" not in m.columns:
        return None
    rts = m["rts_ms"].map(lambda v: v if isinstance(v, tuple) else ())
    m["n_fast"] = pd.Series(
        [int(is_fast(np.asarray(v, float), t).sum()) for v, t in zip(rts, min_rt_ms, strict=True)],
        index=m.index,
    )
    n = rts.map(len)
    m["fast_fraction"] = (m["n_fast"] / n.where(n > 0)).astype(float)
    m["fast_flag"] = m["n_fast"] > 0
    return m["fast_flag"]


def _missing_steps(m: pd.DataFrame) -> pd.Series | None:
    """The server's flow (instructions, then practice, then trials) skipped: only data that
    reached the trials count (a participant who stopped before them is ``unfinished``)."""
    if "instruction_time_s" not in m.columns:
        return None
    answered = (m["n_main"] + m["n_catch"]) > 0
    missing = m["instruction_time_s"].isna()
    if {"practice_required", "practice_attempts"} <= set(m.columns):
        required = m["practice_required"].fillna(False).astype(bool)
        missing = missing | (required & (m["practice_attempts"].fillna(0) == 0))
    return answered & missing


def _present(m: pd.DataFrame, col: str) -> bool:
    return col in m.columns and bool(m[col].notna().any())
