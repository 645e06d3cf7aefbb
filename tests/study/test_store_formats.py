"""Every study-folder format the pipeline writes: a round trip through its one reader and
writer, and a corrupt file that fails with a clear error naming the file (and line/field)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from causalvis.errors import CausalvisError
from causalvis.store.activations import (
    ActivationIndex,
    ActivationTable,
    ShardEntry,
    read_index,
    write_index,
    write_shard,
)
from causalvis.store.exemplars import (
    ExemplarRecord,
    ExemplarSet,
    RankedImage,
    read_exemplars,
    write_exemplars,
)
from causalvis.store.layout import StudyPaths, atomic_write
from causalvis.store.occlusion import OcclusionResult, encode_occlusion, read_occlusion
from causalvis.store.trials import (
    BASE_COLUMNS,
    TWO_AFC_BASE_COLUMNS,
    read_trials,
    write_trials,
)
from causalvis.store.units import Unit, UnitEntry, read_units, write_units


@pytest.fixture()
def paths(tmp_path) -> StudyPaths:
    return StudyPaths(tmp_path)


def test_units_round_trip_and_corrupt(paths):
    units = [UnitEntry(Unit("blocks.3.2", 17), "main", 11),
             UnitEntry(Unit("blocks.4.0", 2), "practice", 12)]
    write_units(paths, units, ["blocks.3.2:5"])
    assert read_units(paths) == units
    assert read_units(paths, "practice") == units[1:]
    raw = json.loads(paths.units.read_text())
    assert raw["units"][0] == {"layer": "blocks.3.2", "channel": 17, "key": "blocks.3.2-c0017",
                               "role": "main", "seed": 11}
    raw["units"][1]["channel"] = "two"
    paths.units.write_text(json.dumps(raw))
    with pytest.raises(CausalvisError, match=r"units\.json: units\[1\]: channel 'two' is not a non-negative"):
        read_units(paths)
    paths.units.write_text("{not json")
    with pytest.raises(CausalvisError, match="units.json: invalid JSON"):
        read_units(paths)


def _base_row(i: int, **extra) -> dict:
    return {"trial_id": f"t{i}", "base_trial_id": f"t{i}", "kind": "main", "condition": "",
            "unit": "blocks.3.2:17", "layer": "blocks.3.2", "channel": 17, "image_set": i,
            "query_asset": "assets/q.png", "option_a_asset": "assets/a.png",
            "option_b_asset": "assets/b.png", "reference_assets": "", "box_a": "0 0 90 90",
            "box_b": "134 134 224 224", "act_base": 1.5, "act_a": 0.1, "act_b": 2.0 / 3.0,
            "correct": "b", "rel_diff": 0.3777, "query_image_id": "007", **extra}


@pytest.mark.parametrize("columns", [BASE_COLUMNS, TWO_AFC_BASE_COLUMNS])
def test_trial_tables_round_trip_and_corrupt(paths, columns):
    extra = {"min_query_image_id": "012"} if "min_query_image_id" in columns else {}
    rows = [_base_row(i, **extra) for i in range(2)]
    assert write_trials(paths.base_trials, rows, columns)
    assert not write_trials(paths.base_trials, rows, columns)  # same bytes: left untouched
    table = read_trials(paths.base_trials)
    assert table["act_b"].tolist() == [2.0 / 3.0] * 2  # floats survive exactly (repr)
    assert table["query_image_id"].tolist() == ["007"] * 2  # ids stay text
    assert table["channel"].tolist() == [17, 17]
    assert tuple(table.columns[: len(columns)]) == tuple(columns)
    text = paths.base_trials.read_text().replace("0.1,", "zero,", 1)
    paths.base_trials.write_text(text)
    with pytest.raises(CausalvisError, match=r"trials_base\.csv:2: column 'act_a'"):
        read_trials(paths.base_trials)


def _record() -> ExemplarRecord:
    top = tuple(RankedImage(r, f"img{r}", 10.0 - r) for r in range(1, 5))
    bottom = tuple(RankedImage(r, f"low{r}", -1.0 * r) for r in range(1, 3))
    sets = (ExemplarSet(0, top[1], (top[0],), bottom[1], (bottom[0],)),
            ExemplarSet(1, top[2], (top[0],), bottom[1], (bottom[0],)))
    return ExemplarRecord(Unit("blocks.3.2", 17), "imi", top, bottom, sets, "main", 40)


def test_exemplars_round_trip_and_corrupt(paths):
    record = _record()
    write_exemplars(paths, record)
    assert read_exemplars(paths, record.key) == record
    raw = json.loads(paths.exemplar(record.key).read_text())
    assert list(raw) == ["layer", "channel", "key", "role", "scheme", "n_images", "top",
                         "bottom", "image_sets"]
    del raw["image_sets"][1]["query"]["image_id"]
    paths.exemplar(record.key).write_text(json.dumps(raw))
    with pytest.raises(CausalvisError, match=r"blocks\.3\.2-c0017\.json: image_sets\[1\]"
                                             r"\.query: missing field 'image_id'"):
        read_exemplars(paths, record.key)
    with pytest.raises(CausalvisError, match="--stage exemplars"):
        read_exemplars(paths, "blocks.9-c0001")


def test_occlusion_round_trip_and_corrupt(paths):
    result = OcclusionResult(
        maps=np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3),
        bases=np.array([1.5, 2.5], np.float32), image_ids=["a/1", "b/2"], ranks=[10, 9],
        offsets=np.array([0, 67, 134]), size=224, patch=90, stride=67, fill="mean",
    )
    path = paths.occlusion_result("blocks.3.2-c0017", 0)
    atomic_write(path, encode_occlusion(result))
    assert encode_occlusion(result) == path.read_bytes()  # byte-deterministic
    back = read_occlusion(path)
    np.testing.assert_array_equal(back.maps, result.maps)
    np.testing.assert_array_equal(back.offsets, result.offsets)
    assert (back.image_ids, back.ranks, back.size, back.patch, back.stride, back.fill) == (
        ["a/1", "b/2"], [10, 9], 224, 90, 67, "mean")
    with np.load(path) as z:
        np.testing.assert_array_equal(z["map"], result.maps[0])
        assert float(z["base"]) == 1.5
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(CausalvisError, match=r"set0\.npz: not a readable occlusion result"):
        read_occlusion(path)


def test_activations_round_trip_and_corrupt(paths):
    acts = {"blocks.1.1": np.arange(6, dtype=np.float16).reshape(3, 2)}
    files = write_shard(paths, "shard-00000", ["x", "y", "z"], acts, [])
    assert files == ["activations/shard-00000/ids.txt", "activations/shard-00000/skipped.json",
                     "activations/shard-00000/blocks.1.1.npy"]
    index = ActivationIndex(
        model="lite0", source="samples", input_size=224, layers=("blocks.1.1",),
        channels={"blocks.1.1": 2}, shards=(ShardEntry("shard-00000", 3, "d0"),),
        skipped=(), digest="dd",
    )
    assert write_index(paths, index)
    assert not write_index(paths, index)  # unchanged: left untouched
    assert read_index(paths) == index
    table = ActivationTable(paths)
    assert table.ids == ["x", "y", "z"] and table.n_images == 3
    np.testing.assert_array_equal(table.column("blocks.1.1", 1), [1, 3, 5])
    raw = json.loads(paths.activations_index.read_text())
    raw["n_images"] = 4
    paths.activations_index.write_text(json.dumps(raw))
    with pytest.raises(CausalvisError, match=r"index\.json: n_images = 4 but the shards hold 3"):
        read_index(paths)
    del raw["channels"]
    paths.activations_index.write_text(json.dumps(raw))
    with pytest.raises(CausalvisError, match=r"index\.json: missing field 'channels'"):
        ActivationTable(paths)


def test_reports_round_trip_and_corrupt(paths):
    import pandas as pd

    from causalvis.store.reports import (
        OBSERVER_TRIAL_COLUMNS,
        read_observer_trials,
        read_observers_report,
        read_summary,
        write_observers,
        write_summary,
    )

    assert read_observers_report(paths) is None and read_observer_trials(paths) is None
    decisions = pd.DataFrame([
        {"trial_id": "t001", "observer": "center", "choice": "a", "p_correct": 1.0,
         "delta": 0.25, "hit": 1.0, "condition": "natural", "unit": "blocks.3.2:17",
         "signed_delta": 0.25},
    ])
    summary = {"observers": {"center": {"conditions": {"natural": {"accuracy": 1.0}}}}}
    write_observers(paths, summary, decisions)
    assert read_observers_report(paths) == summary
    table = read_observer_trials(paths)
    assert list(table.columns) == list(OBSERVER_TRIAL_COLUMNS)  # extra columns not stored
    assert table.loc[0, "trial_id"] == "t001" and table.loc[0, "hit"] == 1.0
    write_summary(paths.report, {"n": 1})
    assert read_summary(paths.report) == {"n": 1}
    with pytest.raises(ValueError):
        write_summary(paths.report, {"n": float("nan")})  # strict JSON, never NaN

    atomic_write(paths.observers_report, "{not json")
    with pytest.raises(CausalvisError, match="observers.json: invalid JSON"):
        read_observers_report(paths)
    atomic_write(paths.observer_trials, "trial_id,observer\nt1,center\n")
    with pytest.raises(CausalvisError, match="observer_trials.csv: missing columns choice"):
        read_observer_trials(paths)
