"""``causalvis serve``: the web experiment for a built study."""

from __future__ import annotations

from pathlib import Path

import typer

from causalvis.cli.app import app


@app.command("serve")
def serve_command(
    study: Path = typer.Argument(..., help="study folder (built with `causalvis build`)"),
    host: str = typer.Option("127.0.0.1", "--host", help="interface to listen on"),
    port: int = typer.Option(8000, "--port", min=1, max=65535, help="TCP port"),
    db: str | None = typer.Option(
        None,
        "--db",
        help="database URL (default: sqlite STUDY/responses.sqlite), "
        "e.g. postgresql+psycopg://user:pw@host/db",
    ),
    public_url: str | None = typer.Option(
        None, "--public-url", help="the https address participants reach (for printed links)"
    ),
    root_path: str = typer.Option(
        "", "--root-path", help="path prefix the reverse proxy serves the study under "
        "(e.g. /study1; docs/platforms.md)"),
    workers: int = typer.Option(
        1, "--workers", min=1, max=64, help="server processes (PostgreSQL only; SQLite is "
        "single-process)"),
    forwarded_allow_ips: str = typer.Option(
        "127.0.0.1", "--forwarded-allow-ips", help="the reverse proxy's address(es) whose "
        "X-Forwarded-For / -Proto headers are trusted"),
    header_timeout: float | None = typer.Option(
        None, "--header-timeout", min=0.1, max=600, help="seconds a request's headers may "
        "take; slower connections are closed (slowloris) [default: server.header_timeout_s, 10]"),
    body_timeout: float | None = typer.Option(
        None, "--body-timeout", min=0.1, max=600, help="seconds a request body may take "
        "after its headers; then 408 [default: server.body_timeout_s, 10]"),
    keep_alive: int | None = typer.Option(
        None, "--keep-alive", min=1, max=600, help="idle keep-alive connections are closed "
        "after these seconds [default: server.keep_alive_s, 5]"),
    max_connections: int | None = typer.Option(
        None, "--max-connections", min=1, max=100_000, help="open connections per process; "
        "beyond it 503 [default: server.max_connections, 1000]"),
) -> None:
    """Serve the experiment; prints participant links (lab, Prolific, MTurk) and the admin URL."""
    from causalvis.server.run import serve

    serve(study, host=host, port=port, db_url=db, public_url=public_url, root_path=root_path,
          workers=workers, forwarded_allow_ips=forwarded_allow_ips, echo=typer.echo,
          limits={"header_timeout_s": header_timeout, "body_timeout_s": body_timeout,
                  "keep_alive_s": keep_alive, "max_connections": max_connections})
