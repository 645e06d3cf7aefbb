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
) -> None:
    """Serve the experiment; prints participant links (lab, Prolific, MTurk) and the admin URL."""
    from causalvis.server.run import serve

    serve(study, host=host, port=port, db_url=db, public_url=public_url, echo=typer.echo)
