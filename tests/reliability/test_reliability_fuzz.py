"""Fuzz the participant and admin API from its OpenAPI schema (schemathesis, in-process
ASGI): whatever arrives, the server answers with no 5xx and stores nothing odd."""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from reliability_helpers import make_client, start
from schemathesis.checks import not_a_server_error
from server_bundle_factory import ADMIN, make_study

_STATE: dict = {}


def _app():  # type: ignore[no-untyped-def]
    """One app over one generated study, shared by all fuzz cases of this module."""
    if "client" not in _STATE:
        import tempfile

        root = Path(tempfile.mkdtemp(prefix="cv-fuzz-"))
        study = make_study(root / "study", planned=50)
        client = make_client(study).__enter__()
        _STATE.update(client=client, token=start(client, "FUZZ")["participant_token"])
    return _STATE["client"].app


schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@pytest.mark.parametrize("real_token", [False, True], ids=["any-token", "real-token"])
def test_no_server_errors(case, real_token):  # type: ignore[no-untyped-def]
    if "token" in (case.path_parameters or {}):
        if real_token:
            case.path_parameters["token"] = _STATE["token"]
    elif real_token:  # no path token: send the admin token instead
        headers = dict(case.headers or {})
        headers["Authorization"] = f"Bearer {ADMIN}"
        case.headers = headers
    response = case.call()
    assert response.status_code < 500, (
        case.method,
        case.path,
        response.status_code,
        response.text[:300],
    )
    case.validate_response(response, checks=[not_a_server_error])


def teardown_module() -> None:
    client = _STATE.pop("client", None)
    if client is not None:
        client.__exit__(None, None, None)
        client.app.state.engine.dispose()
