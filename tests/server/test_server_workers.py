"""`causalvis serve --workers 2`: several processes on PostgreSQL serve one study without
over-assigning it; SQLite refuses several workers with one clear line (issue 21, item 4)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from server_bundle_factory import ADMIN, make_study, truth

from causalvis.errors import CausalvisError
from causalvis.server.run import free_port


def _serve(study: Path, db_url: str, port: int) -> subprocess.Popen:
    env = {**os.environ, "CAUSALVIS_ADMIN_TOKEN": ADMIN}
    return subprocess.Popen(
        [sys.executable, "-m", "causalvis", "serve", str(study), "--db", db_url,
         "--workers", "2", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_ready(proc: subprocess.Popen, base: str, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError("server not ready in time")


def test_workers_on_postgresql_serve_one_plan(tmp_path: Path, db_url: str):
    study = make_study(tmp_path / "study", planned=1)
    port = free_port()
    if db_url.startswith("sqlite"):  # the single-process database: refused, nothing served
        proc = _serve(study, db_url, port)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert err.strip().splitlines() == [
            "error: --workers: SQLite is single-process; run several workers on PostgreSQL "
            "(--db postgresql+psycopg://user:pw@host/db)"]
        return
    from sqlalchemy import select

    from causalvis.responses.db import Participant
    from causalvis.server.app import create_app

    local = create_app(study, db_url, admin_token=ADMIN)  # the same ids and database
    exp = local.state.experiment
    base = f"http://127.0.0.1:{port}"
    proc = _serve(study, db_url, port)
    try:
        _wait_ready(proc, base)
        rows = truth(study)
        with httpx.Client(base_url=base, timeout=10) as http:
            r = http.post("/api/v1/participants", json={"platform": "local",
                                                         "external_id": "w-01"})
            assert r.status_code == 201, r.text
            body = r.json()
            token = body["participant_token"]
            api = f"/api/v1/participants/{token}"
            assert http.post(f"{api}/consent", json={"consent": True}).is_success
            assert http.post(f"{api}/instructions", json={"instruction_time_s": 30.0}).is_success
            with exp.sessions() as db:
                session = db.scalar(select(Participant.session_id).where(
                    Participant.token == token))
            for t in body["trials"]:  # practice first, then main: answer right
                ids = exp.option_ids(session, t["trial_id"])
                r = http.post(f"{api}/responses", json={
                    "trial_id": t["trial_id"], "choice": ids[rows[t["trial_id"]]["correct"]],
                    "confidence": 3, "rt_ms": 1500})
                assert r.is_success, r.text
            assert http.post(f"{api}/finish", json={}).is_success
            # Everyone else at once, spread over both processes: never more than the plan.
            capacity = len(exp.bundle.sessions)

            def create(i: int) -> int:
                with httpx.Client(base_url=base, timeout=30) as c:
                    return c.post("/api/v1/participants", json={
                        "platform": "local", "external_id": f"rush-{i}"}).status_code
            with ThreadPoolExecutor(8) as pool:
                codes = list(pool.map(create, range(capacity + 4)))
        assert codes.count(201) == capacity - 1 and codes.count(409) == 5, codes
        with exp.sessions() as db:
            done = db.scalar(select(Participant).where(Participant.external_id == "w-01"))
            assert done.finished_at is not None and done.status == "finished"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
        local.state.engine.dispose()


def test_root_path_prefixes_asset_urls_and_both_proxy_styles_work(tmp_path: Path):
    """Behind a proxy at /study1: the browser is sent /study1/assets/… URLs; a proxy that
    strips the prefix and one that passes it on both reach the routes."""
    from fastapi.testclient import TestClient

    from causalvis.server.app import create_app

    study = make_study(tmp_path / "study")
    app = create_app(study, f"sqlite:///{tmp_path / 'r.sqlite'}", admin_token=ADMIN,
                     root_path="/study1/")
    with TestClient(app) as client:
        body = client.post("/api/v1/participants", json={"platform": "local",
                                                         "external_id": "rp-1"}).json()
        src = body["trials"][0]["options"][0]["src"]
        assert src.startswith("/study1/assets/")
        for path in (src, src[len("/study1"):]):  # prefix passed on / stripped by the proxy
            assert client.get(path).status_code == 200, path
        assert client.get("/study1/readyz").json() == {"ready": True, "database": True,
                                                       "writable": True}
        page = client.get("/study1/").text
        assert 'src="static/experiment.js"' in page  # relative: resolves under the prefix
    with pytest.raises(CausalvisError, match="--root-path 'study1'"):
        create_app(study, f"sqlite:///{tmp_path / 'r2.sqlite'}", admin_token=ADMIN,
                   root_path="study1")
