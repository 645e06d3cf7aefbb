"""How many places, how long, how much: a study's recruitment numbers from its plan.

Pure arithmetic on the session plan and ``[experiment] seconds_per_trial`` (the server
shows no duration estimate of its own yet, so the estimate is made here): the longest
session's trials and practice at that pace plus a fixed allowance for consent and
instructions. Rewards are in minor units (pence / cents), as Prolific takes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.store.sessions import SessionPlan

# Consent, instructions and the end page, on top of the trials.
OVERHEAD_MINUTES = 3.0
# Prolific's minimum reward rate per hour, in minor units (docs: £6 / $8 per hour).
PROLIFIC_MIN_HOURLY = {"GBP": 600, "USD": 800}


@dataclass(frozen=True)
class RecruitPlan:
    places: int  # participants to recruit = the plan's planned participants (+ top-up)
    minutes: int  # estimated completion time, whole minutes
    reward: int  # per participant, minor units
    currency: str

    @property
    def hourly(self) -> float:
        """The pay per hour this reward gives at the estimated duration (minor units)."""
        return self.reward * 60.0 / self.minutes


def estimated_minutes(cfg: StudyConfig, plan: SessionPlan) -> int:
    """The longest session's trials + practice at ``seconds_per_trial``, plus overhead."""
    if not plan.sessions:
        raise CausalvisError("the session plan has no sessions (run `causalvis build` first)")
    n = max(len(s.trials) + len(s.practice) for s in plan.sessions)
    return math.ceil(n * cfg.experiment.seconds_per_trial / 60.0 + OVERHEAD_MINUTES)


def reward_for(minutes: int, hourly: int) -> int:
    """The reward (minor units, rounded up) that pays ``hourly`` for ``minutes``."""
    return math.ceil(hourly * minutes / 60.0)


def check_minimum(reward: int, minutes: int, currency: str) -> None:
    """Refuse a reward below Prolific's minimum rate, naming both rates."""
    minimum = PROLIFIC_MIN_HOURLY.get(currency)
    if minimum is None:
        raise CausalvisError(f"--currency {currency!r}: Prolific pays in "
                             f"{' or '.join(PROLIFIC_MIN_HOURLY)}")
    rate = reward * 60.0 / minutes
    if rate + 1e-9 < minimum:
        raise CausalvisError(
            f"reward {reward / 100:.2f} {currency} for {minutes} min is "
            f"{rate / 100:.2f} {currency}/h, below Prolific's minimum of "
            f"{minimum / 100:.2f} {currency}/h: raise --pay-per-hour")


def recruit_plan(cfg: StudyConfig, plan: SessionPlan, *, hourly: int, currency: str = "GBP",
                 top_up: int = 0, check: bool = True) -> RecruitPlan:
    """Places, minutes and reward for ``plan``; ``top_up`` extra places (abandoned)."""
    minutes = estimated_minutes(cfg, plan)
    reward = reward_for(minutes, hourly)
    if check:
        check_minimum(reward, minutes, currency)
    return RecruitPlan(plan.n_participants_needed + top_up, minutes, reward, currency)


def top_up_places(statuses: list[str]) -> int:
    """Places to add back: every abandoned session is handed out again by the server."""
    return sum(1 for s in statuses if s == "abandoned")


def chunks(n: int, size: int) -> list[int]:
    """``n`` split into parts of at most ``size`` (MTurk: ≤ 9 assignments per HIT)."""
    return [min(size, n - i) for i in range(0, n, size)] if n > 0 else []
