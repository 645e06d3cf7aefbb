"""Fixtures for the occlusion / trials tests."""

from __future__ import annotations

import pytest
from occlusion_helpers import make_study, shared_model


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory, lite0):
    """Two units of blocks.2.1 (main) + one of blocks.3.2 (practice), built once."""
    from causalvis.pipeline.build import build

    paths = make_study(tmp_path_factory.mktemp("occ") / "study",
                       [("blocks.2.1", 3, "main"), ("blocks.2.1", 17, "main"),
                        ("blocks.3.2", 5, "practice")])
    with shared_model(lite0):
        build(paths.root, ["occlusion", "trials"], progress=False)
    return paths
