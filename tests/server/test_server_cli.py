"""`causalvis serve`: errors are one line, the banner has every link, the server answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from server_bundle_factory import make_study


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "causalvis", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def test_serve_missing_study_is_one_line_error(tmp_path):
    proc = _cli("serve", str(tmp_path / "nope"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert err.strip().count("\n") == 0 and err.startswith("error: ") and "nope" in err


def test_banner_prints_token_once(tmp_path, monkeypatch):
    from causalvis.server.app import create_app
    from causalvis.server.run import banner

    monkeypatch.delenv("CAUSALVIS_ADMIN_TOKEN", raising=False)
    study = make_study(tmp_path / "s")
    first = create_app(study)
    lines = "\n".join(banner(first, "https://exp.example.org"))
    token = first.state.admin.new_token
    assert token and token in lines
    assert (
        "https://exp.example.org/?PROLIFIC_PID={{%PROLIFIC_PID%}}&STUDY_ID={{%STUDY_ID%}}" in lines
    )
    assert "https://exp.example.org/?platform=mturk" in lines
    assert "https://exp.example.org/admin" in lines
    stored = (study / ".admin-token.sha256").read_text()
    assert token not in stored and (study / ".admin-token.sha256").stat().st_mode & 0o077 == 0
    second = create_app(study)
    assert second.state.admin.new_token is None and token not in "\n".join(banner(second, "x"))
    assert second.state.admin.check(token) and not second.state.admin.check(token + "x")
    for app in (first, second):
        app.state.engine.dispose()


def test_serve_runs_and_answers(tmp_path: Path):
    study = make_study(tmp_path / "s")
    port = _free_port()
    proc = _cli("serve", str(study), "--port", str(port), env={"CAUSALVIS_ADMIN_TOKEN": "tok-123"})
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.2)
        assert r.json() == {"ok": True, "study": "servertest", "writable": True}
        auth = {"Authorization": "Bearer tok-123"}
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/admin/progress", headers=auth).is_success
        assert (study / "responses.sqlite").is_file()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/admin" in out and "admin token from env" in out
