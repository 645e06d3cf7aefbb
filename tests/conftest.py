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


def _own_postgres_schema(worker: str) -> None:
    """PostgreSQL tests reset the tables of the one DATABASE_URL database: under xdist each
    worker gets its own schema there (search_path in the URL), so workers never meet."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgresql") or "search_path" in url:
        return
    import psycopg

    plain = url.replace("postgresql+psycopg://", "postgresql://", 1)
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {worker}")
    sep = "&" if "?" in url else "?"
    os.environ["DATABASE_URL"] = f"{url}{sep}options=-csearch_path%3D{worker}"


if os.environ.get("PYTEST_XDIST_WORKER"):
    _own_postgres_schema(os.environ["PYTEST_XDIST_WORKER"])


@pytest.fixture(scope="session")
def lite0():
    from causalvis.models import load_model

    return load_model("lite0")


@pytest.fixture(scope="session")
def samples(lite0):
    from causalvis.images import SampleSource

    return SampleSource(lite0.input_size, lite0.crop_pct)
