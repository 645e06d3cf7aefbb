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
