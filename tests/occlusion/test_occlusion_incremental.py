"""Exact incremental inference equals the full truncated sweep."""

from __future__ import annotations

import numpy as np
import pytest

from causalvis.stimuli.occlusion import Grid, Occluder, occlusion_sweep
from causalvis.stimuli.occlusion_incremental import IncrementalSweep


@pytest.mark.parametrize("layer", ["blocks.1.1", "blocks.3.0"])
def test_incremental_equals_full_sweep(lite0, samples, layer):
    image = samples.load_array("coffee/s0.80/r0c1")
    occ = Occluder(image, Grid(224, 67, 79))  # 30 % patch; offsets 0, 79, 157 (border)
    ref = occlusion_sweep(lite0, occ, [layer], batch_size=16)
    maps, base = IncrementalSweep(lite0, layer).run(occ, batch_size=7)
    assert maps.shape == ref.acts[layer].shape
    assert np.allclose(maps, ref.acts[layer], rtol=1e-4, atol=1e-5)
    assert np.allclose(base, ref.base[layer], rtol=1e-5, atol=1e-6)


def test_unsupported_layers_raise(lite0):
    with pytest.raises(NotImplementedError):
        IncrementalSweep(lite0, "blocks.3.2.bn2")
