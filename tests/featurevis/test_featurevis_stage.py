"""Methods registry and the ``references`` stage on a tiny study."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch
from PIL import Image

from causalvis.config import StudyConfig
from causalvis.errors import CausalvisError
from causalvis.images import pil_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline import methods
from causalvis.pipeline.build import StageContext
from causalvis.pipeline.references import run_references_stage
from causalvis.store.layout import StudyPaths, read_json, write_json
from causalvis.store.units import unit_key

UNITS = [("blocks.1.1", 2, "main"), ("blocks.1.1", 9, "practice"), ("blocks.2.1", 4, "main")]


def _study(tmp_path, lite0, samples, units=UNITS, mixed_source="own",
           **featurevis) -> StageContext:
    cfg = StudyConfig(
        name="t",
        conditions={"names": ["none", "natural", "synthetic", "mixed"], "n_references": 2,
                    "mixed_natural": 1, "mixed_synthetic": 1,
                    "mixed_synthetic_source": mixed_source},
        exemplars={"n_top": 20, "n_bins": 10, "n_image_sets": 2, "n_references": 2},
        featurevis={"size": 32, "crop": 2, "jitter": 2, "jitter_after": 1, "steps": 3,
                    "n_images": 2, "maco_steps": 2, "maco_canvas": 64,
                    "also_render": ["synthetic-maco"], **featurevis},
    )
    paths = StudyPaths(tmp_path / "study")
    paths.root.mkdir(parents=True)
    cfg.save(paths.config)
    write_json(paths.units, {"units": [
        {"layer": la, "channel": c, "key": unit_key(la, c), "role": r, "seed": 100 + c}
        for la, c, r in units]})
    ctx = StageContext(paths, cfg, progress=False)
    ctx.__dict__["model"] = lite0  # reuse the session model (cached_property slot)
    ctx.__dict__["source"] = samples
    return ctx


def test_builtin_registry_and_errors():
    assert methods.get_method("synthetic").kind == "generated"
    assert methods.get_method("natural").per_image_set
    with pytest.raises(CausalvisError, match="unknown reference method 'nope'"):
        methods.get_method("nope")
    with pytest.raises(CausalvisError, match="cannot import"):
        methods.get_method("no_such_module_xyz:factory")
    cfg = StudyConfig(conditions={"names": ["none", "natural", "mixed", "blur"]})
    # the mixed condition's synthetic part is its own optimisation (the paper's recipe)
    assert methods.generated_methods(cfg) == ["synthetic-mixed"]
    cfg.conditions.mixed_synthetic_source = "synthetic"
    assert methods.generated_methods(cfg) == ["synthetic"]
    cfg.conditions.mixed_synthetic = 0  # nothing synthetic to show: nothing rendered
    assert methods.generated_methods(cfg) == []


def test_paper_preset_renders_the_mixed_condition_separately(tmp_path):
    from causalvis.config import preset

    cfg = preset("paper2021")
    assert cfg.conditions.mixed_synthetic_source == "own"
    assert methods.generated_methods(cfg) == ["synthetic", "synthetic-mixed"]
    mixed = methods.reference_files(StudyPaths(tmp_path), cfg, "mixed", "k", 0)
    assert [p.parent.parent.name for p in mixed[5:]] == ["synthetic-mixed"] * 4
    assert [p.name for p in mixed[5:]] == [f"{i}.png" for i in range(4)]


def test_reference_paths_for_every_builtin_condition(tmp_path):
    cfg = StudyConfig()
    paths = StudyPaths(tmp_path)
    key = "blocks.3.2-c0017"
    nat = methods.reference_files(paths, cfg, "natural", key, 3)
    assert [p.name for p in nat] == [f"set3-{i}.png" for i in range(9)]
    assert nat[0].parent == paths.reference_dir("natural", key)
    assert [p.name for p in methods.reference_files(paths, cfg, "synthetic", key, 3)] == [
        f"{i}.png" for i in range(9)
    ]
    mixed = methods.reference_files(paths, cfg, "mixed", key, 1)
    assert [p.parent.parent.name for p in mixed] == ["natural"] * 5 + ["synthetic-mixed"] * 4
    reuse = cfg.model_copy(update={"conditions": cfg.conditions.model_copy(
        update={"mixed_synthetic_source": "synthetic"})})
    mixed = methods.reference_files(paths, reuse, "mixed", key, 1)
    assert [p.parent.parent.name for p in mixed] == ["natural"] * 5 + ["synthetic"] * 4
    assert [p.name for p in mixed[5:]] == [f"{i}.png" for i in range(4)]
    assert methods.reference_files(paths, cfg, "none", key, 0) == []
    blur = methods.reference_files(paths, cfg, "blur", key, 0)
    assert blur[0].parent.parent.name == "blur"
    with pytest.raises(CausalvisError, match="--stage blur"):
        methods.reference_paths(paths, cfg, "blur", key, 0)


def test_references_stage_renders_probes_and_resumes(tmp_path, lite0, samples, monkeypatch):
    monkeypatch.setattr(methods, "MACO_SPECTRUM_IMAGES", 24)
    ctx = _study(tmp_path, lite0, samples)
    run_references_stage(ctx)
    size = lite0.input_size
    for method in ("synthetic", "synthetic-maco"):
        for layer, channel, role in UNITS:
            key = unit_key(layer, channel)
            folder = ctx.paths.reference_dir(method, key)
            meta = read_json(folder / "meta.json")
            assert meta["role"] == role and meta["layer"] == layer and meta["channel"] == channel
            assert [e["file"] for e in meta["images"]] == ["0.png", "1.png"]
            imgs = [Image.open(folder / e["file"]) for e in meta["images"]]
            assert all(im.size == (size, size) for im in imgs)
            # the stored activation is that of the decoded file
            x = torch.stack([pil_to_tensor(im) for im in imgs])
            acts = probe_tensor(lite0, x, [layer])[layer][:, channel]
            np.testing.assert_allclose(acts.numpy(), [e["activation"] for e in meta["images"]],
                                       rtol=1e-5, atol=1e-5)
            assert all(np.isfinite(e["objective"]) for e in meta["images"])
    # the mixed condition's synthetic reference: its own render (mixed_synthetic = 1
    # image, own seed), not the synthetic batch's first image
    for layer, channel, _ in UNITS:
        key = unit_key(layer, channel)
        own = ctx.paths.reference_dir("synthetic-mixed", key)
        meta = read_json(own / "meta.json")
        assert [e["file"] for e in meta["images"]] == ["0.png"]
        assert meta["method"] == "synthetic-mixed" and meta["featurevis"]["steps"] == 3
        first = read_json(ctx.paths.reference_dir("synthetic", key) / "meta.json")["images"][0]
        assert meta["images"][0]["seed"] != first["seed"]
        a = np.asarray(Image.open(own / "0.png"), dtype=int)
        b = np.asarray(Image.open(ctx.paths.reference_dir("synthetic", key) / "0.png"), dtype=int)
        assert np.abs(a - b).mean() > 1
        mixed = methods.reference_files(ctx.paths, ctx.config, "mixed", key, 0)
        assert mixed[-1] == own / "0.png"
    # the lead's lookup for a condition: mixed = natural (other stage) + synthetic
    key = unit_key("blocks.1.1", 2)
    files = methods.reference_paths(ctx.paths, ctx.config, "synthetic", key, 0)
    assert [f.name for f in files] == ["0.png", "1.png"]
    # resumable: nothing is redone
    before = {p: p.stat().st_mtime_ns for p in ctx.paths.references.rglob("*.png")}
    run_references_stage(ctx)
    assert {p: p.stat().st_mtime_ns for p in ctx.paths.references.rglob("*.png")} == before
    # a condition list that needs no new generated method redoes nothing either
    ctx.config.conditions.names = ["none", "synthetic", "blur"]
    run_references_stage(ctx)
    assert {p: p.stat().st_mtime_ns for p in ctx.paths.references.rglob("*.png")} == before


def test_seeded_stage_output_is_independent_of_batching(tmp_path, lite0, samples):
    units = UNITS[:2]
    kw = {"mixed_source": "synthetic", "also_render": []}
    a = _study(tmp_path / "a", lite0, samples, units, batch_units=8, **kw)
    b = _study(tmp_path / "b", lite0, samples, units, batch_units=1, **kw)
    for ctx in (a, b):
        run_references_stage(ctx)
    for layer, channel, _ in units:
        key = unit_key(layer, channel)
        for i in range(2):
            ia = np.asarray(Image.open(a.paths.reference_dir("synthetic", key) / f"{i}.png"))
            ib = np.asarray(Image.open(b.paths.reference_dir("synthetic", key) / f"{i}.png"))
            assert np.abs(ia.astype(int) - ib.astype(int)).max() <= 1


def test_user_defined_method_by_dotted_path(tmp_path, lite0, samples, monkeypatch):
    (tmp_path / "mymethod.py").write_text(textwrap.dedent("""
        import numpy as np
        from causalvis.pipeline.methods import Generated, ReferenceMethod

        def generate(batch):
            s = batch.model.input_size
            out = []
            for u in batch.units:
                imgs = [np.full((s, s, 3), (u.channel * 20 + i * 7) % 256, np.uint8)
                        for i in range(batch.n_images)]
                out.append(Generated(imgs))
            return out

        def factory():
            return ReferenceMethod("grey", "flat grey images", generate=generate)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("mymethod", None)
    ctx = _study(tmp_path, lite0, samples, also_render=[])
    ctx.config.conditions.names = ["none", "mymethod:factory"]
    run_references_stage(ctx)
    key = unit_key("blocks.2.1", 4)
    files = methods.reference_paths(ctx.paths, ctx.config, "mymethod:factory", key, 1)
    assert len(files) == 2 and files[0].parent.parent.name == "mymethod__factory"
    assert np.asarray(Image.open(files[1]))[0, 0, 0] == (4 * 20 + 7) % 256
    assert not ctx.paths.reference_dir("synthetic", key).exists()
