"""Shared fixtures: the embedded model and images are real, so load them once."""

from __future__ import annotations

import os

import pytest
import torch

# Tests run on 2 cores; keep torch from oversubscribing them. Under pytest-xdist (`make
# test` runs one worker per core) every worker and the processes it starts get one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items) -> None:
    """PostgreSQL tests share the one DATABASE_URL database (they reset its tables): under
    xdist's ``--dist loadgroup`` they all run on one worker, one after another."""
    for item in items:
        if "postgres" in item.keywords or "postgres" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("postgres"))


@pytest.fixture(scope="session")
def lite0():
    from causalvis.models import load_model

    return load_model("lite0")


@pytest.fixture(scope="session")
def samples(lite0):
    from causalvis.images import SampleSource

    return SampleSource(lite0.input_size, lite0.crop_pct)
