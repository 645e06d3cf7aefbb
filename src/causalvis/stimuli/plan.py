"""Session planning (pure): which trials each session holds, balanced by construction.

A session is one condition x one image set x one group of main units (the units are split
into groups of at most ``max_units_per_session``). Every (unit, image set, condition) cell
therefore appears in exactly one session, and each session is planned for
``responses_per_cell`` participants, so every cell gets the same number of planned
responses and the number of participants needed is simply the sum over sessions.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from causalvis.store.seeds import opaque_id, stable_seed


@dataclass
class PlannedSession:
    session_id: str
    condition: str
    image_set: int
    units: list[str]
    trials: list[str] = field(default_factory=list)
    practice: list[str] = field(default_factory=list)
    planned_participants: int = 1
    model: str | None = None  # multi-model studies: every session shows one model
    practice_obvious: list[str] = field(default_factory=list)  # the obvious part of practice
    # the order each trial's references are shown in (indices), and the seed it came from
    reference_seed: int | None = None
    reference_order: dict[str, list[int]] = field(default_factory=dict)
    min_reference_order: dict[str, list[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        extra = {} if self.model is None else {"model": self.model}
        return {
            **extra,
            "session_id": self.session_id,
            "condition": self.condition,
            "image_set": self.image_set,
            "units": self.units,
            "trials": self.trials,
            "practice": self.practice,
            "practice_obvious": self.practice_obvious,
            "planned_participants": self.planned_participants,
        }


def unit_groups(units: list[str], max_per_session: int) -> list[list[str]]:
    """Split units into near-equal groups of at most ``max_per_session``."""
    if not units:
        return []
    n_groups = -(-len(units) // max_per_session)
    size = -(-len(units) // n_groups)
    return [units[i : i + size] for i in range(0, len(units), size)]


def plan_sessions(
    conditions: list[str],
    image_sets: list[int],
    units: list[str],
    *,
    max_units_per_session: int,
    responses_per_cell: int,
    seed: int,
    model: str | None = None,
) -> list[PlannedSession]:
    """The balanced grid of sessions (trials are filled in by the caller); ``model`` tags
    the sessions of one model of a multi-model study (and enters their ids)."""
    sessions = []
    groups = unit_groups(units, max_units_per_session)
    tag = () if model is None else (model,)
    for condition in conditions:
        for image_set in image_sets:
            for g, group in enumerate(groups):
                sid = opaque_id("s", seed, *tag, condition, image_set, g, length=10)
                sessions.append(
                    PlannedSession(
                        sid,
                        condition,
                        image_set,
                        list(group),
                        [],
                        [],
                        responses_per_cell,
                        model,
                    )
                )
    return sessions


def shuffled(items: list[str], *seed_parts: object) -> list[str]:
    out = list(items)
    random.Random(stable_seed(*seed_parts)).shuffle(out)
    return out


def balanced_labels(n: int, *seed_parts: object) -> list[str]:
    """``n`` correct-option labels, ``a`` and ``b`` as near-equal as possible
    (|#a - #b| <= 1) in a seeded order, so the label of the correct option carries no
    information (an odd ``n`` gets its extra label by a seeded coin)."""
    rng = random.Random(stable_seed("option-labels", *seed_parts))
    first, second = ("a", "b") if rng.random() < 0.5 else ("b", "a")
    labels = [first if i % 2 == 0 else second for i in range(n)]
    rng.shuffle(labels)
    return labels
