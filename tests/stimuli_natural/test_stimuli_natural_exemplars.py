"""Stage `exemplars`: JSON per unit consistent with the scan, natural reference PNGs."""

from __future__ import annotations

import numpy as np
from PIL import Image

from causalvis.images.preprocess import pil_to_tensor
from causalvis.models import probe_tensor
from causalvis.stimuli import exemplars
from causalvis.stimuli.scan import ActivationTable
from causalvis.stimuli.units import load_units
from causalvis.study.layout import read_json


def test_exemplar_files(natural_study, lite0):
    paths = natural_study.paths
    table = ActivationTable(paths)
    units = load_units(paths)
    assert len(units) == 3  # main and practice units both get exemplars
    for unit in units:
        rec = read_json(paths.exemplars / f"{unit.key}.json")
        acts = table.column(unit.layer, unit.channel)
        ranked = np.sort(acts)[::-1]
        assert rec["scheme"] == "rank_bins" and rec["role"] == unit.role
        assert [t["rank"] for t in rec["top"]] == list(range(1, 41))
        np.testing.assert_array_equal([t["activation"] for t in rec["top"]], ranked[:40])
        for t in rec["top"]:
            assert acts[table.ids.index(t["image_id"])] == t["activation"]
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
