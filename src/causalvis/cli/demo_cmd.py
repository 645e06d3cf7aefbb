"""``causalvis demo``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from causalvis.cli.app import app


@app.command("demo")
def demo_command(
    out: Path | None = typer.Option(
        None, "--out", help="study folder (default: demo-study, or demo-study-two-afc)"
    ),
    no_serve: bool = typer.Option(False, "--no-serve", help="stop after the report"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    participants: int = typer.Option(20, "--participants", help="simulated pilot participants"),
    task: str = typer.Option(
        "causal_occlusion", "--task", help="causal_occlusion | two_afc (the IMI 2-AFC task)"
    ),
    strategy: str | None = typer.Option(
        None,
        "--strategy",
        help="observer the simulated participants follow (default: reference_image for "
        "causal_occlusion, mis for two_afc)",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Quick study on the embedded model and images, end to end: build, machine observers,
    a simulated pilot through the real server, the analysis report, then serve it."""
    from causalvis.cli.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "httpcore", "alembic"):  # per-request and migration chatter
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if out is None:
        out = Path("demo-study" if task == "causal_occlusion" else "demo-study-two-afc")
    run_demo(
        out,
        serve=not no_serve,
        host=host,
        port=port,
        participants=participants,
        task=task,
        strategy=strategy,
        progress=not quiet,
        echo=typer.echo,
    )
