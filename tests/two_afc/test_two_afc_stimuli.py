"""2-AFC stimuli on a tiny real study: the query pairs are true on the served bytes, the
generated references have a maximal and a minimal side, and a rebuild is a no-op."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.images import pil_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline import methods
from causalvis.pipeline.build import StageContext, build
from causalvis.pipeline.featurevis_recipe import render_side, render_units
from causalvis.pipeline.methods import Generated, ReferenceMethod
from causalvis.pipeline.references import run_method
from causalvis.pipeline.served import order_flip
from causalvis.store.assets import read_asset
from causalvis.store.layout import StudyPaths, read_json
from causalvis.store.trials import TWO_AFC_BASE_COLUMNS
from causalvis.store.units import read_units, unit_key


def _trials(root: Path) -> pd.DataFrame:
    return pd.read_csv(root / "stimuli" / "trials_base.csv", keep_default_na=False)


def test_pairs_are_true_on_the_served_bytes(tiny_two_afc, lite0, samples):
    root, cfg = tiny_two_afc
    paths = StudyPaths(root)
    table = _trials(root)
    assert tuple(table.columns) == TWO_AFC_BASE_COLUMNS
    assert (root / "trials.csv").read_bytes() == (root / "stimuli/trials_base.csv").read_bytes()
    units = read_json(paths.units)["units"]
    # every (unit, image set) of main and practice units: nothing dropped at this size
    assert sorted(zip(table["unit"], table["image_set"], strict=True)) == sorted(
        (f"{u['layer']}:{u['channel']}", b) for u in units for b in range(2)
    )
    assert {u["role"] for u in units} == {"main", "practice", "catch"}
    for _, row in table.iterrows():
        layer, channel = row["layer"], int(row["channel"])
        key = unit_key(layer, channel)
        assert row["query_asset"] == row["box_a"] == row["box_b"] == row["act_base"] == ""
        assert row["condition"] == "" and row["kind"] == "main"
        served = [read_asset(paths, row[c]) for c in ("option_a_asset", "option_b_asset")]
        acts = probe_tensor(lite0, torch.stack([pil_to_tensor(im) for im in served]),
                            [layer])[layer][:, channel]
        a, b = (float(v) for v in acts)
        assert a == pytest.approx(row["act_a"], rel=1e-5, abs=1e-5), row["trial_id"]
        assert b == pytest.approx(row["act_b"], rel=1e-5, abs=1e-5), row["trial_id"]
        # the correct option shows the max query, the other the min query, pixel for pixel
        pixels = {o: np.asarray(im) for o, im in zip("ab", served, strict=True)}
        wrong = "b" if row["correct"] == "a" else "a"
        np.testing.assert_array_equal(pixels[row["correct"]],
                                      samples.load_array(row["query_image_id"]))
        np.testing.assert_array_equal(pixels[wrong], samples.load_array(row["min_query_image_id"]))
        assert row["correct"] == ("a" if a > b else "b")
        assert row["correct"] == ("b" if order_flip(cfg.seed, key, row["image_set"]) else "a")
        record = read_json(paths.exemplars / f"{key}.json")
        span = record["top"][0]["activation"] - record["bottom"][0]["activation"]
        assert 0 <= row["rel_diff"] <= 1
        assert row["rel_diff"] == pytest.approx(abs(a - b) / span, rel=1e-5)
        # neither query is a reference: not by id, not by served bytes
        item = record["image_sets"][row["image_set"]]
        ref_ids = {r["image_id"] for r in item["references"] + item["min_references"]}
        assert not ref_ids & {row["query_image_id"], row["min_query_image_id"]}
        ref_bytes = {hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in paths.reference_dir("natural", key).glob("*.png")}
        for c in ("option_a_asset", "option_b_asset"):
            assert hashlib.sha256((paths.bundle / row[c]).read_bytes()).hexdigest() not in ref_bytes
    assert len(set(table["trial_id"])) == len(table)


def test_generated_references_have_both_sides(tiny_two_afc, lite0):
    root, cfg = tiny_two_afc
    paths = StudyPaths(root)
    n = cfg.featurevis.n_images
    for unit in read_json(paths.units)["units"]:
        key, layer, channel = unit["key"], unit["layer"], unit["channel"]
        folder = paths.reference_dir("synthetic", key)
        meta = read_json(folder / "meta.json")
        images = {e["file"]: e for e in meta["images"]}
        assert sorted(images) == sorted([f"{i}.png" for i in range(n)]
                                        + [f"min-{i}.png" for i in range(n)])
        for side, prefix in (("max", ""), ("min", "min-")):
            entries = [images[f"{prefix}{i}.png"] for i in range(n)]
            assert {e["role"] for e in entries} == {side}
            # the first image of a side is the non-diverse one, the rest the diverse batch
            assert [e["diverse"] for e in entries] == [False] + [True] * (n - 1)
        # recorded activations are those of the stored bytes
        files = sorted(images)
        stored = torch.stack([pil_to_tensor(read_asset_path(folder / f)) for f in files])
        acts = probe_tensor(lite0, stored, [layer])[layer][:, channel]
        for f, act in zip(files, acts.tolist(), strict=True):
            assert act == pytest.approx(images[f]["activation"], rel=1e-4, abs=1e-4)
        high = np.mean([images[f"{i}.png"]["activation"] for i in range(n)])
        low = np.mean([images[f"min-{i}.png"]["activation"] for i in range(n)])
        assert low < high, key
        got = methods.reference_paths(paths, cfg, "synthetic", key, 0, side="min")
        assert [p.name for p in got] == [f"min-{i}.png" for i in range(n)]
        nat = methods.reference_paths(paths, cfg, "natural", key, 1, side="min")
        assert [p.name for p in nat] == [f"set1-min-{i}.png" for i in range(3)]
        assert methods.reference_paths(paths, cfg, "natural", key, 1)[0].name == "set1-0.png"


def read_asset_path(path: Path):
    from PIL import Image

    with Image.open(path) as img:
        return img.convert("RGB")


def test_min_side_files_and_errors(tmp_path):
    cfg = StudyConfig(conditions={"names": ["none", "natural", "synthetic", "mixed", "blur"]})
    paths = StudyPaths(tmp_path)
    key = "blocks.3.2-c0017"
    assert [p.name for p in methods.reference_files(paths, cfg, "natural", key, 2, "min")] == [
        f"set2-min-{i}.png" for i in range(9)
    ]
    assert [p.name for p in methods.reference_files(paths, cfg, "synthetic", key, 2, "min")] == [
        f"min-{i}.png" for i in range(9)
    ]
    for condition in ("mixed", "none", "blur"):
        with pytest.raises(CausalvisError, match=f"condition '{condition}' has no minimal"):
            methods.reference_files(paths, cfg, condition, key, 0, side="min")
    with pytest.raises(CausalvisError, match="side must be 'max' or 'min'"):
        methods.reference_files(paths, cfg, "natural", key, 0, side="top")
    with pytest.raises(CausalvisError, match="--stage references"):
        methods.reference_paths(paths, cfg, "synthetic", key, 0, side="min")


def test_a_side_is_its_non_diverse_part_then_its_diverse_batch(lite0):
    fv = StudyConfig().featurevis.model_copy(update={
        "size": 32, "crop": 2, "jitter": 2, "jitter_after": 1, "steps": 2, "n_images": 3,
        "diversity": 50.0})
    units = [(3, 11), (5, 12)]
    # no non-diverse image: exactly the one batch render_units always made
    plain = render_side(lite0, "blocks.1.1", units, fv)
    ref = render_units(lite0, "blocks.1.1", units, fv)
    for p, r in zip(plain, ref, strict=True):
        assert torch.equal(p.images, r.images) and p.seeds == r.seeds
    split = fv.model_copy(update={"n_non_diverse": 1})
    got = render_side(lite0, "blocks.1.1", units, split, side="min")
    alone = render_units(lite0, "blocks.1.1", units,
                         fv.model_copy(update={"n_images": 1, "diversity": 0.0}), sign=-1.0)
    rest = render_units(lite0, "blocks.1.1", units, fv.model_copy(update={"n_images": 2}),
                        sign=-1.0, first=1)
    for g, a, r in zip(got, alone, rest, strict=True):
        assert torch.equal(g.images, torch.cat([a.images, r.images]))
        assert g.seeds == a.seeds + r.seeds and len(set(g.seeds)) == 3
    # the min side has its own seeds, the max side keeps the seeds it always had
    assert not set(got[0].seeds) & set(ref[0].seeds)


def test_blur_and_occlusion_skip_and_rebuild_rewrites_nothing(tiny_two_afc, caplog):
    root, _ = tiny_two_afc
    assert not (root / "references" / "blur").exists()
    assert not (root / "occlusion").exists()

    def snapshot() -> dict[str, tuple[int, bytes]]:
        return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.read_bytes())
                for p in sorted(root.rglob("*")) if p.is_file()}

    before = snapshot()
    with caplog.at_level(logging.INFO):
        build(root, ["scan", "units", "exemplars", "blur", "occlusion", "trials",
                     "references"], progress=False)
    assert snapshot() == before
    text = caplog.text
    assert "blur: skipped" in text and "occlusion: skipped" in text
    assert re.search(r"trials \(two_afc\): kept (\d+) of \1 ", text)  # none dropped


def _copy_naturals(batch):
    """A per-image-set user method that shows the natural references it is handed."""
    return [Generated([read_asset_path(p) for p in u.natural_references[: batch.n_images]])
            for u in batch.units]


def copy_naturals_factory() -> ReferenceMethod:
    return ReferenceMethod("copy-naturals", "the natural references again", per_image_set=True,
                           generate=_copy_naturals)


def test_per_image_set_user_method_gets_each_sides_naturals(tiny_two_afc, tmp_path):
    root, cfg = tiny_two_afc
    study = tmp_path / "study"
    shutil.copytree(root, study)
    paths = StudyPaths(study)
    name = f"{__name__}:copy_naturals_factory"
    units = read_units(paths)
    assert run_method(StageContext(paths, cfg, progress=False), name, units) == 2
    for u in units:
        meta = read_json(paths.reference_meta(methods.method_dir_name(name), u.key))
        assert sorted({(e["image_set"], e["role"]) for e in meta["images"]}) == [
            (0, "max"), (0, "min"), (1, "max"), (1, "min")]
        for b in (0, 1):
            for side in ("max", "min"):
                got = methods.reference_paths(paths, cfg, name, u.key, b, side=side)
                want = methods.reference_paths(paths, cfg, "natural", u.key, b, side=side)
                assert [g.name for g in got] == [w.name for w in want]
                assert [g.read_bytes() for g in got] == [w.read_bytes() for w in want]
