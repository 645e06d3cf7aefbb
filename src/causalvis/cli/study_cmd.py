"""``causalvis init`` and ``causalvis build``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from causalvis.cli import app


@app.command("init")
def init_command(
    study: Path = typer.Argument(..., help="study folder to create"),
    preset: str = typer.Option("quick", "--preset", help="quick | paper2021 | imi2023"),
    model: str | None = typer.Option(None, "--model", help="model name (default: lite0)"),
    images: str | None = typer.Option(
        None, "--images", help="'samples' (embedded) or an image folder"
    ),
    force: bool = typer.Option(False, "--force", help="overwrite an existing study.toml"),
) -> None:
    """Create a study folder with a validated study.toml from a preset."""
    from causalvis.study.build import init_study

    cfg = init_study(study, preset, model=model, images=images, force=force)
    typer.echo(
        f"created {study / 'study.toml'} (preset {cfg.preset}, model {cfg.model.name}, "
        f"images {cfg.images.source})"
    )


@app.command("build")
def build_command(
    study: Path = typer.Argument(..., help="study folder"),
    stage: list[str] = typer.Option(
        None, "--stage", help="run only this stage (repeatable); default: all, in order"
    ),
    executor: str = typer.Option("local", "--executor", help="local | ray | slurm"),
    device: str | None = typer.Option(None, "--device", help="override model.device"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Run the pipeline stages (scan, units, exemplars, blur, occlusion, trials,
    references, sessions), skipping finished work."""
    from causalvis.study.build import build

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    timings = build(study, stage or None, progress=not quiet, executor=executor, device=device)
    for name, seconds in timings.items():
        typer.echo(f"{name:<12} {seconds:8.1f} s")
