"""Exact incremental inference equals the full truncated sweep."""

from __future__ import annotations

import numpy as np
import pytest

from causalvis.errors import CausalvisError
from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep
from causalvis.stimuli.sweep import sweep_layers


def test_incremental_equals_full_sweep(lite0, samples):
    image = samples.load_array("coffee/s0.80/r0c1")
    occ = Occluder(image, Grid(224, 67, 79))  # 30 % patch; offsets 0, 79, 157 (border)
    layers = ["blocks.0.0", "blocks.1.1", "blocks.2.1", "blocks.3.0"]  # 112, 56, 28, 14 px maps
    ref = occlusion_sweep(lite0, occ, layers, batch_size=16)
    seen = []
    inc = IncrementalSweep(lite0, layers).run(occ, batch_size=4, on_batch=seen.append)
    assert seen == [4, 4, 1]
    for layer in layers:
        assert inc.acts[layer].shape == ref.acts[layer].shape
        assert np.allclose(inc.acts[layer], ref.acts[layer], rtol=1e-4, atol=1e-5), layer
        assert np.allclose(inc.base[layer], ref.base[layer], rtol=1e-5, atol=1e-6)


def test_unsupported_layers_raise_and_auto_falls_back(lite0, samples):
    with pytest.raises(NotImplementedError):
        IncrementalSweep(lite0, ["blocks.3.2.bn2"])
    occ = Occluder(samples.load_array("coffee/s0.80/r0c1"), Grid(224, 112, 112))
    sweep = sweep_layers(lite0, occ, ["blocks.1.0.bn2"], "auto", 8)
    assert sweep.acts["blocks.1.0.bn2"].shape == (2, 2, 96)
    assert sweep.engine == "full"  # which engine ran is recorded (set<b>.npz "engine")
    assert sweep_layers(lite0, occ, ["blocks.1.0"], "auto", 8).engine == "incremental"
    with pytest.raises(CausalvisError, match="occlusion.engine"):
        sweep_layers(lite0, occ, ["blocks.1.0.bn2"], "incremental", 8)
