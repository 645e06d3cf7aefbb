"""The observer interface and the decision rule shared by every observer.

An observer maps each trial to a graded score Δ: positive means "option a keeps more
activation" (occluding a hurts the unit less), negative favours b, NaN means the observer
does not apply to this trial (e.g. a reference-based observer in the ``none`` condition).
Ties are broken by a coin seeded with the trial id, so a blind observer sits at chance
instead of always picking one side.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from causalvis.observers.trials import AssetReader, Trial


class Observer(Protocol):
    name: str
    uses_references: bool

    def deltas(self, trials: Sequence[Trial], reader: AssetReader) -> np.ndarray:
        """Graded scores, one per trial (float, NaN = not applicable)."""
        ...


def tie_coin(trial_id: str, observer: str) -> str:
    """A reproducible fair coin for exact ties."""
    digest = hashlib.sha256(f"{observer}\0{trial_id}".encode()).digest()
    return "a" if digest[0] % 2 == 0 else "b"


def decide(delta: float, trial_id: str, observer: str) -> str:
    """``a`` if Δ > 0, ``b`` if Δ < 0, a seeded coin on ties; ``""`` if not applicable."""
    if not np.isfinite(delta):
        return ""
    if delta > 0:
        return "a"
    if delta < 0:
        return "b"
    return tie_coin(trial_id, observer)


def signed_toward_truth(delta: np.ndarray, correct: Sequence[str]) -> np.ndarray:
    """Δ oriented so that positive means 'towards the correct option' (MIS convention)."""
    sign = np.where(np.asarray(correct) == "a", 1.0, -1.0)
    return np.asarray(delta, dtype=float) * sign
