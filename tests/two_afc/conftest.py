"""Fixtures of the 2-AFC tests: one tiny real two_afc study per test session."""

from __future__ import annotations

import pytest
from two_afc_helpers import build_tiny_two_afc


@pytest.fixture(scope="session")
def tiny_two_afc(tmp_path_factory):
    """(root, config) of a tiny two_afc study built through stage ``references``. Shared:
    tests must not change it (copy it with ``shutil.copytree`` to run more stages)."""
    root = tmp_path_factory.mktemp("two_afc") / "study"
    cfg = build_tiny_two_afc(root)
    return root, cfg


@pytest.fixture(scope="session")
def tiny_two_afc_sessions(tiny_two_afc, tmp_path_factory):
    """(root, config) of a copy of the tiny study with stage ``sessions`` built too (the
    served bundle). Shared and read-only: copy it before writing into it."""
    import shutil

    from causalvis.pipeline.build import build

    root = tmp_path_factory.mktemp("two_afc_sessions") / "study"
    shutil.copytree(tiny_two_afc[0], root)
    build(root, ["sessions"], progress=False)
    return root, tiny_two_afc[1]
