"""Regression (issue 18, #11b/#11d): explicit units are checked before the scan; the scan
precision keeps tiny but varying activations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from natural_helpers import make_context, small_config
from torch import nn

from causalvis.errors import UnknownLayerError
from causalvis.pipeline.scan import run_scan_stage


def test_out_of_range_explicit_unit_fails_before_any_shard(tmp_path, lite0, samples):
    cfg = small_config()
    cfg.units.mode = "explicit"
    cfg.units.layers = []
    cfg.units.explicit = ["blocks.2.1:3", "blocks.2.1:999"]
    ctx = make_context(tmp_path / "study", cfg, lite0, samples)
    with pytest.raises(UnknownLayerError, match=r"blocks.2.1:999.*channels 0\.\.39"):
        run_scan_stage(ctx)
    act = ctx.paths.activations
    assert not act.exists() or not any(act.iterdir()), "no shard may be written"


class _Scaled(nn.Module):
    """conv -> BN scaled by 1e-6 (tiny but varying) -> conv -> BN (ordinary)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(8)
        with torch.no_grad():
            self.bn1.weight.mul_(1e-6)

    def forward(self, x):
        return self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)) * 1e6)))


@pytest.fixture
def scaled_model(monkeypatch):
    from causalvis.models import CausalvisModel, zoo

    name = "test-scaled-bn"

    def build(weights):
        return CausalvisModel(name, _Scaled(), (0.5,) * 3, (0.5,) * 3, input_size=32)

    monkeypatch.setitem(zoo._REGISTRY, name, zoo.ModelSpec(name, "test", build))
    return name, build(None)


@pytest.mark.parametrize("mode", ["float16", "auto", "float32"])
def test_scan_precision(tmp_path, scaled_model, mode, caplog):
    from causalvis.images import SampleSource
    from causalvis.images.preprocess import uint8_to_tensor
    from causalvis.models import probe_tensor
    from causalvis.store.activations import ActivationTable, read_index

    name, model = scaled_model
    source = SampleSource(32, 0.875)
    cfg = small_config()
    cfg.model.name = name
    cfg.units.layers = ["bn1", "bn2"]
    cfg.scan.dtype = mode
    ctx = make_context(tmp_path / "study", cfg, model, source)
    run_scan_stage(ctx)
    table = ActivationTable(ctx.paths)
    ids = table.ids
    direct = probe_tensor(model, uint8_to_tensor(np.stack([source.load_array(i) for i in ids])),
                          ["bn1", "bn2"])
    tiny = direct["bn1"].numpy()
    assert np.abs(tiny).max() < 6e-5 and (tiny.max(0) > tiny.min(0)).all()
    got = table.matrix("bn1")
    index = read_index(ctx.paths)
    raw = np.load(ctx.paths.shard_layer(index.shards[0].name, "bn1"))
    if mode == "float16":
        assert raw.dtype == np.float16 and index.dtype == "float16" and index.dtypes is None
        err = np.abs(got - tiny).max(0) / (tiny.max(0) - tiny.min(0))
        assert err.max() > 0.02, "float16 storage does lose these values"
        assert "scan.dtype" in caplog.text
    else:
        assert raw.dtype == np.float32
        np.testing.assert_allclose(got, tiny, rtol=1e-5, atol=0)
        bn2 = np.load(ctx.paths.shard_layer(index.shards[0].name, "bn2")).dtype
        if mode == "auto":  # per layer: the ordinary layer stays float16
            assert bn2 == np.float16
            assert index.dtype == "mixed" and index.dtypes == {"bn1": "float32", "bn2": "float16"}
        else:
            assert bn2 == np.float32 and index.dtype == "float32"
