"""Helpers of the reliability tests (a uniquely named module: conftest names collide)."""

from __future__ import annotations

import sys
from pathlib import Path

from fastapi.testclient import TestClient

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "server"))
sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

from server_bundle_factory import ADMIN  # noqa: E402

from causalvis.server.guards import Rate  # noqa: E402


def make_client(study: Path, db_url: str | None = None, rate: Rate | None = None) -> TestClient:
    from causalvis.server.app import create_app

    app = create_app(study, db_url, admin_token=ADMIN, create_rate=rate or Rate(0, 1.0))
    return TestClient(app)


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
    """``choice``/``left_option`` as labels, sent as the participant's option ids (issue 17)."""
    from test_server_api import option_id

    if "left_option" in extra:
        extra["left_option"] = option_id(client, token, trial_id, extra["left_option"])
    body = {"trial_id": trial_id, "choice": option_id(client, token, trial_id, choice),
            "confidence": 2, "rt_ms": 900} | extra
    return client.post(f"/api/v1/participants/{token}/responses", json=body)


def count_rows(client: TestClient) -> tuple[int, int]:
    """(participants, responses) in the app's database."""
    from sqlalchemy import text

    with client.app.state.engine.connect() as conn:
        n_p = conn.execute(text("SELECT count(*) FROM participants")).scalar_one()
        n_r = conn.execute(text("SELECT count(*) FROM responses")).scalar_one()
    return int(n_p), int(n_r)
