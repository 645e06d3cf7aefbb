"""Fixtures for the reliability tests: a generated study, an app per database, helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from reliability_helpers import make_client
from server_bundle_factory import make_study, truth

PG = os.environ.get("DATABASE_URL", "")


def database_params() -> list:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(PG, id="postgres", marks=[pytest.mark.postgres, pytest.mark.skipif(
            not PG.startswith("postgresql"), reason="DATABASE_URL is not PostgreSQL")]),
    ]  # fmt: skip


def reset_postgres(url: str) -> None:
    from sqlalchemy import text

    from causalvis.responses.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS responses, participants, screenings, recruit_actions, alembic_version"))
    engine.dispose()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study", planned=5)


@pytest.fixture
def answers(study: Path) -> dict[str, str]:
    return {tid: row["correct"] for tid, row in truth(study).items()}


@pytest.fixture(params=database_params())
def db_url(request, study: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{study / 'responses.sqlite'}"
    reset_postgres(request.param)
    return request.param


@pytest.fixture
def client(study: Path, db_url: str):
    with make_client(study, db_url) as c:
        yield c
    c.app.state.engine.dispose()


@pytest.fixture
def client_sqlite(study: Path):
    with make_client(study, f"sqlite:///{study / 'responses.sqlite'}") as c:
        yield c
    c.app.state.engine.dispose()
