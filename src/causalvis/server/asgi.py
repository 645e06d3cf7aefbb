"""The app factory uvicorn's worker processes import (``serve --workers N``).

Each worker builds its own app from the environment the parent set: the study folder,
the database URL and the root path. The admin token is resolved once by the parent before
the workers start (its hash is then in the study folder, or the token in the
environment), so every worker checks the same token.
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI

STUDY_ENV, DB_ENV, ROOT_ENV = "CAUSALVIS_STUDY", "CAUSALVIS_DB_URL", "CAUSALVIS_ROOT_PATH"
LIMITS_ENV = "CAUSALVIS_SERVER_LIMITS"  # JSON: serve's overrides of [server] limits


def app_from_env() -> FastAPI:
    from causalvis.server.app import create_app

    return create_app(os.environ[STUDY_ENV], os.environ.get(DB_ENV) or None,
                      root_path=os.environ.get(ROOT_ENV, ""),
                      server_overrides=json.loads(os.environ.get(LIMITS_ENV) or "{}"))
