"""The study design as the data show it, and conditions as the user names them.

Which test is right depends on who saw what: when the same participants answered in both
conditions of a contrast (within-subject), their answers in the two conditions are paired
and a test that shuffles labels across participants is wrong; when each participant saw
one condition (between-subject), labels are permuted between participants. This module
finds the design (per contrast and for the study), the baselines and the reference, and
applies the user's relabelling (``--conditions old=new,...``) and order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from causalvis.analysis.tables import condition_order
from causalvis.errors import CausalvisError

WITHIN, BETWEEN, MIXED = "within", "between", "mixed"


def pair_design(df: pd.DataFrame, a: str, b: str) -> dict[str, Any]:
    """Design of one contrast: ``within`` when every participant with trials in ``a`` or
    ``b`` has trials in both, ``between`` when none has, else ``mixed``."""
    seen = df[df["condition"].isin((a, b))].groupby("participant_id")["condition"].nunique()
    n_both = int((seen == 2).sum())
    n_one = int((seen == 1).sum())
    design = WITHIN if n_one == 0 else BETWEEN if n_both == 0 else MIXED
    return {"design": design, "n_participants_both": n_both, "n_participants_one": n_one}


def study_design(df: pd.DataFrame) -> dict[str, Any]:
    """Design over all conditions: ``within`` when every participant saw every condition,
    ``between`` when every participant saw one, else ``mixed``."""
    n_cond = int(df["condition"].nunique())
    per = df.groupby("participant_id")["condition"].nunique()
    if n_cond < 2:
        design = BETWEEN
    elif (per == n_cond).all():
        design = WITHIN
    elif (per == 1).all():
        design = BETWEEN
    else:
        design = MIXED
    return {"design": design, "n_conditions": n_cond,
            "conditions_per_participant": {"min": int(per.min()), "max": int(per.max())}}


def varies_within(df: pd.DataFrame, column: str) -> bool:
    """Whether some level of ``column`` (``participant_id``, ``unit``) has trials in more
    than one condition: then condition effects can vary between its levels, and the mixed
    model gives it random condition slopes (intercepts only when between)."""
    if column not in df.columns or df["condition"].nunique() < 2:
        return False
    return bool((df.groupby(column)["condition"].nunique() > 1).any())


def parse_conditions(spec: str | None) -> tuple[tuple[str, str], ...]:
    """``"natural=natural,optimized=synthetic"`` -> ``(("natural", "natural"), ...)``;
    a bare ``NAME`` keeps its name (``NAME=NAME``)."""
    out: list[tuple[str, str]] = []
    for item in (spec or "").split(","):
        item = item.strip()
        if not item:
            continue
        old, sep, new = item.partition("=")
        old, new = old.strip(), (new.strip() if sep else old.strip())
        if not old or not new:
            raise CausalvisError(f"--conditions: {item!r} is not OLD=NEW")
        if old in dict(out):
            raise CausalvisError(f"--conditions: condition {old!r} given twice")
        out.append((old, new))
    return tuple(out)


def relabel(df: pd.DataFrame, conditions: Sequence[tuple[str, str]]) -> tuple[pd.DataFrame,
                                                                               list[str]]:
    """Rename conditions (several old names may share a new one: a combined condition)
    and return the display order: the new names in the order given, then the others in
    the default order. A named condition absent from the data is an error (a typo would
    otherwise silently drop a contrast)."""
    present = set(df["condition"].dropna().astype(str))
    if not conditions:
        return df, condition_order(present)
    unknown = [old for old, _ in conditions if old not in present]
    if unknown:
        raise CausalvisError(f"--conditions: no condition {', '.join(map(repr, unknown))} in "
                             f"the data (conditions: {', '.join(sorted(present))})")
    names = dict(conditions)
    out = df.copy()
    out["condition"] = out["condition"].map(lambda c: names.get(c, c))
    order = list(dict.fromkeys(new for _, new in conditions))
    rest = condition_order(set(out["condition"].dropna()) - set(order))
    return out, order + rest


def baselines(conditions: Sequence[str], given: Sequence[str] = ()) -> list[str]:
    """The no-reference baselines: those given (each must be a condition), else ``none``
    if present, else every ``none_*`` condition (before/after blocks, kept apart)."""
    if given:
        missing = [b for b in given if b not in conditions]
        if missing:
            raise CausalvisError(f"--baseline: no condition {', '.join(map(repr, missing))} "
                                 f"(conditions: {', '.join(conditions)})")
        return list(given)
    if "none" in conditions:
        return ["none"]
    return [c for c in conditions if c.startswith("none_")]


def reference(conditions: Sequence[str], given: str | None = None) -> str | None:
    """The reference explanation of the contrasts: the one given, else ``natural`` if
    present."""
    if given:
        if given not in conditions:
            raise CausalvisError(f"--reference: no condition {given!r} "
                                 f"(conditions: {', '.join(conditions)})")
        return given
    return "natural" if "natural" in conditions else None
