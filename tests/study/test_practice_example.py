"""Practice pools, the worked example and equal-length option files (pure rules), and the
session rules on a paper-sized plan: a participant answering by label or by file size
scores chance in every session."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from causalvis.config import preset
from causalvis.pipeline.sessions import assemble_source
from causalvis.stimuli.catch import select_practice_pools, trial_assets, without_example
from causalvis.store.assets import (
    PAD_OVERHEAD,
    encode_png,
    equal_length_pair,
    is_padded,
    pad_png,
)
from causalvis.store.layout import StudyPaths


def _png(seed: int, size: int = 32) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)))


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("extra", [0, PAD_OVERHEAD, PAD_OVERHEAD + 1, 500])
def test_pad_png_keeps_the_pixels_and_reaches_the_length(extra):
    data = _png(1)
    padded = pad_png(data, len(data) + extra)
    assert len(padded) == len(data) + extra
    assert np.array_equal(_pixels(padded), _pixels(data))
    with Image.open(io.BytesIO(padded)) as img:
        img.verify()  # every chunk's CRC checks


def test_pad_png_chunk_is_ancillary_and_well_formed():
    data = _png(2)
    padded = pad_png(data, len(data) + 40)
    pos, types = 8, []
    while pos < len(padded):
        (length,) = struct.unpack(">I", padded[pos : pos + 4])
        ctype, body = padded[pos + 4 : pos + 8], padded[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", padded[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(ctype + body)
        types.append(ctype)
        pos += 12 + length
    extra = [t for t in types if t not in (b"IHDR", b"IDAT", b"IEND")]
    assert len(extra) == 1 and extra[0][:1].islower()  # ancillary: decoders may skip it
    assert types[-1] == b"IEND"


def test_pad_png_refuses_an_impossible_length():
    data = _png(3)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_png(data, len(data) + PAD_OVERHEAD - 1)


def test_equal_length_pair_writes_padded_content_hashed_copies(tmp_path):
    paths = StudyPaths(tmp_path)
    paths.assets.mkdir(parents=True)
    small, large = _png(4, 16), _png(5, 48)
    (paths.assets / "s.png").write_bytes(small)
    (paths.assets / "l.png").write_bytes(large)
    a, b = equal_length_pair(paths, "assets/s.png", "assets/l.png")
    da, db = (paths.bundle / a).read_bytes(), (paths.bundle / b).read_bytes()
    assert len(da) == len(db) and a != b
    assert np.array_equal(_pixels(da), _pixels(small))
    assert np.array_equal(_pixels(db), _pixels(large))
    assert equal_length_pair(paths, "assets/s.png", "assets/l.png") == (a, b)  # stable names
    assert equal_length_pair(paths, a, b) == (a, b)  # a padded pair stays as it is
    assert is_padded(da) and not is_padded(small)


# -- practice pools and the example -----------------------------------------------------


def _base(units: dict[str, int], image_sets: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic base trials: ``units`` maps a unit to how many image sets it has trials in
    (or all); option files carry their true size as a field the tests can read."""
    rng = random.Random(seed)
    rows = []
    for u_i, unit in enumerate(units):
        for b in range(min(units[unit], image_sets)):
            act_a, act_b = rng.uniform(1, 5), rng.uniform(1, 5)
            tid = f"b{u_i}-{b}"
            rows.append({
                "trial_id": tid, "unit": unit, "layer": unit.split(":")[0],
                "channel": int(unit.split(":")[1]), "image_set": b,
                "query_asset": f"assets/q-{tid}.png", "option_a_asset": f"assets/a-{tid}.png",
                "option_b_asset": f"assets/b-{tid}.png", "reference_assets": "",
                "box_a": "0 0 1 1", "box_b": "1 1 2 2", "act_base": 6.0, "act_a": act_a,
                "act_b": act_b, "correct": "a" if act_a > act_b else "b",
                "rel_diff": abs(act_a - act_b) / 6.0,
            })  # fmt: skip
    return pd.DataFrame(rows)


def _practice_units(n: int) -> dict[str, int]:
    return {f"p:{i}": 99 for i in range(n)}


