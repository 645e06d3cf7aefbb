"""Simulated participants with known accuracies, to validate the analysis.

Model: P(correct) = sigmoid(mu_c + a_p + b_u), participant effects a ~ N(0, sd_p²), unit
effects b ~ N(0, sd_u²) (logit-normal). ``mu_c`` is solved so that the *population*
accuracy E[sigmoid(mu_c + a + b)] equals the requested value (``stats.logit_location``,
the integral the power analysis uses too).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.special import expit

from causalvis.analysis.stats import logit_location


def simulate_responses(
    accuracies: dict[str, float],
    *,
    n_participants: int = 20,
    n_units: int = 18,
    units_per_participant: int | None = None,
    sd_participant: float = 0.5,
    sd_unit: float = 0.7,
    n_catch: int = 3,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """A canonical response table and the true population accuracy per condition.

    Every participant sees ``units_per_participant`` (default: all) of ``n_units`` units,
    one main trial each, plus ``n_catch`` easy catch trials. Units are shared across
    conditions (the same trials in every condition, as in the paper).
    """
    rng = np.random.default_rng(seed)
    sd_total = float(np.hypot(sd_participant, sd_unit))
    b = rng.normal(0, sd_unit, n_units)
    per = units_per_participant or n_units
    frames = []
    for ci, (cond, acc) in enumerate(accuracies.items()):
        mu = logit_location(acc, sd_total)
        a = rng.normal(0, sd_participant, n_participants)
        units = np.stack([rng.permutation(n_units)[:per] for _ in range(n_participants)])
        p = expit(mu + a[:, None] + b[units])
        correct = rng.random(p.shape) < p
        pid = np.repeat([f"{cond}-{i:03d}" for i in range(n_participants)], per)
        frames.append(
            pd.DataFrame(
                {
                    "participant_id": pid,
                    "condition": cond,
                    "unit": [f"u{u:03d}" for u in units.ravel()],
                    "trial_id": [f"t{ci}-{u:03d}" for u in units.ravel()],
                    "base_trial_id": [f"b{u:03d}" for u in units.ravel()],
                    "kind": "main",
                    "correct": correct.ravel(),
                }
            )
        )
        if n_catch:
            frames.append(
                pd.DataFrame(
                    {
                        "participant_id": np.repeat(pid[::per], n_catch),
                        "condition": cond,
                        "unit": "catch",
                        "trial_id": [f"c{ci}-{j}" for _ in range(n_participants)
                                     for j in range(n_catch)],
                        "kind": "catch",
                        "correct": rng.random(n_participants * n_catch) < 0.97,
                    }
                )
            )
    df = pd.concat(frames, ignore_index=True)
    return df, dict(accuracies)
