"""Fixtures for the reliability tests: a generated study, an app per database, helpers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "server"))
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

from server_bundle_factory import ADMIN, make_study, truth  # noqa: E402

from causalvis.server.guards import Rate  # noqa: E402

PG = os.environ.get("DATABASE_URL", "")


def database_params() -> list:
    return [
        pytest.param("sqlite", id="sqlite"),
        pytest.param(PG, id="postgres", marks=[pytest.mark.postgres, pytest.mark.skipif(
            not PG.startswith("postgresql"), reason="DATABASE_URL is not PostgreSQL")]),
    ]  # fmt: skip


def reset_postgres(url: str) -> None:
    from sqlalchemy import text

    from causalvis.server.db import make_engine

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS responses, participants, alembic_version"))
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


def make_client(study: Path, db_url: str | None = None, rate: Rate | None = None) -> TestClient:
    from causalvis.server import create_app

    app = create_app(study, db_url, admin_token=ADMIN, create_rate=rate or Rate(0, 1.0))
    return TestClient(app)


@pytest.fixture
def client(study: Path, db_url: str):
    with make_client(study, db_url) as c:
        yield c
    c.app.state.engine.dispose()


def start(client: TestClient, external_id: str = "P1", consent: bool = True) -> dict:
    """Create a participant and get it through consent and instructions."""
    r = client.post("/api/v1/participants", json={"platform": "local", "external_id": external_id})
    assert r.status_code == 201, r.text
    body = r.json()
    if consent:
        base = f"/api/v1/participants/{body['participant_token']}"
        assert client.post(f"{base}/consent", json={"consent": True}).status_code == 200
        r = client.post(f"{base}/instructions", json={"instruction_time_s": 12.5})
        assert r.status_code == 200, r.text
    return body


def answer(client: TestClient, token: str, trial_id: str, choice: str = "a", **extra):  # type: ignore[no-untyped-def]
    body = {"trial_id": trial_id, "choice": choice, "confidence": 2, "rt_ms": 900} | extra
    return client.post(f"/api/v1/participants/{token}/responses", json=body)


def count_rows(client: TestClient) -> tuple[int, int]:
    """(participants, responses) in the app's database."""
    from sqlalchemy import text

    with client.app.state.engine.connect() as conn:
        n_p = conn.execute(text("SELECT count(*) FROM participants")).scalar_one()
        n_r = conn.execute(text("SELECT count(*) FROM responses")).scalar_one()
    return int(n_p), int(n_r)