def test_pools_are_easiest_first_disjoint_and_leave_the_example_out():
    base = _base(_practice_units(4), 10)
    sel = select_practice_pools(base, {f"p:{i}" for i in range(4)}, n_practice=4, n_obvious=1,
                                factor=2)  # fmt: skip
    assert (len(sel.obvious), len(sel.non_obvious)) == (2, 6) and not sel.short
    assert sel.obvious["rel_diff"].max() == base["rel_diff"].max()
    assert sel.obvious["unit"].nunique() == 2  # spread over units first
    assert not set(sel.obvious["trial_id"]) & set(sel.non_obvious["trial_id"])
    ex = sel.example
    assert ex is not None
    assert ex["trial_id"] not in set(sel.obvious["trial_id"]) | set(sel.non_obvious["trial_id"])


def test_short_pools_give_up_their_least_easy_trial_for_the_example():
    base = _base(_practice_units(1), 2)  # two practice trials, pools want 2 + 6
    sel = select_practice_pools(base, {"p:0"}, n_practice=4, n_obvious=1, factor=2)
    assert sel.short
    assert sel.example is not None
    assert sel.example["rel_diff"] == base["rel_diff"].min()
    assert len(sel.obvious) + len(sel.non_obvious) == 1


def test_no_example_rather_than_one_shown_elsewhere():
    base = _base(_practice_units(1), 3)
    base["query_asset"] = "assets/shared.png"  # every trial shows the same query
    sel = select_practice_pools(base, {"p:0"}, n_practice=1, n_obvious=1, factor=1)
    assert sel.example is None
    assert len(sel.obvious) == 1
    # one practice trial alone is never given up for the example
    alone = _base(_practice_units(1), 1)
    assert select_practice_pools(alone, {"p:0"}, n_practice=1, n_obvious=1, factor=1).example is None


def test_without_example_drops_every_trial_showing_its_images():
    base = _base({"m:0": 99, "m:1": 99}, 2)
    base.loc[3, "query_asset"] = base.loc[0, "query_asset"]
    rest = without_example(base, base.iloc[0])
    assert set(rest["trial_id"]) == {"b0-1", "b1-0"}
    assert without_example(base, None) is base


# -- a paper-sized plan (18 units x 10 image sets, 4 practice units), no images built ----


@pytest.fixture(scope="module")
def paper_plan():
    cfg = preset("paper2021")
    main = {f"blocks.{2 + i % 6}.0:{i}": 99 for i in range(18)}
    base = _base({**main, **_practice_units(4)}, 10, seed=3)
    # the option files' sizes, to play a participant who picks the larger/smaller file
    sizes = {a: random.Random(a).randint(2000, 9000) for a in trial_assets(base)}
    rows: dict[str, dict] = {}

    def add(row: dict) -> str:
        rows.setdefault(row["trial_id"], row)
        return row["trial_id"]

    def pad(row: dict) -> dict:  # what _padded does to the sizes
        size = max(sizes[row["option_a_asset"]], sizes[row["option_b_asset"]]) + PAD_OVERHEAD
        out = {**row, "option_a_asset": f"{row['option_a_asset']}+{size}",
               "option_b_asset": f"{row['option_b_asset']}+{size}"}  # fmt: skip
        sizes[out["option_a_asset"]] = sizes[out["option_b_asset"]] = size
        return out

    plan = assemble_source(
        cfg.model.name, False, base, list(main), set(_practice_units(4)), cfg,
        refs_of=lambda c, u, b: ([f"assets/ref-{c}-{u}-{b}.png"], []),
        measure=lambda layer, channel, asset: 0.0, pad=pad, add=add,
    )  # fmt: skip
    return cfg, plan, pd.DataFrame(list(rows.values())).set_index("trial_id"), sizes


