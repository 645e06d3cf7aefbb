"""The power analysis of one study folder: its design, its pilot responses, its report."""

from __future__ import annotations

from pathlib import Path

from causalvis.errors import CausalvisError
from causalvis.observers.power import (
    PowerDesign,
    PowerResult,
    pilot_design,
    plot_curve,
    power_curve,
)
from causalvis.store.layout import StudyPaths, atomic_path
from causalvis.store.reports import write_power
from causalvis.store.sessions import read_sessions


def study_design(paths: StudyPaths) -> tuple[int, int]:
    """(main trials per participant, units) from the session plan and trials.csv."""
    from causalvis.observers.trials import read_trials

    frame = read_trials(paths.trials)
    main = frame[frame["kind"] == "main"]
    if main.empty:
        raise CausalvisError(f"{paths.trials}: no main trials")
    n_units = int(main["unit"].nunique())
    per_participant = n_units
    if paths.sessions.is_file():
        plan = read_sessions(paths.sessions)
        main_ids = set(main["trial_id"])
        counts = [sum(t in main_ids for t in s.trials) for s in plan.sessions]
        counts = [c for c in counts if c > 0]
        if counts:
            per_participant = min(counts)
    return per_participant, n_units


def run_power(
    study: str | Path, effect: float, *, alpha: float = 0.05, target: float = 0.8,
    baseline: float | None = None, test: str = "welch", reps: int = 2000, seed: int = 0,
) -> tuple[PowerResult, Path]:
    """Design from the study, variability from pilot responses when they exist."""
    from dataclasses import replace

    from causalvis.observers.observe import load_human_responses

    paths = StudyPaths(Path(study))
    if not paths.root.is_dir():
        raise CausalvisError(f"study folder not found: {paths.root}")
    per_participant, n_units = study_design(paths)
    pilot = load_human_responses(paths)
    if pilot is not None and pilot["participant_id"].nunique() >= 2:
        design = pilot_design(pilot, per_participant, n_units)
    else:
        design = PowerDesign(per_participant, n_units)
    if baseline is not None:
        design = replace(design, baseline=baseline)
    result = power_curve(design, effect, alpha=alpha, target=target, reps=reps, test=test,
                         seed=seed)
    figure = paths.report / "figures" / "power.png"
    figure.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(figure) as tmp:
        plot_curve(result, tmp)
    write_power(paths, result.to_json())
    return result, figure
