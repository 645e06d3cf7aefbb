"""Stage `units`: seeded sampling, practice units, dead units, explicit validation."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from natural_helpers import LAYERS

from causalvis.errors import CausalvisError
from causalvis.pipeline.build import StageContext
from causalvis.pipeline.units import run_units_stage
from causalvis.stimuli.units import dead_channels, sample_units
from causalvis.store.activations import ActivationTable
from causalvis.store.layout import StudyPaths, read_json
from causalvis.store.units import read_units


def test_per_layer_sampling_is_seeded_and_practice_is_distinct():
    alive = {"a": list(range(10)), "b": [0, 2, 4], "c": [7]}
    units = sample_units(alive, mode="per_layer", layers=["a", "b", "c"], per_layer=1,
                         n_practice=4, seed=5)
    main = [(u.layer, u.channel) for u in units if u.role == "main"]
    practice = [(u.layer, u.channel) for u in units if u.role == "practice"]
    assert [layer for layer, _ in main] == ["a", "b", "c"]
    assert main[2] == ("c", 7)
    assert len(practice) == 4 and not set(practice) & set(main)
    assert all(ch in alive[layer] for layer, ch in main + practice)
    again = sample_units(alive, mode="per_layer", layers=["a", "b", "c"], per_layer=1,
                         n_practice=4, seed=5)
    assert again == units
    with pytest.raises(CausalvisError, match="units.per_layer = 2.*layer c"):
        sample_units(alive, mode="per_layer", layers=["a", "c"], per_layer=2, seed=0)


def test_uniform_layer_and_explicit():
    alive = {"a": list(range(50)), "b": list(range(3))}
    units = sample_units(alive, mode="uniform_layer", layers=["a", "b"], n_units=6, seed=1)
    pairs = [(u.layer, u.channel) for u in units]
    assert len(set(pairs)) == 6
    # layer first, then channel: the small layer is drawn about as often as the big one
    draws = sample_units(alive, mode="uniform_layer", layers=["a", "b"], n_units=40, seed=2)
    assert sum(u.layer == "b" for u in draws) == 3  # exhausted, then only "a" remains
    with pytest.raises(CausalvisError, match="units.n_units = 60"):
        sample_units(alive, mode="uniform_layer", layers=["a", "b"], n_units=60, seed=0)
    units = sample_units(alive, mode="explicit", layers=["a"], explicit=[("b", 1), ("a", 3)],
                         n_practice=2, seed=0)
    assert [(u.layer, u.channel, u.role) for u in units[:2]] == [("b", 1, "main"),
                                                                 ("a", 3, "main")]
    assert all(u.layer == "a" and u.channel != 3 for u in units[2:])


def test_dead_channels():
    lo = np.array([0.0, 1.0, -2.0, 0.5])
    hi = np.array([1.0, 1.0, 3.0, 0.5])
    assert dead_channels(lo, hi).tolist() == [1, 3]


def test_units_stage(natural_study):
    data = read_json(natural_study.paths.units)
    units = read_units(natural_study.paths)
    assert [u.role for u in units] == ["main", "main", "practice", "catch"]
    assert [u.layer for u in units[:2]] == LAYERS
    assert data["units"][0]["key"] == units[0].key
    assert data["skipped_dead"] == []


def _copy_study(ctx, root, **units) -> StageContext:
    shutil.copytree(ctx.paths.activations, root / "activations")
    cfg = ctx.config.model_copy(deep=True)
    for key, value in units.items():
        setattr(cfg.units, key, value)
    new = StageContext(StudyPaths(root), cfg, progress=False)
    new.model = ctx.model
    return new


def test_dead_units_are_skipped_and_reported(natural_study, tmp_path, caplog):
    ctx = _copy_study(natural_study, tmp_path, mode="explicit",
                      explicit=["blocks.1.1:3", "blocks.1.1:4"], layers=["blocks.1.1"],
                      n_practice_units=19, n_catch_units=0)
    channels = ActivationTable(ctx.paths).channels["blocks.1.1"]
    dead = [3, 5, 6, 7]
    for shard in sorted(ctx.paths.activations.glob("shard-*")):
        arr = np.load(shard / "blocks.1.1.npy")
        arr[:, dead] = 0.25
        np.save(shard / "blocks.1.1.npy", arr)
    run_units_stage(ctx)
    data = read_json(ctx.paths.units)
    assert data["skipped_dead"] == [f"blocks.1.1:{c}" for c in dead]
    chosen = {(u["layer"], u["channel"]) for u in data["units"]}
    assert ("blocks.1.1", 4) in chosen
    assert not chosen & {("blocks.1.1", c) for c in dead}
    assert len(chosen) == channels - len(dead)  # every live channel: 1 main + 19 practice
    assert "dead" in caplog.text


@pytest.mark.parametrize(
    ("spec", "message"),
    [("blocks.99:1", "unknown layer 'blocks.99'"), ("blocks.1.1:999", "channels 0..23"),
     ("blocks.1.1", "LAYER:CHANNEL")],
)
def test_explicit_units_are_validated(natural_study, tmp_path, spec, message):
    ctx = _copy_study(natural_study, tmp_path, mode="explicit", explicit=[spec])
    with pytest.raises(CausalvisError, match=message):
        run_units_stage(ctx)