def test_paper_plan_every_session_scores_chance_by_label_and_size(paper_plan):
    cfg, plan, trials, sizes = paper_plan
    assert len(plan.sessions) == 5 * 10  # 5 conditions x 10 image sets x one group of 18
    for s in plan.sessions:
        scored = trials.loc[s.trials]
        assert len(scored) == 18 + cfg.sessions.n_catch
        n_a = int((scored["correct"] == "a").sum())
        assert abs(n_a - (len(scored) - n_a)) <= 1, s.session_id
        # always `a` (the first-listed option in trials.csv): within one of half
        assert abs(n_a - len(scored) / 2) <= 1
        # always the larger / smaller file: there is none, the sizes are equal
        for _, t in scored.iterrows():
            assert sizes[t["option_a_asset"]] == sizes[t["option_b_asset"]]


def test_paper_plan_practice_pools_and_example(paper_plan):
    cfg, plan, trials, _ = paper_plan
    sc = cfg.sessions
    want_obvious = sc.n_practice_obvious * sc.practice_pool_factor
    want_all = sc.n_practice * sc.practice_pool_factor
    for s in plan.sessions:
        if s.condition == "none":  # the paper gave `none` no practice
            assert s.practice == [] and s.practice_obvious == []
            continue
        assert len(s.practice) == want_all and len(s.practice_obvious) == want_obvious
        assert set(s.practice_obvious) <= set(s.practice)
        practice = trials.loc[s.practice]
        assert set(practice["kind"]) == {"practice"}
        for pool in (s.practice_obvious, [t for t in s.practice if t not in s.practice_obvious]):
            n_a = int((trials.loc[pool, "correct"] == "a").sum())
            assert abs(2 * n_a - len(pool)) <= 1
        obvious = trials.loc[s.practice_obvious, "rel_diff"]
        assert obvious.min() >= trials.loc[s.practice, "rel_diff"].median()
    assert set(plan.examples) == set(cfg.conditions.names)
    served = {t for s in plan.sessions for t in (*s.trials, *s.practice)}
    for condition, ex_id in plan.examples.items():
        ex = trials.loc[ex_id]
        assert ex["kind"] == "example" and ex["condition"] == condition
        assert ex_id not in served
        assert ex["reference_assets"] == f"assets/ref-{condition}-{ex['unit']}-{ex['image_set']}.png"
        mine = {a.split("+")[0] for a in (ex["query_asset"], ex["option_a_asset"],
                                          ex["option_b_asset"])}  # fmt: skip
        others = trials.loc[list(served)]
        shown = set(others["query_asset"]) | set(others["option_a_asset"]) | set(
            others["option_b_asset"])
        shown = {a.split("+")[0] for a in shown} | {
            r for cell in others["reference_assets"] for r in cell.split()}
        assert not mine & shown  # also no `none` catch partner shows its images
        base_id = ex["base_trial_id"]
        assert base_id not in set(others["base_trial_id"])


def test_catch_and_none_partners_never_show_the_example():
    """One image set: the catch trials can only come from the spare practice trials, the
    example's neighbours."""
    cfg = preset("paper2021")
    base = _base({"m:0": 1, "m:1": 1, "p:0": 99}, 11)
    rows: dict[str, dict] = {}
    plan = assemble_source(
        "m", False, base, ["m:0", "m:1"], {"p:0"}, cfg,
        refs_of=lambda c, u, b: ([], []), measure=lambda layer, channel, asset: 0.0,
        pad=lambda row: row, add=lambda row: rows.setdefault(row["trial_id"], row)["trial_id"],
    )  # fmt: skip
    trials = pd.DataFrame(list(rows.values())).set_index("trial_id")
    served = trials.loc[[t for s in plan.sessions for t in (*s.trials, *s.practice)]]
    assert (served["kind"] == "catch").any()
    for ex_id in plan.examples.values():
        ex = trials.loc[ex_id]
        mine = {ex["query_asset"], ex["option_a_asset"], ex["option_b_asset"]}
        assert not mine & trial_assets(served.reset_index())


def test_example_avoids_images_shown_as_references():
    base = _base(_practice_units(1), 3)
    free = select_practice_pools(base, {"p:0"}, n_practice=1, n_obvious=1, factor=1)
    assert free.example is not None
    taken = select_practice_pools(base, {"p:0"}, n_practice=1, n_obvious=1, factor=1,
                                  avoid={free.example["option_a_asset"]})  # fmt: skip
    assert taken.example is not None
    assert taken.example["trial_id"] != free.example["trial_id"]
