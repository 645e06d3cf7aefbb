"""Stage `exemplars`: JSON per unit consistent with the scan, natural reference PNGs."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from causalvis.images.preprocess import pil_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline import exemplars
from causalvis.store.activations import ActivationTable
from causalvis.store.layout import read_json
from causalvis.store.units import read_units


def test_exemplar_files(natural_study, lite0):
    paths = natural_study.paths
    table = ActivationTable(paths)
    units = read_units(paths)
    assert len(units) == 4  # main, practice and catch units all get exemplars
    for unit in units:
        rec = read_json(paths.exemplars / f"{unit.key}.json")
        acts = table.column(unit.layer, unit.channel)
        ranked = np.sort(acts)[::-1]
        assert rec["scheme"] == "rank_bins" and rec["role"] == unit.role
        assert [t["rank"] for t in rec["top"]] == list(range(1, 41))
        # exact (float32) re-measured activations: sorted, within float16 rounding of the
        # scan's stored values (refine_extremes)
        top_acts = [t["activation"] for t in rec["top"]]
        assert top_acts == sorted(top_acts, reverse=True)
        np.testing.assert_allclose(top_acts, ranked[:40], rtol=2e-3, atol=2e-3)
        for t in rec["top"]:
            stored = acts[table.ids.index(t["image_id"])]
            assert abs(stored - t["activation"]) <= 2e-3 * max(1.0, abs(stored))
        # bin size 10: queries are ranks 10 and 9; references from bins 2 and 4.
        queries = [s["query"]["rank"] for s in rec["image_sets"]]
        assert queries == [10, 9]
        for s in rec["image_sets"]:
            ranks = [r["rank"] for r in s["references"]]
            assert 11 <= ranks[0] <= 20 and 31 <= ranks[1] <= 40
            assert s["query"]["image_id"] not in {r["image_id"] for r in s["references"]}
        meta = read_json(paths.reference_dir("natural", unit.key) / "meta.json")
        assert [m["file"] for m in meta["images"]] == ["set0-0.png", "set0-1.png",
                                                       "set1-0.png", "set1-1.png"]
        first = meta["images"][0]
        assert first["image_id"] == rec["image_sets"][0]["references"][0]["image_id"]
        with Image.open(paths.reference_dir("natural", unit.key) / first["file"]) as img:
            assert img.size == (224, 224)
            x = pil_to_tensor(img)[None]
        act = probe_tensor(lite0, x, [unit.layer])[unit.layer][0, unit.channel].item()
        assert abs(act - first["activation"]) < 1e-4
        assert abs(first["activation"] - first["scan_activation"]) < 2e-2 * max(1, abs(act))


def test_exemplars_rerun_skips_finished_units(natural_study, monkeypatch):
    calls = []
    monkeypatch.setattr(exemplars, "write_natural_references",
                        lambda *a: calls.append(a))
    exemplars.run_exemplars_stage(natural_study)
    assert calls == []


def test_imi_scheme_stage(natural_study, tmp_path):
    import shutil

    from causalvis.config import ExemplarsConfig
    from causalvis.pipeline.build import StageContext
    from causalvis.store.layout import StudyPaths

    for name in ("activations", "units.json"):
        src = natural_study.paths.root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    cfg = natural_study.config.model_copy(deep=True)
    cfg.exemplars = ExemplarsConfig(scheme="imi", n_references=3, n_min_references=2,
                                    n_image_sets=2)
    ctx = StageContext(StudyPaths(tmp_path), cfg, progress=False)
    ctx.model, ctx.source = natural_study.model, natural_study.source
    exemplars.run_exemplars_stage(ctx)
    unit = read_units(ctx.paths)[0]
    rec = read_json(ctx.paths.exemplars / f"{unit.key}.json")
    acts = ActivationTable(ctx.paths).column(unit.layer, unit.channel)
    s0, s1 = rec["image_sets"]
    # IMI: 3 bins of 2 ranks (max side), 2 bins of 2 (min side), one rank per bin and set;
    # the queries are the 2 ranks just below the pool.
    for side, k in (("references", 3), ("min_references", 2)):
        ranks = [[r["rank"] for r in s[side]] for s in (s0, s1)]
        assert [[(r - 1) // 2 for r in per_set] for per_set in ranks] == [list(range(k))] * 2
        assert sorted(ranks[0] + ranks[1]) == list(range(1, 2 * k + 1))
    assert {s0["query"]["rank"], s1["query"]["rank"]} == {7, 8}
    assert {s0["min_query"]["rank"], s1["min_query"]["rank"]} == {5, 6}
    # exact re-measured activations, within float16 rounding of the stored scan values
    for s in (s0, s1):
        q, mq = s["query"], s["min_query"]
        assert mq["activation"] == pytest.approx(np.sort(acts)[mq["rank"] - 1], rel=2e-3,
                                                 abs=2e-3)
        assert q["activation"] == pytest.approx(np.sort(acts)[::-1][q["rank"] - 1],
                                                rel=2e-3, abs=2e-3)
    meta = read_json(ctx.paths.reference_dir("natural", unit.key) / "meta.json")
    files = {m["file"]: m["role"] for m in meta["images"]}
    assert files["set1-min-1.png"] == "min" and files["set1-2.png"] == "max"
    assert len(files) == 2 * (3 + 2)
