"""A hand-built study folder (trials.csv, bundle assets, sessions.json) per the contract of
docs/study-folder.md, with stimuli whose right answer is known by construction."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from causalvis.config import StudyConfig
from causalvis.store.assets import write_asset
from causalvis.store.layout import StudyPaths

COLUMNS = ["trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
           "image_set", "query_asset", "option_a_asset", "option_b_asset", "reference_assets",
           "box_a", "box_b", "act_base", "act_a", "act_b", "correct", "rel_diff"]


def occlude(query: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Fill the box with its own mean colour (the protocol's default fill)."""
    x0, y0, x1, y1 = box
    out = query.copy()
    out[y0:y1, x0:x1] = query[y0:y1, x0:x1].reshape(-1, 3).mean(0).round().astype(np.uint8)
    return out


@dataclass
class TrialSpec:
    query: np.ndarray
    box_a: tuple[int, int, int, int]
    box_b: tuple[int, int, int, int]
    correct: str
    unit: str = "blocks.3.2-c0001"
    condition: str = "none"
    kind: str = "main"
    image_set: int = 0
    references: list[np.ndarray] = field(default_factory=list)
    base_trial_id: str | None = None


def write_study(root: Path, specs: list[TrialSpec], *, config: StudyConfig | None = None) -> Path:
    """Write assets, trials.csv, sessions.json (one session per condition x image set)."""
    paths = StudyPaths(root)
    root.mkdir(parents=True, exist_ok=True)
    (config or StudyConfig(name="obs-test")).save(paths.config)
    rows = []
    for i, s in enumerate(specs):
        q = write_asset(paths, s.query)
        a = write_asset(paths, occlude(s.query, s.box_a))
        b = write_asset(paths, occlude(s.query, s.box_b))
        refs = " ".join(write_asset(paths, r) for r in s.references)
        layer, _, ch = s.unit.rpartition("-c")
        rows.append({
            "trial_id": f"t{i:04d}", "base_trial_id": s.base_trial_id or f"b{i:04d}",
            "kind": s.kind, "condition": s.condition, "unit": s.unit, "layer": layer,
            "channel": int(ch), "image_set": s.image_set, "query_asset": q,
            "option_a_asset": a, "option_b_asset": b, "reference_assets": refs,
            "box_a": " ".join(map(str, s.box_a)), "box_b": " ".join(map(str, s.box_b)),
            "act_base": 1.0, "act_a": 0.9 if s.correct == "a" else 0.2,
            "act_b": 0.2 if s.correct == "a" else 0.9, "correct": s.correct, "rel_diff": 0.7,
        })
    with paths.trials.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    sessions = []
    keys = sorted({(r["condition"], r["image_set"]) for r in rows if r["kind"] != "practice"})
    for k, (cond, b) in enumerate(keys):
        sessions.append({
            "session_id": f"s{k:04d}", "condition": cond, "image_set": b,
            "trials": [r["trial_id"] for r in rows if r["kind"] != "practice"
                       and (r["condition"], r["image_set"]) == (cond, b)],
            "practice": [r["trial_id"] for r in rows if r["kind"] == "practice"
                         and r["condition"] == cond],
            "planned_participants": 1,
        })
    plan = {"study": "obs-test", "task": "causal_occlusion", "config_hash": "x",
            "conditions": sorted({r["condition"] for r in rows}), "sessions": sessions,
            "instructions_example": {}, "n_participants_needed": len(sessions)}
    paths.sessions.write_text(json.dumps(plan, indent=2))
    return root


def textured(rng: np.random.Generator, size: int = 64) -> np.ndarray:
    return rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def mixed_study(tmp_path: Path) -> Path:
    """4 units x 2 image sets x conditions none/natural, + practice and catch trials.

    Queries: a flat grey left half and a noisy right half; option a occludes the flat
    half near a corner, option b the noisy half at the centre. ``correct`` alternates by
    unit, so heuristics that always pick a are right on exactly half the units.
    """
    gen = np.random.default_rng(1)
    specs = []
    units = [f"blocks.3.2-c{c:04d}" for c in range(4)]
    for cond in ("none", "natural"):
        for b in range(2):
            for j, unit in enumerate(units):
                q = np.full((64, 64, 3), 128, np.uint8)
                q[:, 32:] = gen.integers(0, 256, size=(64, 32, 3), dtype=np.uint8)
                refs = [] if cond == "none" else [textured(gen) for _ in range(3)]
                specs.append(TrialSpec(q, (0, 0, 20, 20), (30, 22, 50, 42),
                                       "a" if j % 2 == 0 else "b", unit=unit, condition=cond,
                                       image_set=b, references=refs,
                                       base_trial_id=f"base-{j}-{b}"))
            q = np.full((64, 64, 3), 90, np.uint8)
            specs.append(TrialSpec(q, (0, 0, 20, 20), (40, 40, 60, 60), "a",
                                   unit="blocks.5.3-c0009", condition=cond, kind="catch",
                                   image_set=b))
        specs.append(TrialSpec(np.full((64, 64, 3), 60, np.uint8), (0, 0, 20, 20),
                               (40, 40, 60, 60), "b", unit="blocks.5.3-c0010",
                               condition=cond, kind="practice"))
    return write_study(tmp_path / "study", specs)
