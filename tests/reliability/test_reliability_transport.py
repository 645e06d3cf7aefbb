"""Transport limits (issue 23, item 6) on a real uvicorn server: slow headers and bodies
are cut off, no server banner, a connection cap that answers 503."""

from __future__ import annotations

import os
import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest
from server_bundle_factory import ADMIN, make_study

LIMITS = {"header_timeout_s": 0.5, "body_timeout_s": 0.5, "keep_alive_s": 5,
          "max_connections": 4}  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from causalvis.server.app import create_app
    from causalvis.server.guards import Rate
    from causalvis.server.run import serve_in_thread

    study = make_study(tmp_path_factory.mktemp("transport") / "study", planned=2)
    app = create_app(study, None, admin_token=ADMIN, create_rate=Rate(0, 1.0),
                     server_overrides=LIMITS)  # fmt: skip
    with serve_in_thread(app) as base:
        url = urlsplit(base)
        yield base, (url.hostname, url.port)


def _read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes (or ``limit_s``), and when it closed."""
    t0, data = time.monotonic(), b""
    sock.settimeout(0.1)
    while time.monotonic() - t0 < limit_s:
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - t0


def test_slowloris_client_is_disconnected(server):
    """A header byte every 0.1 s, never finishing: cut off after header_timeout_s."""
    _base, addr = server
    with socket.create_connection(addr) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        sock.settimeout(0.1)
        t0, answer = time.monotonic(), None
        while answer is None and time.monotonic() - t0 < 5.0:
            try:
                sock.sendall(b"X")
                answer = sock.recv(4096)  # anything (408 or the close) ends the wait
            except TimeoutError:
                continue
            except OSError:
                answer = b""
        took = time.monotonic() - t0
    assert answer is not None and took < 2.0, took
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer


def test_idle_connection_without_a_request_is_closed(server):
    _base, addr = server
    with socket.create_connection(addr) as sock:
        data, took = _read_until_closed(sock, 5.0)
    assert took < 2.0 and (data == b"" or data.startswith(b"HTTP/1.1 408")), (took, data)


def test_slow_body_gets_408(server):
    _base, addr = server
    with socket.create_connection(addr) as sock:
        sock.sendall(b"POST /api/v1/participants HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 40\r\n\r\n{\"pl")  # fmt: skip
        data, took = _read_until_closed(sock, 5.0)
    assert data.startswith(b"HTTP/1.1 408"), data
    assert took < 2.0


def test_no_server_banner(server):
    base, _addr = server
    r = httpx.get(f"{base}/healthz")
    assert r.status_code == 200 and "server" not in r.headers


def test_over_the_connection_cap_is_503(server):
    base, addr = server
    idle = [socket.create_connection(addr) for _ in range(LIMITS["max_connections"])]
    try:
        time.sleep(0.05)  # let the server register them
        r = httpx.get(f"{base}/healthz")
        assert r.status_code == 503, r.text
    finally:
        for sock in idle:
            sock.close()
    time.sleep(0.05)
    assert httpx.get(f"{base}/healthz").status_code == 200


def test_serve_hands_the_limits_to_uvicorn(tmp_path, monkeypatch):
    """``serve``'s options override ``[server]`` and reach uvicorn (no banner, the cap, the
    keep-alive, the header-timeout protocol)."""
    import uvicorn

    from causalvis.server import transport
    from causalvis.server.run import serve

    seen: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    monkeypatch.setenv("CAUSALVIS_ADMIN_TOKEN", ADMIN)
    monkeypatch.delenv(transport.HEADER_TIMEOUT_ENV, raising=False)
    study = make_study(tmp_path / "study", planned=1)
    serve(study, port=0, echo=lambda _line: None,
          limits={"header_timeout_s": 3.5, "max_connections": 77, "keep_alive_s": None})
    assert seen["server_header"] is False and seen["limit_concurrency"] == 77
    assert seen["timeout_keep_alive"] == 5 and seen["http"] == transport.PROTOCOL
    assert os.environ[transport.HEADER_TIMEOUT_ENV] == "3.5"
