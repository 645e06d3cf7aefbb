"""Stage `scan`: stored activations, resume after an interrupted run, corrupt images."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from natural_helpers import LAYERS, make_context, small_config
from PIL import Image

from causalvis.errors import CausalvisError
from causalvis.images import FolderSource
from causalvis.images.preprocess import uint8_to_tensor
from causalvis.models import probe_tensor
from causalvis.pipeline import scan
from causalvis.pipeline.scan import run_scan_stage, scan_layers
from causalvis.store.activations import ActivationTable


def test_scan_matches_direct_probe(natural_study, samples, lite0):
    table = ActivationTable(natural_study.paths)
    assert table.layers == LAYERS
    assert table.ids == samples.ids[:48]  # images.max_images honoured, order kept
    assert [s.n_images for s in table.index.shards] == [16, 16, 16]
    raw = np.load(natural_study.paths.activations / "shard-00001" / "blocks.2.1.npy")
    assert raw.dtype == np.float16 and raw.shape == (16, table.channels["blocks.2.1"])
    picks = [0, 17, 47]
    images = uint8_to_tensor(np.stack([samples.load_array(table.ids[i]) for i in picks]))
    direct = probe_tensor(lite0, images, LAYERS)
    for layer in LAYERS:
        got = table.matrix(layer)[picks]
        np.testing.assert_allclose(got, direct[layer].numpy(), rtol=2e-3, atol=2e-3)
        np.testing.assert_array_equal(table.column(layer, 5), table.matrix(layer)[:, 5])
    lo, hi = table.channel_range("blocks.1.1")
    np.testing.assert_array_equal(lo, table.matrix("blocks.1.1").min(0))
    np.testing.assert_array_equal(hi, table.matrix("blocks.1.1").max(0))
    with pytest.raises(CausalvisError, match="not scanned"):
        table.column("blocks.5.3", 0)


def test_scan_layer_defaults(lite0):
    cfg = small_config()
    cfg.scan.layers = ["blocks.3.0"]
    assert scan_layers(cfg, lite0) == ["blocks.3.0"]
    cfg.scan.layers = []
    cfg.units.mode = "explicit"
    cfg.units.explicit = ["blocks.4.0:3"]
    assert scan_layers(cfg, lite0) == [*LAYERS, "blocks.4.0"]
    cfg.units.layers = []
    cfg.units.explicit = []
    default = scan_layers(cfg, lite0)
    assert "blocks.6.0" in default and len(default) > 10
    cfg.scan.layers = ["blocks.99"]
    with pytest.raises(CausalvisError, match="blocks.99"):
        scan_layers(cfg, lite0)


def test_resume_after_interrupt(tmp_path, lite0, samples, monkeypatch):
    cfg = small_config(max_images=48)
    cfg.units.layers = ["blocks.1.1"]
    ctx = make_context(tmp_path / "study", cfg, lite0, samples)
    real = scan._scan_shard
    calls: list[list[str]] = []

    def crashing(probe, source, ids, **kw):
        if len(calls) == 2:
            raise KeyboardInterrupt("killed mid-scan")
        calls.append(ids)
        return real(probe, source, ids, **kw)

    monkeypatch.setattr(scan, "_scan_shard", crashing)
    with pytest.raises(KeyboardInterrupt):
        run_scan_stage(ctx)
    assert not (ctx.paths.activations / "index.json").exists()
    assert sorted(p.name for p in ctx.paths.activations.glob("shard-*")) == [
        "shard-00000", "shard-00001"]
    before = (ctx.paths.activations / "shard-00000" / "blocks.1.1.npy").stat().st_mtime_ns

    calls.clear()
    monkeypatch.setattr(scan, "_scan_shard", lambda *a, **kw: calls.append(a[2]) or real(*a, **kw))
    run_scan_stage(ctx)
    assert calls == [samples.ids[32:48]]  # only the unfinished shard is computed
    after = (ctx.paths.activations / "shard-00000" / "blocks.1.1.npy").stat().st_mtime_ns
    assert after == before
    table = ActivationTable(ctx.paths)
    assert table.ids == samples.ids[:48]

    calls.clear()
    run_scan_stage(ctx)
    assert calls == []  # everything done: nothing recomputed
    cfg.images.max_images = 40  # changes only the last shard's inputs
    run_scan_stage(ctx)
    assert calls == [samples.ids[32:40]]
    assert ActivationTable(ctx.paths).n_images == 40


def test_corrupt_images_are_skipped_and_reported(tmp_path, lite0, samples, caplog):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image_id in enumerate(samples.ids[:6]):
        samples.load(image_id).save(folder / f"img{i}.png")
    (folder / "broken.jpg").write_bytes(b"this is not a jpeg")
    good = (folder / "img0.png").read_bytes()
    (folder / "sub").mkdir()
    (folder / "sub" / "truncated.png").write_bytes(good[: len(good) // 3])
    Image.new("RGB", (300, 200), (200, 30, 30)).save(folder / "sub" / "red.png")
    cfg = small_config(source=str(folder), max_images=None)
    cfg.scan.shard_size = 4
    cfg.units.layers = ["blocks.1.1"]
    source = FolderSource(folder, lite0.input_size, lite0.crop_pct)
    ctx = make_context(tmp_path / "study", cfg, lite0, source)
    with caplog.at_level(logging.WARNING, logger="causalvis.scan"):
        run_scan_stage(ctx)
    table = ActivationTable(ctx.paths)
    assert sorted(s["image_id"] for s in table.index.skipped) == [
        "broken.jpg", "sub/truncated.png"]
    assert table.n_images == 7 and len(table.ids) == 7
    assert "broken.jpg" not in table.ids and "sub/red.png" in table.ids
    assert table.matrix("blocks.1.1").shape == (7, table.channels["blocks.1.1"])
    assert "broken.jpg" in caplog.text and "2 unreadable image(s)" in caplog.text


def test_decode_overlaps_the_forward_and_the_gpu_decode_path_matches(tmp_path, lite0, samples,
                                                                      monkeypatch):
    """The CPU path keeps a whole batch decoding ahead of the forward; the GPU-decode path
    (run here with torchvision's CPU decoder standing in for nvjpeg) gives the same
    activations within tolerance and skips the same corrupt file."""
    from causalvis.models import ActivationProbe

    for i, image_id in enumerate(samples.ids[:5]):
        samples.load(image_id).resize((96, 96)).save(tmp_path / f"im{i}.jpg", quality=95)
    (tmp_path / "im9.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    source = FolderSource(tmp_path, lite0.input_size, lite0.crop_pct)
    lookaheads = []
    real_iter = source.iter_images
    monkeypatch.setattr(source, "iter_images", lambda ids, workers, lookahead=None:
                        lookaheads.append(lookahead) or real_iter(ids, workers, lookahead))
    channels = {"blocks.1.1": 24}
    kw = {"batch_size": 4, "workers": 2, "channels": channels}
    with ActivationProbe(lite0, ["blocks.1.1"]) as probe:
        cpu = scan._scan_shard(probe, source, source.ids, **kw)
        assert lookaheads == [8]  # >= batch_size: the next batch decodes during this one
        monkeypatch.setattr(scan, "gpu_decode_reason", lambda *a: None)
        gpu = scan._scan_shard(probe, source, source.ids, **kw)
    assert lookaheads == [8]  # the GPU path reads bytes itself
    assert cpu.ids == gpu.ids == [f"im{i}.jpg" for i in range(5)]
    assert cpu.skipped == gpu.skipped and [s["image_id"] for s in gpu.skipped] == ["im9.jpg"]
    assert cpu.acts["blocks.1.1"].dtype == gpu.acts["blocks.1.1"].dtype == np.float16
    a, b = cpu.acts["blocks.1.1"].astype(np.float32), gpu.acts["blocks.1.1"].astype(np.float32)
    np.testing.assert_allclose(b, a, rtol=0, atol=0.02 * np.abs(a).max())
