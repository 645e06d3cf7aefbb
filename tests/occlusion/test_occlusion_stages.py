"""Stages ``occlusion`` and ``trials`` on hand-made exemplar files."""

from __future__ import annotations

import csv
import hashlib
import logging
import re

import numpy as np
import pytest
from occlusion_helpers import IMAGES, make_study, shared_model
from PIL import Image

from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline import occlusion as stage_mod
from causalvis.pipeline.build import build
from causalvis.pipeline.occlusion import candidate_queries
from causalvis.pipeline.served import order_flip
from causalvis.stimuli.occlusion import Grid
from causalvis.store.exemplars import ExemplarRecord
from causalvis.store.occlusion import read_occlusion
from causalvis.store.trials import BASE_COLUMNS
from causalvis.store.units import unit_key


def rows(paths, name="trials.csv"):
    with open(paths.root / name) as fh:
        return list(csv.DictReader(fh))


def test_occlusion_maps_written_for_every_unit_and_set(tiny_study):
    for key in ("blocks.2.1-c0003", "blocks.2.1-c0017", "blocks.3.2-c0005"):
        for b in (0, 1):
            res = read_occlusion(tiny_study.occlusion / key / f"set{b}.npz")
            assert res.maps.shape == (1, 6, 6)  # offsets 0,32,...,128,134
            assert list(res.offsets) == [0, 32, 64, 96, 128, 134]
            assert res.patch == 90 and res.fill == "mean" and res.image_ids == [IMAGES[b]]
            assert (tiny_study.occlusion / key / f"set{b}.png").stat().st_size > 10_000


def test_trials_base_columns_and_copy(tiny_study):
    base = rows(tiny_study, "stimuli/trials_base.csv")
    assert tuple(base[0]) == BASE_COLUMNS
    assert base == rows(tiny_study)
    assert len(base) == 6  # practice units get trials too
    assert {r["kind"] for r in base} == {"main"}
    assert all(r["condition"] == "" and r["reference_assets"] == "" for r in base)
    assert len({r["trial_id"] for r in base}) == 6


def test_options_are_argmax_and_argmin_of_the_map(tiny_study):
    for r in rows(tiny_study):
        key = unit_key(r["layer"], int(r["channel"]))
        res = read_occlusion(tiny_study.occlusion / key / f"set{r['image_set']}.npz")
        grid = Grid(res.size, res.patch, res.stride)
        m = res.maps[0]
        hi, lo = grid.box(int(np.argmax(m))), grid.box(int(np.argmin(m)))
        correct, wrong = r["correct"], "b" if r["correct"] == "a" else "a"
        assert r[f"box_{correct}"] == " ".join(map(str, hi))
        assert r[f"box_{wrong}"] == " ".join(map(str, lo))
        # the served-bytes numbers equal the sweep's numbers (same uint8 images)
        assert float(r[f"act_{correct}"]) == pytest.approx(m.max(), rel=1e-4, abs=1e-5)
        assert float(r[f"act_{wrong}"]) == pytest.approx(m.min(), rel=1e-4, abs=1e-5)
        assert float(r["act_base"]) == pytest.approx(float(res.bases[0]), rel=1e-4, abs=1e-5)


def test_rerun_on_saved_assets_reproduces_activations(tiny_study, lite0):
    for r in rows(tiny_study):
        imgs = [np.asarray(Image.open(tiny_study.bundle / r[c]).convert("RGB"))
                for c in ("query_asset", "option_a_asset", "option_b_asset")]
        acts = probe_tensor(lite0, uint8_to_tensor(np.stack(imgs)), [r["layer"]])[r["layer"]]
        base, a, b = (float(v) for v in acts[:, int(r["channel"])])
        assert base == pytest.approx(float(r["act_base"]), rel=1e-5, abs=1e-6)
        assert a == pytest.approx(float(r["act_a"]), rel=1e-5, abs=1e-6)
        assert b == pytest.approx(float(r["act_b"]), rel=1e-5, abs=1e-6)
        assert r["correct"] == ("a" if a > b else "b")
        assert float(r["rel_diff"]) == pytest.approx(abs(a - b) / abs(base), rel=1e-5)
        # option images differ from the query only inside their box
        for img, box in ((imgs[1], r["box_a"]), (imgs[2], r["box_b"])):
            x0, y0, x1, y1 = map(int, box.split())
            diff = np.any(img != imgs[0], axis=2)
            assert not diff[:y0].any() and not diff[y1:].any()
            assert not diff[:, :x0].any() and not diff[:, x1:].any()


def test_asset_names_do_not_leak_the_answer(tiny_study):
    for r in rows(tiny_study):
        for col in ("query_asset", "option_a_asset", "option_b_asset"):
            rel = r[col]
            assert re.fullmatch(r"assets/[0-9a-f]{20}\.png", rel), rel
            data = (tiny_study.bundle / rel).read_bytes()
            assert rel == f"assets/{hashlib.sha256(data).hexdigest()[:20]}.png"
        assert re.fullmatch(r"t[0-9a-f]{15}", r["trial_id"])
    names = " ".join(p.name for p in tiny_study.assets.iterdir())
    assert "max" not in names and "min" not in names


