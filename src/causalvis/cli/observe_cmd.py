"""``causalvis observe``, ``simulate`` and ``power``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from causalvis.cli.app import app


@app.command("observe")
def observe_command(
    study: Path = typer.Argument(..., help="study folder"),
    observer: list[str] = typer.Option(
        [], "--observer", help="observer to run (repeatable; default: all but saliency_fine "
        "for causal occlusion, mis for two_afc)"
    ),
    perceptual: str | None = typer.Option(
        None, "--perceptual", help="perceptual similarity for reference observers and MIS: a "
        "model (default: lite1 when studying lite0, else lite0), dreamsim[:TYPE] or "
        "lpips[:alex|vgg|squeeze] (optional packages: causalvis[perceptual])"
    ),
    perceptual_weights: str | None = typer.Option(
        None, "--perceptual-weights", help="state dict for --perceptual (timm:/torchvision: "
        "models whose weights are not cached); for dreamsim its weights folder"
    ),
    responses_csv: Path | None = typer.Option(
        None, "--responses-csv", help="human responses to compare with / calibrate on"
    ),
    map_spec: str | None = typer.Option(None, "--map", help="FIELD=COLUMN,... for the CSV"),
    device: str = typer.Option("cpu", "--device"),
    seed: int = typer.Option(0, "--seed", help="bootstrap seed"),
    mis_tasks: int = typer.Option(
        20, "--mis-tasks", min=1, help="two_afc: simulated tasks per unit for the scan MIS"
    ),
) -> None:
    """Machine observers on a built study -> report/observers.json, observer_trials.csv."""
    from causalvis.analysis.load import parse_map
    from causalvis.observers.observe import observe
    from causalvis.store.layout import StudyPaths

    result = observe(study, observer or None, perceptual_model=perceptual,
                     perceptual_weights=perceptual_weights,
                     responses_csv=responses_csv, mapping=parse_map(map_spec), device=device,
                     seed=seed, mis_tasks=mis_tasks)  # fmt: skip
    summary = result.summary
    if summary.get("perceptual"):
        p = summary["perceptual"]
        typer.echo(f"perceptual similarity: {p.get('similarity', 'model features')} "
                   f"({p.get('model')}; {p.get('features')})")
    for name, entry in summary["observers"].items():
        tag = f"alpha={entry['alpha']:.3g}" if entry["calibrated"] else "uncalibrated"
        for cond, row in entry["conditions"].items():
            typer.echo(f"{name:<16} {cond:<10} {row['accuracy']:.3f} "
                       f"{_ci(row)}  n={row['n_trials']}  {tag}")
        for cond in entry["not_applicable"]:
            typer.echo(f"{name:<16} {cond:<10} not applicable (no references)")
    for name, conds in summary.get("human_comparison", {}).items():
        row = conds.get("all", {})
        typer.echo(f"vs humans {name:<16} spearman={_num(row.get('spearman'))} "
                   f"{_ci(row)} kappa={_num(row.get('kappa'))}")
    mis = summary.get("mis")
    if mis is not None and not mis.get("available"):
        typer.echo(f"scan MIS: {mis.get('reason')}")
    for cond, entry in (mis or {}).get("summary", {}).items():
        for row in entry["scores"]:
            typer.echo(f"scan MIS {row['model']:<12} {cond:<10} {row['score']:.3f} "
                       f"{_ci(row)}  units={row['n_units']}")
        if entry.get("statement"):
            typer.echo(entry["statement"])
    typer.echo(f"wrote {StudyPaths(study).observers_report}")


@app.command("simulate")
def simulate_command(
    study: Path = typer.Argument(..., help="study folder (for the ground truth)"),
    url: str = typer.Option(..., "--url", help="server root, e.g. http://127.0.0.1:8000"),
    participants: int = typer.Option(10, "--participants", min=1),
    strategy: str = typer.Option("oracle", "--strategy", help="oracle, random or an observer"),
    lapse: float = typer.Option(0.0, "--lapse", help="probability of a random answer"),
    concurrency: int = typer.Option(4, "--concurrency", min=1),
    pace: float = typer.Option(
        0.0, "--pace", help="really wait this fraction of the simulated reaction times"
    ),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = typer.Option(False, "--json", help="print the full result as JSON"),
) -> None:
    """Simulated participants answering a running server through its HTTP API."""
    from causalvis.observers.simulate import SimSettings, build_strategy, simulate

    settings = SimSettings(strategy=strategy, lapse=lapse, pace=pace, seed=seed)
    strat = build_strategy(study, strategy)
    result = simulate(url, strat, participants, settings, concurrency=concurrency)
    out = result.to_json()
    if as_json:
        typer.echo(json.dumps(out, indent=2))
    else:
        typer.echo(f"{out['n_participants']} participants ({out['n_failed']} failed) in "
                   f"{out['elapsed_s']} s, {out['n_requests']} requests, "
                   f"{out['requests_per_s']} req/s, latency {out['latency_ms']}")
        for cond, row in out["accuracy_by_condition"].items():
            typer.echo(f"  {cond:<10} accuracy {row['accuracy']:.4f} "
                       f"({row['n_correct']}/{row['n_responses']}, {row['n_participants']} ppl)")
        if pace == 0:
            typer.echo("  note: --pace 0 answers instantly; the server's clock will flag these "
                       "participants for the total-time exclusion")
        for err in out["errors"]:
            typer.echo(f"  error: {err}", err=True)
    if out["n_failed"]:
        raise typer.Exit(1)


@app.command("power")
def power_command(
    study: Path = typer.Argument(..., help="study folder (design and pilot responses)"),
    effect: float = typer.Option(..., "--effect", help="accuracy difference D, e.g. 0.07"),
    alpha: float = typer.Option(0.05, "--alpha"),
    power: float = typer.Option(0.8, "--power", help="target power"),
    baseline: float | None = typer.Option(
        None, "--baseline", help="accuracy of the reference condition (default: pilot or 0.60)"
    ),
    test: str = typer.Option("welch", "--test", help="welch (per participant) or ztest"),
    reps: int = typer.Option(2000, "--reps", min=100, help="simulated studies per n"),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Participants per condition needed to detect D, by simulation; saves a power curve."""
    from causalvis.observers.power_study import run_power

    result, figure = run_power(study, effect, alpha=alpha, target=power, baseline=baseline,
                               test=test, reps=reps, seed=seed)  # fmt: skip
    d = result.design
    typer.echo(f"design: {d.trials_per_participant} main trials per participant, {d.n_units} "
               f"units, baseline {d.baseline:.3f}, sigma_participant {d.sigma_participant:.2f}, "
               f"sigma_unit {d.sigma_unit:.2f} ({d.source})")
    for n, p in result.curve:
        typer.echo(f"  n={n:<5} power={p:.3f}")
    if result.required_n is None:
        typer.echo(f"power {power} not reached up to n={result.curve[-1][0]} per condition")
    else:
        typer.echo(f"required participants per condition: {result.required_n}")
    typer.echo(f"wrote {figure}")


def _num(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _ci(row: dict) -> str:
    """``[low, high]`` with three decimals (n/a where the bootstrap had nothing to resample)."""
    return f"[{_num(row.get('ci_low'))}, {_num(row.get('ci_high'))}]"
