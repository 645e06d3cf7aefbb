"""Fixtures for the server tests: a generated study bundle, an app, and database URLs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_bundle_factory import ADMIN, make_study


def _database_urls() -> list:
    urls = [pytest.param("sqlite", id="sqlite")]
    pg = os.environ.get("DATABASE_URL", "")
    urls.append(
        pytest.param(
            pg,
            id="postgres",
            marks=[
                pytest.mark.postgres,
                pytest.mark.skipif(
                    not pg.startswith("postgresql"), reason="DATABASE_URL is not PostgreSQL"
                ),
            ],
        )
    )
    return urls


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study")


def _reset_postgres(url: str) -> None:
    from sqlalchemy import text

    from causalvis.responses.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS responses, participants, screenings, recruit_actions, alembic_version"))
    engine.dispose()


@pytest.fixture(params=_database_urls())
def db_url(request, study: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{study / 'responses.sqlite'}"
    _reset_postgres(request.param)
    return request.param


@pytest.fixture
def client(study: Path, db_url: str):
    from causalvis.server.app import create_app

    app = create_app(study, db_url, admin_token=ADMIN)
    with TestClient(app) as c:
        yield c
    app.state.engine.dispose()
