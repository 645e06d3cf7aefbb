"""Shared fixtures: the embedded model and images are real, so load them once."""

from __future__ import annotations

import os

import pytest
import torch

# Tests run on 2 cores; keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def lite0():
    from causalvis.models import load_model

    return load_model("lite0")


@pytest.fixture(scope="session")
def samples(lite0):
    from causalvis.images import SampleSource

    return SampleSource(lite0.input_size, lite0.crop_pct)
