"""Heuristic observers decide correctly where the answer is known by construction."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from causalvis.observers.heuristics import (
    CenterObserver,
    SaliencyObserver,
    VarianceObserver,
    saliency_map,
)
from causalvis.observers.observe import decisions_frame
from causalvis.observers.trials import AssetReader, Box, load_trials
from causalvis.store.layout import StudyPaths

from .conftest import TrialSpec, write_study


def _decide(tmp_path, specs, observer):
    root = write_study(tmp_path / "s", specs)
    paths = StudyPaths(root)
    trials = load_trials(paths.trials)
    return decisions_frame(trials, AssetReader(paths.bundle), [observer])


def test_box_centre_is_the_true_pixel_centre():
    box = Box.parse("10 20 30 60")
    assert box.center == (19.5, 39.5)  # pixels 10..29 and 20..59
    mask = np.zeros((80, 80), bool)
    mask[box.slices()] = True
    ys, xs = np.nonzero(mask)
    assert box.center == (xs.mean(), ys.mean())


def test_center_prefers_the_peripheral_patch(tmp_path, rng):
    q = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    specs = [
        # a in the corner, b on the centre: a keeps more
        TrialSpec(q, (0, 0, 16, 16), (24, 24, 40, 40), "a"),
        # same x, different y: only the row tells them apart (the original code's bug)
        TrialSpec(q, (24, 44, 40, 60), (24, 20, 40, 36), "a"),
        # same y, different x
        TrialSpec(q, (26, 24, 42, 40), (0, 24, 16, 40), "b"),
    ]
    d = _decide(tmp_path, specs, CenterObserver())
    assert d["choice"].tolist() == ["a", "a", "b"]
    assert d["hit"].tolist() == [1.0, 1.0, 1.0]


def test_center_matches_an_independent_computation_from_trials_csv(tmp_path, rng):
    specs = []
    for _ in range(40):
        w, h = (int(v) for v in rng.integers(6, 30, 2))
        boxes = []
        for _ in range(2):
            x0, y0 = (int(v) for v in rng.integers(0, 64 - 30, 2))
            boxes.append((x0, y0, x0 + w, y0 + h))
        specs.append(TrialSpec(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8),
                               boxes[0], boxes[1], str(rng.choice(["a", "b"]))))
    root = write_study(tmp_path / "s", specs)
    d = _decide(tmp_path / "again", specs, CenterObserver())
    table = pd.read_csv(StudyPaths(root).trials, dtype=str)
    grid_y, grid_x = np.mgrid[0:64, 0:64]
    centre = np.array([grid_x.mean(), grid_y.mean()])

    def distance(text: str) -> float:
        x0, y0, x1, y1 = (int(v) for v in text.split())
        mask = np.zeros((64, 64), bool)
        mask[y0:y1, x0:x1] = True
        return float(np.linalg.norm(np.array([grid_x[mask].mean(), grid_y[mask].mean()]) - centre))

    for row, (_, dec) in zip(table.itertuples(), d.iterrows(), strict=True):
        da, db = distance(row.box_a), distance(row.box_b)
        if abs(da - db) > 1e-9:
            assert dec["choice"] == ("a" if da > db else "b"), row.trial_id
        assert dec["delta"] == pytest.approx((da - db) / 64)


def test_variance_prefers_the_flat_patch(tmp_path, rng):
    q = np.full((64, 64, 3), 120, np.uint8)
    q[:, 32:] = rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)
    specs = [TrialSpec(q, (2, 10, 22, 30), (40, 10, 60, 30), "a"),
             TrialSpec(q, (40, 30, 60, 50), (5, 30, 25, 50), "b")]
    d = _decide(tmp_path, specs, VarianceObserver())
    assert d["choice"].tolist() == ["a", "b"]
    assert d["delta"].iloc[0] > 0.2


def test_saliency_prefers_the_plain_patch(tmp_path):
    # a small red disk on grey: a single "odd" object (periodic textures are, by design,
    # not salient for the spectral residual)
    q = np.full((96, 96, 3), 128, np.uint8)
    yy, xx = np.mgrid[0:96, 0:96]
    q[(yy - 68) ** 2 + (xx - 68) ** 2 < 64] = (250, 40, 40)
    sal = saliency_map(q)
    assert sal.shape == (96, 96)
    assert sal[60:76, 60:76].mean() > 3 * sal[:40, :40].mean()
    specs = [TrialSpec(q, (5, 5, 35, 35), (53, 53, 83, 83), "a"),
             TrialSpec(q, (53, 53, 83, 83), (5, 50, 35, 80), "b")]
    d = _decide(tmp_path, specs, SaliencyObserver())
    assert d["choice"].tolist() == ["a", "b"]


def test_observers_never_look_at_the_truth(tmp_path, rng):
    q = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    specs = [TrialSpec(q, (0, 0, 20, 20), (20, 20, 40, 40), c) for c in ("a", "b")]
    for obs in (CenterObserver(), VarianceObserver(), SaliencyObserver()):
        d = _decide(tmp_path / obs.name, specs, obs)
        assert d["choice"].iloc[0] == d["choice"].iloc[1]
        assert d["hit"].sum() == 1.0


def test_exact_ties_use_a_fair_seeded_coin(tmp_path, rng):
    q = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    # mirror-symmetric boxes: equal distance to the centre
    specs = [TrialSpec(q, (0, 20, 10, 30), (54, 20, 64, 30), "a") for _ in range(60)]
    d = _decide(tmp_path, specs, CenterObserver())
    assert (d["delta"] == 0).all()
    assert 15 < (d["choice"] == "a").sum() < 45
    assert d["choice"].tolist() == _decide(tmp_path / "2", specs, CenterObserver())["choice"].tolist()
