"""Start the experiment server: build the app, print the links, hand over to uvicorn."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from causalvis.errors import CausalvisError
from causalvis.server.platforms import participant_urls


def banner(app, base_url: str) -> list[str]:  # type: ignore[no-untyped-def]
    """The lines ``causalvis serve`` prints: participant links, admin link and token."""
    urls = participant_urls(base_url)
    admin = app.state.admin
    lines = [
        f"study      {app.state.experiment.bundle.name}  "
        f"({len(app.state.experiment.bundle.sessions)} sessions)",
        f"database   {app.state.engine.url.render_as_string(hide_password=True)}",
        f"local/lab  {urls['local']}",
        f"Prolific   {urls['prolific']}",
        f"MTurk      {urls['mturk']}   (ExternalQuestion URL; MTurk appends assignmentId etc.)",
        f"admin      {base_url.rstrip('/')}/admin",
    ]
    if admin.new_token:
        lines.append(f"admin token {admin.new_token}   (shown once; only its hash is stored)")
    elif admin.source == "file":
        lines.append("admin token set on first start (set CAUSALVIS_ADMIN_TOKEN to choose one)")
    else:
        lines.append(f"admin token from {admin.source}")
    foreign = app.state.experiment.foreign_participants()
    if foreign:
        lines.append(
            f"warning    the database holds {foreign} participants of sessions not in this plan "
            "(a rebuilt study or another study): use one database per study build"
        )
    if app.state.web_dist is None:
        lines.append("warning    web front end not built: run `make setup` (npm run build in web/)")
    return lines


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        # Like uvicorn: connections left in TIME_WAIT by a crashed server must not block
        # an immediate restart; a live listener still does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def serve(
    study_dir: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    db_url: str | None = None,
    public_url: str | None = None,
    root_path: str = "",
    workers: int = 1,
    forwarded_allow_ips: str = "127.0.0.1",
    echo: Callable[[str], None] = print,
    limits: dict[str, float | int | None] | None = None,
) -> None:
    """Run ``causalvis serve`` until interrupted.

    ``workers`` > 1 runs that many processes (PostgreSQL only: SQLite is one process);
    session assignment is serialised across them in the database. Behind a reverse proxy,
    ``root_path`` is the prefix it serves the study under and ``forwarded_allow_ips`` the
    proxy's address, whose X-Forwarded-For/-Proto headers are trusted. ``limits``
    overrides the transport limits of ``[server]`` (``header_timeout_s``,
    ``body_timeout_s``, ``keep_alive_s``, ``max_connections``; None = the study's)."""
    import os

    import uvicorn

    from causalvis.server import asgi
    from causalvis.server.app import create_app
    from causalvis.server.transport import uvicorn_options

    if workers < 1:
        raise CausalvisError("--workers must be >= 1")
    if not _port_free(host, port):
        raise CausalvisError(f"--port {port}: already in use on {host}")
    # Built once here: validates the bundle, migrates the database, resolves the admin
    # token (so that worker processes find its hash) and gives the banner.
    overrides = {k: v for k, v in (limits or {}).items() if v is not None}
    app = create_app(study_dir, db_url, root_path=root_path, server_overrides=overrides)
    dialect = app.state.engine.dialect.name
    if workers > 1 and dialect == "sqlite":
        app.state.engine.dispose()
        raise CausalvisError("--workers: SQLite is single-process; run several workers on "
                             "PostgreSQL (--db postgresql+psycopg://user:pw@host/db)")
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = public_url or f"http://{shown}:{port}{app.state.root_path}"
    for line in banner(app, base):
        echo(line)
    common = {"host": host, "port": port, "log_level": "warning", "access_log": False,
              "proxy_headers": True, "forwarded_allow_ips": forwarded_allow_ips,
              **uvicorn_options(app.state.server_config)}
    if workers == 1:
        uvicorn.run(app, **common)
        return
    echo(f"workers    {workers} processes on {dialect}")
    app.state.engine.dispose()
    os.environ[asgi.STUDY_ENV] = str(Path(study_dir).resolve())
    os.environ[asgi.DB_ENV] = app.state.db_url
    os.environ[asgi.ROOT_ENV] = app.state.root_path
    os.environ[asgi.LIMITS_ENV] = json.dumps(overrides)
    uvicorn.run("causalvis.server.asgi:app_from_env", factory=True, workers=workers, **common)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@contextmanager
def serve_in_thread(
    app, *, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 30.0
) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Serve ``app`` with uvicorn in a daemon thread on loopback and yield its base URL
    (the demo's simulated pilot and the end-to-end tests drive the real HTTP API this way);
    the server stops and the database engine is disposed on exit."""
    import threading
    import time

    import uvicorn

    port = port or free_port(host)
    from causalvis.server.transport import uvicorn_options

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           access_log=False,
                                           **uvicorn_options(app.state.server_config)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            server.should_exit = True
            raise CausalvisError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()
