"""``causalvis demo``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from causalvis.cli import app


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo-study"), "--out", help="study folder for the demo"),
    no_serve: bool = typer.Option(False, "--no-serve", help="stop after the report"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    participants: int = typer.Option(20, "--participants", help="simulated pilot participants"),
    strategy: str = typer.Option(
        "reference_image", "--strategy", help="observer the simulated participants follow"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Quick study on the embedded model and images, end to end: build, machine observers,
    a simulated pilot through the real server, the analysis report, then serve it."""
    from causalvis.study.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpcore", "alembic"):  # per-request and migration chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    run_demo(
        out,
        serve=not no_serve,
        host=host,
        port=port,
        participants=participants,
        strategy=strategy,
        progress=not quiet,
        echo=typer.echo,
    )
