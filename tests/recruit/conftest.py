"""A local fake of Prolific's API (the documented endpoints and their error cases) and a
small built study (the server tests' bundle) for the recruitment tests."""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_bundle_factory import make_study  # noqa: E402

TOKEN = "fake-prolific-token"


class FakeProlific:
    """State of the fake: studies, submissions, every call received, injected failures."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, object]] = []
        self.studies: dict[str, dict] = {}
        self.submissions: dict[str, dict] = {}  # id -> {participant_id, status, study_id}
        self.bonuses: dict[str, dict] = {}
        self.fail_next: list[tuple[int, dict]] = []  # (status, headers) served before handling
        self.fail_publish = False
        self.paid: list[str] = []

    def calls_to(self, method: str, pattern: str) -> list:
        return [c for c in self.calls if c[0] == method and re.fullmatch(pattern, c[1])]

    def handle(self, method: str, path: str, auth: str, body: object) -> tuple[int, object, dict]:
        if auth != f"Token {TOKEN}":
            return 401, {"error": {"detail": "Invalid token."}}, {}
        if self.fail_next:
            status, headers = self.fail_next.pop(0)
            return status, {"error": {"detail": "busy"}}, headers
        self.calls.append((method, path, body))
        m = re.fullmatch(r"/api/v1/studies/(\w+)/(transition|submissions)/", path)
        if method == "POST" and path == "/api/v1/studies/":
            sid = f"study{len(self.studies) + 1}"
            self.studies[sid] = {**body, "id": sid, "status": "UNPUBLISHED"}  # type: ignore[dict-item]
            return 201, self.studies[sid], {}
        if m and m.group(2) == "transition" and method == "POST":
            if self.fail_publish:
                return 400, {"error": {"detail": "Insufficient funds."}}, {}
            self.studies[m.group(1)]["status"] = {"PUBLISH": "ACTIVE", "STOP": "COMPLETED"}[
                body["action"]]  # type: ignore[index]
            return 200, self.studies[m.group(1)], {}
        if m and m.group(2) == "submissions" and method == "GET":
            rows = [{"id": k, **v} for k, v in self.submissions.items()
                    if v["study_id"] == m.group(1)]
            return 200, {"results": rows}, {}
        m = re.fullmatch(r"/api/v1/studies/(\w+)/", path)
        if m and method == "PATCH":
            self.studies[m.group(1)].update(body)  # type: ignore[arg-type]
            return 200, self.studies[m.group(1)], {}
        m = re.fullmatch(r"/api/v1/submissions/(\w+)/(transition|request-return)/", path)
        if m and method == "POST":
            sub = self.submissions[m.group(1)]
            if m.group(2) == "transition":
                if body["action"] == "REJECT" and len(body.get("message", "")) < 100:  # type: ignore[index,union-attr]
                    return 400, {"error": {"detail": "message too short"}}, {}
                sub["status"] = {"APPROVE": "APPROVED", "REJECT": "REJECTED"}[body["action"]]  # type: ignore[index]
            else:
                sub["status"] = "RETURN_REQUESTED"
            return 200, {"id": m.group(1), **sub}, {}
        if method == "POST" and path == "/api/v1/submissions/bonus-payments/":
            bid = f"bonus{len(self.bonuses) + 1}"
            self.bonuses[bid] = body  # type: ignore[assignment]
            return 201, {"id": bid, "study": body["study_id"]}, {}  # type: ignore[index]
        m = re.fullmatch(r"/api/v1/bulk-bonus-payments/(\w+)/pay/", path)
        if m and method == "POST":
            self.paid.append(m.group(1))
            return 202, {}, {}
        return 404, {"error": {"detail": f"no route {method} {path}"}}, {}


@pytest.fixture
def fake_prolific():
    """``(fake, base_url)``: a real HTTP server on localhost, stopped after the test."""
    fake = FakeProlific()

    class Handler(BaseHTTPRequestHandler):
        def _do(self) -> None:
            n = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(n) if n else b""
            body = json.loads(raw) if raw else None
            status, out, headers = fake.handle(self.command, self.path.split("?")[0],
                                               self.headers.get("Authorization", ""), body)
            data = json.dumps(out).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = _do

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake, f"http://127.0.0.1:{server.server_address[1]}/api/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return make_study(tmp_path / "study", planned=1)
