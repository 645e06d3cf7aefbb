"""``causalvis init`` and ``causalvis build``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from causalvis.cli.app import app


@app.command("init")
def init_command(
    study: Path = typer.Argument(..., help="study folder to create"),
    preset: str = typer.Option("quick", "--preset", help="quick | paper2021 | imi2023"),
    model: str | None = typer.Option(None, "--model", help="model name (default: lite0)"),
    weights: str | None = typer.Option(
        None, "--weights", help="the model's state-dict file (.pth/.safetensors), checked "
        "now and stored in model.weights; 'random' for tests"
    ),
    images: str | None = typer.Option(
        None, "--images", help="'samples' (embedded) or an image folder"
    ),
    force: bool = typer.Option(False, "--force", help="overwrite an existing study.toml"),
    task: str | None = typer.Option(
        None, "--task", help="causal_occlusion | two_afc (default: the preset's task)"
    ),
    models: str | None = typer.Option(
        None, "--models", help="comma-separated models: one multi-model study (lite0,lite1,"
        "lite2); BASE+DICT = BASE's units from dictionary DICT (lite0,lite0+sae1)"
    ),
    dictionary: list[str] = typer.Option(
        None, "--dictionary", help="NAME=PATH: register a SAE / directions folder in "
        "[dictionaries] (repeatable; units NAME:FEATURE, docs/dictionaries.md)"
    ),
) -> None:
    """Create a study folder with a validated study.toml from a preset."""
    from causalvis.models.dictionary import parse_assignments
    from causalvis.pipeline.build import init_study
    from causalvis.store.layout import StudyPaths

    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    cfg = init_study(
        study, preset, model=model, images=images, force=force, task=task, models=names,
        weights=weights, dictionaries=parse_assignments(dictionary),
    )
    which = ", ".join(cfg.models) if cfg.models else cfg.model.name
    typer.echo(
        f"created {StudyPaths(study).config} (preset {cfg.preset}, task {cfg.task}, "
        f"model{'s' if cfg.models else ''} {which}, images {cfg.images.source})"
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
    retries: int = typer.Option(2, "--retries", help="retries per failed work item"),
    threads: int | None = typer.Option(
        None, "--threads", help="torch CPU threads per work item (same value: same bytes)"
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="local: worker processes (default: one per GPU, else 0)"
    ),
    ray_address: str | None = typer.Option(
        None, "--ray-address", help="ray: cluster address (auto, ray://host:10001)"
    ),
    ray_cpus: int | None = typer.Option(None, "--ray-cpus", help="ray: CPUs of a local Ray"),
    slurm_partition: str | None = typer.Option(None, "--slurm-partition", help="slurm"),
    slurm_time: int | None = typer.Option(None, "--slurm-time", help="slurm: minutes per job"),
    slurm_gpus: int | None = typer.Option(None, "--slurm-gpus", help="slurm: GPUs per job"),
    slurm_mem: float | None = typer.Option(None, "--slurm-mem", help="slurm: GB per job"),
    slurm_folder: str | None = typer.Option(None, "--slurm-folder", help="slurm: log folder"),
    items_per_job: int | None = typer.Option(
        None, "--items-per-job", help="slurm: work items per array task"
    ),
) -> None:
    """Run the pipeline stages (scan, units, exemplars, blur, occlusion, trials,
    references, sessions), skipping finished work."""
    from causalvis.compute import build_options
    from causalvis.pipeline.build import build

    given = {
        "workers": workers,
        "ray_address": ray_address,
        "num_cpus": ray_cpus,
        "partition": slurm_partition,
        "time_min": slurm_time,
        "gpus": slurm_gpus,
        "mem_gb": slurm_mem,
        "folder": slurm_folder,
        "items_per_job": items_per_job,
    }
    labels = {
        "workers": "--workers",
        "ray_address": "--ray-address",
        "num_cpus": "--ray-cpus",
        "partition": "--slurm-partition",
        "time_min": "--slurm-time",
        "gpus": "--slurm-gpus",
        "mem_gb": "--slurm-mem",
        "folder": "--slurm-folder",
        "items_per_job": "--items-per-job",
    }
    options = build_options(executor, retries=retries, threads=threads, labels=labels, **given)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    timings = build(
        study,
        stage or None,
        progress=not quiet,
        executor=executor,
        executor_options=options,
        device=device,
    )
    for name, seconds in timings.items():
        typer.echo(f"{name:<12} {seconds:8.1f} s")
