"""The trial rule (pure): which two occlusions of a query make a trial.

Option A = the position whose occlusion leaves the **highest** activation (global argmax
of the map). Option B = the position leaving the **lowest** activation (paper default:
global argmin); with ``min_distance`` / ``no_overlap`` B is the argmin among positions
that satisfy the constraint relative to A. ``rel_diff = (act_A - act_B) / |act_base|``
is the trial's difficulty (small = hard); pairs below ``min_rel_diff`` are rejected.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from causalvis.stimuli.occlusion import Grid


@dataclass(frozen=True)
class Pair:
    """A selected pair of flat position indices with the sweep's activations."""

    index_a: int
    index_b: int
    act_base: float
    act_a: float
    act_b: float

    @property
    def rel_diff(self) -> float:
        return relative_difference(self.act_a, self.act_b, self.act_base)


def relative_difference(act_a: float, act_b: float, act_base: float) -> float:
    """``|A - B| / |base|`` (inf when the unoccluded activation is exactly zero)."""
    diff = abs(float(act_a) - float(act_b))
    return diff / abs(float(act_base)) if act_base != 0 else float("inf")


def allowed_b(grid: Grid, index_a: int, min_distance: float, no_overlap: bool) -> np.ndarray:
    """Boolean mask over flat positions: where B may lie given A (never A itself)."""
    pos = grid.positions().astype(np.float64)
    d = pos - pos[index_a]
    ok = np.ones(len(pos), dtype=bool)
    if min_distance > 0:  # centres differ by the same vector as the corners
        ok &= np.hypot(d[:, 0], d[:, 1]) >= min_distance
    if no_overlap:
        ok &= (np.abs(d[:, 0]) >= grid.patch) | (np.abs(d[:, 1]) >= grid.patch)
    ok[index_a] = False
    return ok


def select_pair(
    act_map: np.ndarray,
    act_base: float,
    grid: Grid,
    *,
    min_rel_diff: float = 0.0,
    min_distance: float = 0.0,
    no_overlap: bool = False,
) -> Pair | None:
    """A = argmax, B = argmin under the constraints; None when no valid B exists or the
    pair is closer than ``min_rel_diff``."""
    flat = np.asarray(act_map, dtype=np.float64).ravel()
    if flat.size != len(grid.positions()):
        raise ValueError(f"map has {flat.size} values, grid has {len(grid.positions())}")
    index_a = int(np.argmax(flat))
    ok = allowed_b(grid, index_a, min_distance, no_overlap)
    if not ok.any():
        return None
    index_b = int(np.argmin(np.where(ok, flat, np.inf)))
    pair = Pair(index_a, index_b, float(act_base), float(flat[index_a]), float(flat[index_b]))
    if pair.act_a <= pair.act_b or pair.rel_diff < min_rel_diff:
        return None
    return pair


def rank_candidates(pairs: list[Pair | None]) -> list[int]:
    """Candidate queries with a valid pair, largest relative difference first (ties: the
    lower candidate index, i.e. the exemplar set's own query, wins)."""
    valid = [i for i, p in enumerate(pairs) if p is not None]
    return sorted(valid, key=lambda i: (-pairs[i].rel_diff, i))
