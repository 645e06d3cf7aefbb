"""``causalvis observe``: run the machine observers on a study and compare with humans.

Writes ``report/observers.json`` (accuracy with 95 % CI per observer and condition,
predicted per-unit accuracy, and the comparison with human responses when they exist)
and ``report/observer_trials.csv`` (one decision per trial and observer, for κ).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from causalvis.analysis.stats import error_consistency, spearman_ci
from causalvis.errors import CausalvisError
from causalvis.observers.base import Observer, decide, signed_toward_truth
from causalvis.observers.registry import (
    ALL_OBSERVERS,
    CAUSAL_OCCLUSION,
    TWO_AFC,
    default_observers,
    load_task_trials,
    make_observers,
    observers_for,
)
from causalvis.observers.score import cluster_bootstrap, fit_alpha, sigmoid
from causalvis.observers.trials import AssetReader, Trial
from causalvis.store.layout import StudyPaths
from causalvis.store.reports import write_observers

CI_METHOD = (
    "95% expanded percentile cluster bootstrap over units (2000 resamples, all trials of a "
    "drawn unit kept; analysis.stats, as for the human CIs); machines have no participants"
)


def decisions_frame(
    trials: Sequence[Trial], reader: AssetReader, observers: Sequence[Observer]
) -> pd.DataFrame:
    """One row per (applicable trial, observer): Δ, choice, hit, signed Δ."""
    rows = []
    correct = [t.correct for t in trials]
    for obs in observers:
        deltas = np.asarray(obs.deltas(trials, reader), dtype=float)
        signed = signed_toward_truth(deltas, correct)
        for t, d, s in zip(trials, deltas, signed, strict=True):
            if not np.isfinite(d):
                continue
            choice = decide(d, t.trial_id, obs.name)
            rows.append({
                "trial_id": t.trial_id, "observer": obs.name, "condition": t.condition,
                "unit": t.unit, "base_trial_id": t.base_trial_id, "correct": t.correct,
                "delta": float(d), "signed_delta": float(s), "choice": choice,
                "hit": float(choice == t.correct),
            })
    cols = ["trial_id", "observer", "condition", "unit", "base_trial_id", "correct", "delta",
            "signed_delta", "choice", "hit"]
    return pd.DataFrame(rows, columns=cols)


def load_human_responses(
    paths: StudyPaths, responses_csv: str | Path | None = None, mapping: dict | None = None
) -> pd.DataFrame | None:
    """Included participants' main responses (trial_id, unit, condition, correct), or None.

    Uses the analysis' loader and the one exclusion rule set (``responses.exclusion``,
    the study's ``[exclusion]``), so 'human accuracy' here is the one ``causalvis
    analyze`` reports.
    """
    from causalvis.analysis.load import StudyInputs, canonicalize, join_trials, load_csv
    from causalvis.responses.exclusion import apply_exclusions, resolve_exclusion

    if responses_csv is None and not paths.database.is_file():
        return None
    inputs = StudyInputs.read(paths.root)
    if responses_csv is not None:
        df = load_csv(responses_csv, mapping)
    else:
        from causalvis.responses.export import responses_frame

        raw = responses_frame(None, paths.root, trials=inputs.trials)
        if raw.empty:
            return None
        df = canonicalize(raw, {}, source=str(paths.database))
    if inputs.trials is not None:
        df = join_trials(df, inputs.trials)
    if df.empty or "trial_id" not in df.columns:
        return None
    included = set(apply_exclusions(df, resolve_exclusion(inputs.config)).included)
    df = df[df["is_main"] & df["participant_id"].isin(included)]
    if df.empty:
        return None
    return df[["participant_id", "trial_id", "condition", "unit", "correct"]].assign(
        trial_id=lambda d: d["trial_id"].astype(str)
    )


@dataclass
class ObserveResult:
    summary: dict
    decisions: pd.DataFrame
    human: pd.DataFrame | None = field(default=None, repr=False)


def _by_observer(decisions: pd.DataFrame, names: Sequence[str]):
    """(name, rows) for every observer, including those with no applicable trial."""
    for name in names:
        yield name, decisions[decisions["observer"] == name]


def _fit_alphas(
    decisions: pd.DataFrame, human: pd.DataFrame | None, names: Sequence[str]
) -> dict[str, dict]:
    fits: dict[str, dict] = {}
    for name, d in _by_observer(decisions, names):
        entry = {"calibrated": False, "alpha": None, "alpha_n_responses": 0}
        if human is not None:
            joined = human.merge(d[["trial_id", "signed_delta"]], on="trial_id", how="inner")
            if len(joined) >= 5:
                fit = fit_alpha(joined["signed_delta"].to_numpy(), joined["correct"].to_numpy())
                entry = {"calibrated": True, "alpha": fit.alpha, "alpha_n_responses": fit.n}
        fits[str(name)] = entry
    return fits


def summarize(
    decisions: pd.DataFrame,
    trials: Sequence[Trial],
    human: pd.DataFrame | None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> tuple[dict, pd.DataFrame]:
    """The observers.json content; returns it and ``decisions`` with ``p_correct`` added."""
    names = list(names) if names is not None else list(dict.fromkeys(decisions["observer"]))
    fits = _fit_alphas(decisions, human, names)
    decisions = decisions.copy()
    decisions["p_correct"] = decisions["hit"]
    for name, fit in fits.items():
        if fit["calibrated"]:
            sel = decisions["observer"] == name
            signed = decisions.loc[sel, "signed_delta"]
            decisions.loc[sel, "p_correct"] = sigmoid(fit["alpha"] * signed)
    conditions = list(dict.fromkeys(t.condition for t in trials))
    out: dict = {}
    for name, d in _by_observer(decisions, names):
        fit = fits[str(name)]
        entry: dict = {**fit, "conditions": {}, "per_unit": {}}
        entry["not_applicable"] = [c for c in conditions if c not in set(d["condition"])]
        for cond, dc in d.groupby("condition", sort=False):
            acc, lo, hi = cluster_bootstrap(dc["hit"].to_numpy(), dc["unit"].tolist(),
                                            n_boot=n_boot, seed=seed)
            row = {"accuracy": acc, "ci_low": lo, "ci_high": hi, "n_trials": int(len(dc)),
                   "n_units": int(dc["unit"].nunique())}
            if fit["calibrated"]:
                p, plo, phi = cluster_bootstrap(dc["p_correct"].to_numpy(), dc["unit"].tolist(),
                                                n_boot=n_boot, seed=seed)
                row.update(predicted_human_accuracy=p, predicted_ci_low=plo, predicted_ci_high=phi)
            entry["conditions"][str(cond)] = row
            per_unit = dc.groupby("unit", sort=True).agg(
                accuracy=("hit", "mean"), p_correct=("p_correct", "mean"), n_trials=("hit", "size")
            )
            entry["per_unit"][str(cond)] = {
                str(u): {"accuracy": float(r.accuracy), "p_correct": float(r.p_correct),
                         "n_trials": int(r.n_trials)}
                for u, r in per_unit.iterrows()
            }
        out[str(name)] = entry
    summary: dict = {"ci_method": CI_METHOD, "observers": out}
    if human is not None:
        summary["human_comparison"] = compare_with_humans(
            decisions, human, names, n_boot=n_boot, seed=seed
        )
        summary["human_comparison_note"] = (
            "per-unit accuracies per condition; Spearman CI = expanded percentile bootstrap "
            "over units; "
            "kappa = error consistency between the observer's and each human response's "
            "correctness on the same trial; predicted = mean p_correct (calibrated) or hit rate"
        )
    return summary, decisions


def compare_with_humans(
    decisions: pd.DataFrame, human: pd.DataFrame, names: Sequence[str], *,
    n_boot: int = 2000, seed: int = 0,
) -> dict:
    """Per observer and condition (and 'all' cells): Spearman of per-unit accuracies, κ."""
    out: dict = {}
    hum_unit = human.groupby(["condition", "unit"])["correct"].agg(["mean", "size"])
    for name, d in _by_observer(decisions, names):
        pred_unit = d.groupby(["condition", "unit"])["p_correct"].mean()
        paired = pd.concat([pred_unit.rename("pred"), hum_unit["mean"].rename("human")],
                           axis=1, join="inner")
        joined = human.merge(d[["trial_id", "hit"]], on="trial_id", how="inner")
        entry: dict = {}
        groups = [(str(c), paired.xs(c, level=0), joined[joined["condition"] == c])
                  for c in paired.index.get_level_values(0).unique()]
        groups.append(("all", paired, joined))
        nan = float("nan")
        for cond, pc, jc in groups:
            rho, lo, hi = spearman_ci(pc["pred"].to_numpy(), pc["human"].to_numpy(),
                                      n_boot=n_boot, seed=seed)
            entry[cond] = {
                "spearman": rho, "ci_low": lo, "ci_high": hi, "n_units": int(len(pc)),
                "kappa": error_consistency(jc["hit"].to_numpy() > 0.5, jc["correct"].to_numpy()),
                "n_responses": int(len(jc)),
                "human_accuracy": float(jc["correct"].mean()) if len(jc) else nan,
                "observer_accuracy_on_answered": float(jc["hit"].mean()) if len(jc) else nan,
            }
        out[str(name)] = entry
    return out


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return None if not np.isfinite(obj) else round(float(obj), 6)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def observe(
    study: str | Path,
    observers: Sequence[str] | None = None,
    *,
    perceptual_model: str | None = None,
    perceptual_weights: str | None = None,
    responses_csv: str | Path | None = None,
    mapping: dict | None = None,
    device: str = "cpu",
    n_boot: int = 2000,
    seed: int = 0,
    mis_tasks: int = 20,
) -> ObserveResult:
    """Run observers on ``STUDY/trials.csv`` main trials; write the report files.

    ``observers`` None = the task's defaults (``registry.default_observers``: all but
    saliency_fine for causal occlusion, mis for two_afc). A two_afc study with observer
    ``"mis"`` also gets the per-unit MIS sampled from its scan (``mis_tasks`` simulated
    tasks per unit), see :mod:`causalvis.observers.mis`.
    """
    paths = StudyPaths(Path(study))
    if not paths.root.is_dir():
        raise CausalvisError(f"study folder not found: {paths.root}")
    studied = "lite0"
    study_name = paths.root.name
    cfg = None
    task = CAUSAL_OCCLUSION
    if paths.config.is_file():
        from causalvis.config import StudyConfig

        cfg = StudyConfig.load(paths.config)
        studied, study_name, task = cfg.model.name, cfg.name, cfg.task
    allowed = observers_for(task)
    observers = list(observers) if observers else list(default_observers(task))
    wrong = [n for n in observers if n in ALL_OBSERVERS and n not in allowed]
    if wrong:
        raise CausalvisError(
            f"observer {wrong[0]!r} does not apply to task {task!r}: choose from "
            f"{', '.join(allowed)}"
        )
    trials = load_task_trials(task, paths.trials)
    if task == TWO_AFC and cfg is not None and cfg.models and perceptual_model is None:
        # one similarity for every compared model: a net that is none of them if possible
        from causalvis.observers.reference import perceptual_model_for

        perceptual_model = perceptual_model_for(*cfg.models)
    if not trials:
        raise CausalvisError(f"{paths.trials}: no main trials")
    built, perceptual = make_observers(observers, studied_model=studied,
                                       perceptual_model=perceptual_model,
                                       perceptual_weights=perceptual_weights, device=device)
    reader = AssetReader(paths.bundle)
    decisions = decisions_frame(trials, reader, built)
    human = load_human_responses(paths, responses_csv, mapping)
    if human is not None and task == TWO_AFC:
        # unit labels of the trials (``<model>/<unit>`` in a multi-model study)
        labels = {t.trial_id: t.unit for t in trials}
        human = human.assign(unit=human["trial_id"].map(labels).fillna(human["unit"]))
    summary, decisions = summarize(decisions, trials, human, n_boot=n_boot, seed=seed,
                                   names=[o.name for o in built])
    summary = {"study": study_name, "task": task, "studied_model": studied,
               "n_main_trials": len(trials), "perceptual": perceptual or None,
               "human_responses": 0 if human is None else int(len(human)), **summary}
    mis_obs = next((o for o in built if o.name == "mis"), None)
    if mis_obs is not None:
        from causalvis.observers.mis import scan_mis_section

        summary["mis"] = scan_mis_section(
            paths, cfg, mis_obs.embedder, alpha=summary["observers"]["mis"]["alpha"],
            n_tasks=mis_tasks, n_boot=n_boot, seed=seed)
    summary = _jsonable(summary)
    write_observers(paths, summary, decisions)
    return ObserveResult(summary, decisions, human)