def test_option_order_is_seeded_and_balanced(tiny_study):
    assert {r["correct"] for r in rows(tiny_study)} == {"a", "b"}
    flips = [order_flip(0, f"u{i}", b) for i in range(200) for b in range(2)]
    assert 0.4 < np.mean(flips) < 0.6
    assert flips == [order_flip(0, f"u{i}", b) for i in range(200) for b in range(2)]


def test_rerun_skips_finished_work(tiny_study, monkeypatch, lite0):
    before = rows(tiny_study)

    def boom(*args, **kwargs):
        raise AssertionError("sweep recomputed although its stamp matches")

    monkeypatch.setattr(stage_mod, "sweep_layers", boom)
    with shared_model(lite0):
        build(tiny_study.root, ["occlusion", "trials"], progress=False)
    assert rows(tiny_study) == before


def test_one_sweep_per_query_image_for_units_sharing_it(tmp_path, monkeypatch, lite0):
    calls = []
    real = stage_mod.sweep_layers

    def counting(model, occluder, layers, *args, **kw):
        calls.append(tuple(layers))
        return real(model, occluder, layers, *args, **kw)

    monkeypatch.setattr(stage_mod, "sweep_layers", counting)
    paths = make_study(tmp_path / "s", [("blocks.1.1", 1, "main"), ("blocks.1.1", 2, "main"),
                                        ("blocks.1.0", 4, "main")], sets=1, stride=67)
    with shared_model(lite0):
        build(paths.root, ["occlusion"], progress=False)
    # three units on one query image: one pass computes both layers
    assert calls == [("blocks.1.0", "blocks.1.1")]
    m1 = read_occlusion(paths.occlusion / "blocks.1.1-c0001" / "set0.npz").maps[0]
    m2 = read_occlusion(paths.occlusion / "blocks.1.1-c0002" / "set0.npz").maps[0]
    assert not np.allclose(m1, m2)


def test_near_ties_are_dropped_and_counted(tiny_study, tmp_path, caplog, lite0):
    import shutil

    study = tmp_path / "copy"
    shutil.copytree(tiny_study.root, study)
    cfg_text = (study / "study.toml").read_text()
    (study / "study.toml").write_text(cfg_text.replace("tie_tolerance = 0.001",
                                                       "tie_tolerance = 1000.0"))
    with caplog.at_level(logging.INFO, logger="causalvis.trials"), shared_model(lite0):
        build(study, ["trials"], progress=False)
    assert len(rows(type(tiny_study)(study))) == 0
    assert "kept 0 of 6" in caplog.text and "6 near ties" in caplog.text


def test_candidate_queries_pick_largest_rel_diff(tmp_path, lite0):
    paths = make_study(tmp_path / "s", [("blocks.1.1", 7, "main")], sets=2, stride=67,
                       trials={"candidate_queries": 3})
    with shared_model(lite0):
        build(paths.root, ["occlusion", "trials"], progress=False)
    (r0, r1) = rows(paths)
    for r in (r0, r1):
        res = read_occlusion(paths.occlusion / "blocks.1.1-c0007" / f"set{r['image_set']}.npz")
        assert len(res.image_ids) == 3 and res.image_ids[0] == IMAGES[int(r["image_set"])]
        rel = [(m.max() - m.min()) / abs(b) for m, b in zip(res.maps, res.bases, strict=True)]
        assert r["query_image_id"] == res.image_ids[int(np.argmax(rel))]
        assert float(r["rel_diff"]) == pytest.approx(max(rel), rel=1e-4)
    ids0 = read_occlusion(paths.occlusion / "blocks.1.1-c0007" / "set0.npz").image_ids
    ids1 = read_occlusion(paths.occlusion / "blocks.1.1-c0007" / "set1.npz").image_ids
    assert not set(ids0) & set(ids1)  # candidates are disjoint between image sets


def test_candidate_queries_are_unused_top_bin_ranks():
    top = [{"rank": r, "image_id": f"img{r}", "activation": 21.0 - r} for r in range(1, 21)]
    ex = ExemplarRecord.from_dict(
        {"layer": "l", "channel": 0, "scheme": "rank_bins", "top": top,
         "image_sets": [{"image_set": b, "query": top[19 - b]} for b in range(10)]},
        "exemplars/l-c0000.json",
    )
    c0 = candidate_queries(ex, 0, 3, bin_size=20)
    c9 = candidate_queries(ex, 9, 3, bin_size=20)
    assert [c.rank for c in c0] == [20, 10, 9]
    assert [c.rank for c in c9] == [11]  # the spare ranks ran out
    assert [c.rank for c in candidate_queries(ex, 4, 1, bin_size=20)] == [16]


def test_two_afc_studies_skip_occlusion(tmp_path):
    from causalvis.config import preset
    from causalvis.errors import CausalvisError
    from causalvis.pipeline.build import StageContext, run_stage
    from causalvis.store.layout import StudyPaths

    ctx = StageContext(StudyPaths(tmp_path), preset("imi2023"), progress=False)
    run_stage(ctx, "occlusion")  # no units.json needed: nothing to do for 2-AFC
    assert not (tmp_path / "occlusion").exists()
    # the trials stage builds the 2-AFC query pairs instead (tests/two_afc), from units.json
    with pytest.raises(CausalvisError, match="units.json"):
        run_stage(ctx, "trials")
    assert not (tmp_path / "trials.csv").exists()
