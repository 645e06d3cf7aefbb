"""The whole analysis: exclusions → tables → contrasts → κ → difficulty → report files.

``analyze_frame`` is pure (DataFrame in, summary dict out); ``write_report`` writes
``summary.json``, ``figures/*.png|pdf`` and a self-contained ``index.html``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from causalvis import __version__
from causalvis.analysis import design as designs
from causalvis.analysis import figures, tables
from causalvis.analysis.contrasts import compute_contrasts, mixed_model
from causalvis.analysis.kappa import kappa_analysis, machine_observer_rows
from causalvis.analysis.load import StudyInputs, join_trials, load_study
from causalvis.analysis.tables import interval_text
from causalvis.config import ExclusionConfig, StudyConfig
from causalvis.errors import CausalvisError
from causalvis.responses.exclusion import (
    apply_exclusions,
    fast_answers_by_condition,
    resolve_exclusion,
)
from causalvis.store.layout import REPORT_PAGE_FILE
from causalvis.store.reports import read_observer_trials, read_observers_report, write_summary


@dataclass
class AnalysisOptions:
    n_boot: int = 2000
    n_perm: int = 5000
    seed: int = 0
    level: float = 0.95
    design: str = "auto"  # auto | participants | crossed
    mixed_model: bool = True
    min_common_trials: int = 5
    # IMI's "row variability" exclusion (None: the exclusion config's, else off).
    min_side_choices: int | None = None
    # Multi-model / 2-AFC analysis: bootstrap over units, and the study's model order.
    model_boot: int = 10_000
    model_order: tuple[str, ...] = ()
    model_order_is_size: bool = False
    # Conditions as the user means them: (old, new) relabelling in display order, the
    # baselines (default: ``none``, else every ``none_*``) and the reference (``natural``).
    conditions: tuple[tuple[str, str], ...] = ()
    baselines: tuple[str, ...] = ()
    reference: str | None = None
    # ``--by COLUMN``: also analyse each level of the column (the canonical ``level``).
    by: str | None = None
    # One difficulty per analysis (IMI's hard85/95/99 were separate experiments); None:
    # ``easy`` when present (IMI's main figure), else the only one there is.
    difficulty: str | None = None


def analyze_frame(
    df: pd.DataFrame,
    *,
    exclusion: ExclusionConfig | None = None,
    observers: dict[str, Any] | None = None,
    observer_trials: pd.DataFrame | None = None,
    trials: pd.DataFrame | None = None,
    options: AnalysisOptions | None = None,
    source: str = "",
    task: str | None = None,
    config: StudyConfig | None = None,
    simulated: bool = False,
) -> dict[str, Any]:
    """Run every analysis on a canonical table (see :mod:`causalvis.analysis.load`).

    A ``models`` section (per-unit model scores and tests) is added when the responses
    name two or more models, or when ``task`` is ``two_afc``. ``config`` (the study's)
    feeds the methods section; ``simulated`` labels every figure and the page."""
    # Small matrices only: one BLAS thread is faster and never oversubscribes shared cores.
    with threadpool_limits(limits=1):
        summary = _analyze(df, exclusion, observers, observer_trials, trials,
                           options or AnalysisOptions(), source, task)
    summary["simulated"] = bool(simulated)
    summary["methods"] = methods_section(summary, df, config, task)
    return summary


def _analyze(
    df: pd.DataFrame,
    exclusion: ExclusionConfig | None,
    observers: dict[str, Any] | None,
    observer_trials: pd.DataFrame | None,
    trials: pd.DataFrame | None,
    opt: AnalysisOptions,
    source: str,
    task: str | None = None,
) -> dict[str, Any]:
    if opt.design not in ("auto", "participants", "crossed"):
        raise CausalvisError(f"--ci: unknown design {opt.design!r} (auto | participants | crossed)")
    exclusion = exclusion or ExclusionConfig()
    loaded = df.attrs.get("load")
    difficulty = df.attrs.get("difficulty")
    df, order = designs.relabel(df, opt.conditions)
    ex = apply_exclusions(df, exclusion, min_side_choices=opt.min_side_choices)
    main_all = df[df["is_main"]]
    main = main_all[main_all["participant_id"].isin(ex.included)]
    kinds = df["kind"].value_counts().to_dict()
    summary: dict[str, Any] = {
        "causalvis_version": __version__,
        "source": source,
        "settings": {**asdict(opt), "exclusion": exclusion.model_dump()},
        "data": {
            "n_rows": len(df),
            "n_participants": int(df["participant_id"].nunique()),
            "rows_by_kind": {str(k): int(v) for k, v in kinds.items()},
            "n_catch_trials": int(df["is_catch"].sum()),
            "n_main_trials_included": len(main),
        },
        "exclusions": ex.to_json(),
        "fast_answers": fast_answers_by_condition(df, exclusion),
    }
    if loaded:
        summary["input"] = loaded
    if difficulty:
        summary["data"]["difficulty"] = difficulty
    if main_all.empty:
        raise CausalvisError(f"{source or 'responses'}: no main (non-catch) trials to analyse")
    design = tables.choose_design(main_all) if opt.design == "auto" else opt.design
    summary["settings"]["design_used"] = design
    info, references = _design_info(main if not main.empty else main_all, order, opt)
    summary["design"] = info
    paired = info["design"] != designs.BETWEEN
    kw = {"n_boot": opt.n_boot, "seed": opt.seed, "level": opt.level, "order": order}
    ckw = {"n_perm": opt.n_perm, "seed": opt.seed, "level": opt.level,
           "references": references}
    if main.empty:
        summary["conditions"] = {}
        summary["contrasts"] = []
        summary["note"] = "every participant was excluded; see conditions_without_exclusion"
    else:
        table, reps = tables.condition_table(main, design=design, paired=paired, **kw)
        base = info["baselines"]
        glmm = mixed_model(main, list(table), base[0] if base else None) \
            if opt.mixed_model else None
        summary["conditions"] = table
        summary["contrasts"] = compute_contrasts(main, table, reps, glmm=glmm, **ckw)
        if glmm is not None:
            summary["mixed_model"] = {k: v for k, v in glmm.items() if k != "cov"} | {
                "se": np.sqrt(np.diag(glmm["cov"])).tolist() if glmm.get("fitted") else None}
    paired_all = designs.study_design(main_all)["design"] != designs.BETWEEN
    table_all, reps_all = tables.condition_table(main_all, design=design, paired=paired_all,
                                                 **kw)
    summary["conditions_without_exclusion"] = table_all
    summary["contrasts_without_exclusion"] = compute_contrasts(main_all, table_all, reps_all,
                                                               **ckw)
    if opt.by:
        summary["by"] = {"column": opt.by, "levels": _by_levels(
            main if not main.empty else main_all, order, opt, design)}
    data = main if not main.empty else main_all
    bkw = {"n_boot": min(opt.n_boot, 1000), "seed": opt.seed}
    summary["by_layer"] = tables.grouped_accuracy(data, "layer", **bkw)
    summary["by_unit"] = tables.grouped_accuracy(data, "unit", **bkw)
    summary["by_image_set"] = tables.grouped_accuracy(data, "image_set", **bkw)
    summary["by_confidence"] = tables.confidence_table(data, **bkw)
    summary["rt"] = tables.rt_table(data, order=order, **bkw)
    summary["difficulty"] = tables.difficulty(data, **bkw)
    machine = machine_observer_rows(observer_trials, trials) if observer_trials is not None \
        else None
    summary["kappa"] = kappa_analysis(data, machine, min_common=opt.min_common_trials)
    n_models = int(data["model"].nunique()) if "model" in data.columns else 0
    if n_models >= 2 or task == "two_afc":
        from causalvis.analysis.models import models_section

        summary["models"] = models_section(
            data, order=opt.model_order, order_is_size=opt.model_order_is_size,
            n_boot=opt.model_boot, ci=opt.level, seed=opt.seed)
        summary["models"]["task"] = task
    if observers:
        summary["observers"] = {
            name: {"conditions": o.get("conditions", {})}
            for name, o in observers.get("observers", {}).items()
        }
        if observers.get("perceptual"):
            summary["observers_perceptual"] = observers["perceptual"]
    return jsonable(summary)


def _design_info(main: pd.DataFrame, order: list[str], opt: AnalysisOptions,
                 strict: bool = True) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The design found in ``main``, its baselines and reference, and the references of
    the contrasts (baselines first). Not ``strict`` (a ``--by`` level): a given baseline
    or reference the level lacks is left out instead of being an error."""
    found = designs.study_design(main)
    conds = [c for c in order if c in set(main["condition"])]
    given = opt.baselines if strict else tuple(b for b in opt.baselines if b in conds)
    base = designs.baselines(conds, given)
    ref = designs.reference(conds, opt.reference if strict or opt.reference in conds
                            else None)
    info = {**found, "conditions": conds, "baselines": base, "reference": ref,
            "test": _test_name(found["design"]),
            "bootstrap": "participants resampled with all their conditions"
            if found["design"] != designs.BETWEEN
            else "participants resampled within each condition"}
    return info, tuple(dict.fromkeys([*base, *([ref] if ref else [])]))


def _by_levels(main: pd.DataFrame, order: list[str], opt: AnalysisOptions,
               design: str) -> dict[str, Any]:
    """``--by COLUMN``: per level of the column, the design, accuracies and contrasts on
    that level's trials alone (exclusions stay per participant, over all their trials)."""
    out: dict[str, Any] = {}
    for level, d in main[main["level"].notna()].groupby("level", sort=True):
        info, refs = _design_info(d, order, opt, strict=False)
        table, reps = tables.condition_table(
            d, design=design, paired=info["design"] != designs.BETWEEN, n_boot=opt.n_boot,
            seed=opt.seed, level=opt.level, order=order)
        out[str(level)] = {"design": info, "conditions": table, "contrasts": compute_contrasts(
            d, table, reps, n_perm=opt.n_perm, seed=opt.seed, level=opt.level,
            references=refs)}
    return out


def _test_name(design: str) -> str:
    if design == designs.WITHIN:
        return "paired sign-flip test over participants (exact up to 16 participants)"
    if design == designs.BETWEEN:
        return "permutation of condition labels between participants"
    return ("per contrast: paired sign-flip over the participants who saw both conditions, "
            "label permutation when no participant saw both")


def jsonable(obj: Any) -> Any:
    """Plain JSON types; NaN and infinities become null."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


# -- methods -------------------------------------------------------------------------------

def methods_section(s: dict[str, Any], df: pd.DataFrame, cfg: StudyConfig | None,
                    task: str | None) -> dict[str, list[str]]:
    """The methods as sentences per heading (design, stimuli, sample, exclusions,
    statistics), from the study config where there is one and from the data always, so
    the report says what was done without the reader opening study.toml."""
    main = df[df["is_main"]]
    per_p = main.groupby("participant_id").size()
    catch_p = df[df["is_catch"]].groupby("participant_id").size()
    d = s.get("design") or {}
    task = task or (cfg.task if cfg is not None else None)
    conds = d.get("conditions") or sorted(map(str, main["condition"].unique()))
    design = [f"Task: {_TASKS.get(task or '', task or 'not recorded')}.",
              f"Conditions ({len(conds)}): {', '.join(conds)}; "
              f"{_DESIGNS.get(d.get('design', ''), d.get('design', 'unknown'))}."]
    if "unit" in main.columns and main["unit"].notna().any():
        layers = sorted(map(str, main["layer"].dropna().unique())) if "layer" in main else []
        design.append(f"Units: {main['unit'].nunique()} units"
                      + (f" in {len(layers)} layers ({', '.join(layers)})" if layers else "")
                      + (f"; chosen per layer ({cfg.units.per_layer} per layer)"
                         if cfg is not None and cfg.units.mode == "per_layer" else "") + ".")
    if "image_set" in main.columns and main["image_set"].notna().any():
        design.append(f"Image sets (query images per unit) answered: "
                      f"{main['image_set'].nunique()}"
                      + (f" of {cfg.exemplars.n_image_sets} built per unit" if cfg else "") + ".")
    diff = (s.get("data") or {}).get("difficulty")
    if diff:
        others = [lv for lv in diff["levels"] if lv != diff["analysed"]]
        design.append(f"Difficulty analysed: {diff['analysed']}"
                      + (f" ({diff['rows_left_out']} rows of {', '.join(others)} left out: "
                         "each difficulty was its own experiment)" if others else "") + ".")
    if len(per_p):
        design.append(f"Trials per session: {_span(per_p)} main"
                      + (f" and {_span(catch_p)} catch trials" if len(catch_p) else "")
                      + " per participant.")
    if cfg is not None:
        sc = cfg.sessions
        design.append(f"Catch trials: {sc.n_catch} per session ({_CATCH.get(sc.catch_rule, sc.catch_rule)}); "
                      "they are scored for the exclusion only, never in the accuracies.")
        design.append(f"Practice: {sc.n_practice} trials drawn per participant "
                      f"({sc.n_practice_obvious} from the obvious pool, the rest from the "
                      "non-obvious pool), repeated until all are correct "
                      f"(at most {cfg.exclusion.max_practice_attempts} attempts before exclusion).")
    stimuli = []
    if cfg is not None:
        stimuli.append(f"Model: {cfg.model.name}" + (f" (models: {', '.join(cfg.models)})"
                                                     if cfg.models else "") + ".")
        if (task or cfg.task) != "two_afc":
            stimuli.append(f"Occlusion patch: {100 * cfg.occlusion.patch_fraction:.0f} % of the "
                           f"image side, filled with {_FILLS.get(cfg.occlusion.fill, cfg.occlusion.fill)}; "
                           f"stride {cfg.occlusion.stride} px.")
        stimuli.append(f"References: {cfg.conditions.n_references} per trial "
                       f"(mixed: {cfg.conditions.mixed_natural} natural + "
                       f"{cfg.conditions.mixed_synthetic} synthetic, "
                       + ("from their own optimisation" if cfg.conditions.mixed_synthetic_source
                          == "own" else "the first images of the synthetic batch") + ").")
    else:
        stimuli.append("No study config given: stimulus parameters are not recorded here.")
    ex = s["exclusions"]
    recruited = ex["n_participants"] + ex.get("n_screened_out", 0)
    per_crit = "; ".join(f"{n}: {c['n_excluded']}" for n, c in ex["criteria"].items()
                         if c["available"] and c["n_excluded"])
    sample = [f"Recruited (with data): {recruited}; screened out by the device check: "
              f"{ex.get('n_screened_out', 0)}; analysed: {ex['n_participants']}; included: "
              f"{ex['n_included']}; excluded: {ex['n_excluded']}"
              + (f" ({per_crit}; a participant can fail several criteria)" if per_crit else "")
              + "."]
    fast = s.get("fast_answers") or {}
    if fast.get("available"):
        sample.append(f"Answers faster than {fast['min_rt_ms']:g} ms: {fast['n_fast']} of "
                      f"{fast['n_answers']} main + catch answers.")
    excl = [f"{n}: {c['rule']}" + ("" if c["available"] else " (not available: "
                                    + c.get("reason", "") + ")")
            for n, c in ex["criteria"].items()]
    stats_ = ["Accuracy per condition: pooled proportion correct on main trials of the "
              "included participants, with a 95 % expanded-percentile bootstrap interval "
              f"({d.get('bootstrap', 'participants resampled')}; the plain percentile "
              "interval is too narrow with few participants); ±2 SEM over participants for "
              "comparison with the papers.",
              f"Contrasts: {d.get('test', 'permutation test')}, Holm-corrected over all "
              "contrasts; a mixed-effects logistic regression (random intercepts for "
              "participant and unit) as a second test, because the trial-level answers are "
              "nested in participants and units.",
              "An interval is only printed when it exists: with one participant, or when "
              "every participant has the same value, the report says so instead of printing "
              "a zero-width interval."]
    return {"design": design, "stimuli": stimuli, "sample": sample, "exclusions": excl,
            "statistics": stats_}


_TASKS = {"causal_occlusion": "causal occlusion (which of two occluded query images "
          "activates the unit less)", "two_afc": "2-AFC (which of two query images "
          "activates the unit more)"}
_DESIGNS = {designs.BETWEEN: "each participant saw one condition (between participants)",
            designs.WITHIN: "each participant saw every condition (within participants)"}
_CATCH = {"largest_rel_diff": "the trials with the largest activation difference",
          "query_in_references": "the query is one of the references"}
_FILLS = {"mean": "the patch's own mean colour", "grey": "grey",
          "blur": "a blurred copy of the image", "noise": "noise"}


def _span(counts: pd.Series) -> str:
    lo, hi = int(counts.min()), int(counts.max())
    return str(lo) if lo == hi else f"{lo}–{hi}"


# -- report files ---------------------------------------------------------------------------

def make_figures(summary: dict[str, Any], folder: Path) -> dict[str, Path]:
    """Draw every figure the summary has data for; returns name -> PNG path."""
    conds = summary.get("conditions") or summary["conditions_without_exclusion"]
    base = (summary.get("design") or {}).get("baselines") or ["none"]
    baseline = (conds.get(base[0]) or {}).get("accuracy")
    made: dict[str, Path] = {}
    mark = figures.mark_simulated if summary.get("simulated") else (lambda fig: fig)
    save = figures.save

    def _save(fig: Any, f: Path, name: str) -> dict[str, Path]:
        return save(mark(fig), f, name)

    made["accuracy"] = _save(
        figures.accuracy_by_condition(conds, summary.get("observers"), base[0]), folder,
        "accuracy")["png"]
    if summary.get("by_layer"):
        fig = figures.accuracy_by_group(summary["by_layer"], "layer", baseline,
                                        "Accuracy per layer")
        made["layer"] = _save(fig, folder, "layer")["png"]
    if summary.get("by_confidence"):
        fig = figures.accuracy_by_group(summary["by_confidence"], "confidence", baseline,
                                        "Accuracy by confidence")
        made["confidence"] = _save(fig, folder, "confidence")["png"]
    if summary.get("kappa", {}).get("available") and not _kappa_as_table(summary["kappa"]):
        made["kappa"] = _save(figures.kappa_heatmap(summary["kappa"]), folder,
                                     "kappa")["png"]
    if summary.get("models", {}).get("available"):
        made["models"] = _save(figures.model_scores(summary["models"]), folder,
                                      "models")["png"]
    if summary.get("difficulty", {}).get("available"):
        made["difficulty"] = _save(
            figures.difficulty_plot(summary["difficulty"], baseline), folder, "difficulty")["png"]
    return made


def _kappa_as_table(kappa: dict[str, Any]) -> bool:
    """Few observer pairs: a table reads better than a mostly empty heatmap."""
    return "kappa" in kappa and len(figures.kappa_pairs(kappa)) <= figures.FEW_KAPPA_PAIRS


def write_report(summary: dict[str, Any], out: str | Path) -> Path:
    """Write summary.json, figures and index.html into ``out``; returns index.html."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_summary(out, summary)
    pngs = make_figures(summary, out / "figures")
    page = render_html(summary, {k: _embed(p) for k, p in pngs.items()})
    (out / REPORT_PAGE_FILE).write_text(page, encoding="utf-8")
    return out / REPORT_PAGE_FILE


def _embed(png: Path) -> tuple[str, int]:
    """Base64 of a figure and its display width in CSS px (figures are drawn at 200 dpi,
    shown at 100 px per inch, so they stay sharp on high-density screens)."""
    from PIL import Image

    with Image.open(png) as im:
        width = im.width // 2
    return base64.b64encode(png.read_bytes()).decode(), width


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def _num(v: Any, fmt: str = ".3g") -> str:
    return "–" if v is None else format(v, fmt)


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _conditions_table(conds: dict[str, Any]) -> str:
    rows = [[n, _pct(c["accuracy"]),
             interval_text(c["ci_low"], c["ci_high"], c["n_participants"]),
             "±" + _pct(c.get("sem2")) if c["n_participants"] >= 2 and c.get("sem2") else "–",
             c.get("ci_method", ""), c["n_participants"], c["n_trials"]]
            for n, c in conds.items()]
    return _table(["condition", "accuracy %", "95 % CI %", "±2 SEM %", "CI over",
                   "participants", "trials"], rows)


def _img(b64: dict[str, tuple[str, int]], name: str, alt: str) -> str:
    if name not in b64:
        return ""
    data, width = b64[name]
    return (f'<figure><img alt="{html.escape(alt)}" width="{width}" '
            f'src="data:image/png;base64,{data}"></figure>')


def render_html(s: dict[str, Any], b64: dict[str, tuple[str, int]]) -> str:
    """One self-contained page: figures inline as base64, no external resources."""
    ex = s["exclusions"]
    parts = [f"<h1>causalvis analysis</h1><p class=meta>source: {html.escape(s.get('source', ''))}"
             f" · {s['data']['n_participants']} participants, {s['data']['n_rows']} response rows"
             f" · causalvis {html.escape(str(s.get('causalvis_version')))}</p>"]
    if s.get("simulated"):
        parts.append("<p class=sim>SIMULATED DATA: these responses come from simulated "
                     "participants, not people. Every figure is labelled so.</p>")
    parts.append(_methods_html(s.get("methods")))
    if s.get("note"):
        parts.append(f"<p class=warn>{html.escape(s['note'])}</p>")
    parts.append("<h2>Accuracy per condition</h2><p>Proportion of correct answers on main "
                 "trials (catch, practice and other trial kinds excluded), pooled over "
                 "included participants. The 95 % interval is a bootstrap over participants "
                 "(or over participants and units, crossed, when participants saw different "
                 "units), widened for small samples (expanded percentile). ±2 SEM over "
                 "per-participant accuracies is shown for comparison with the papers (thin "
                 "error bars). Dotted line: chance (50 %); dashed: the no-reference baseline."
                 "</p>")
    parts.append(_img(b64, "accuracy", "accuracy per condition"))
    if s.get("conditions"):
        parts.append("<h3>Included participants</h3>" + _conditions_table(s["conditions"]))
    parts.append("<h3>All participants (no exclusion)</h3>"
                 + _conditions_table(s["conditions_without_exclusion"]))
    parts.append("<h2>Exclusions</h2><p>A participant failing any criterion is excluded; a "
                 "participant can fail several, so the counts need not add up. Criteria whose "
                 "data are missing are marked not available (not passed).</p>")
    rows = [[name, c["rule"], c["n_excluded"] if c["available"] else "not available: "
             + c.get("reason", ""), c.get("n_flagged", 0) - c.get("n_excluded", 0)
             if c["available"] and "n_flagged" in c else ""]
            for name, c in ex["criteria"].items()]
    parts.append(_table(["criterion", "rule", "excluded", "flagged, not excluded"], rows))
    screened = ex.get("n_screened_out", 0)
    parts.append(f"<p>{ex['n_excluded']} of {ex['n_participants']} participants excluded, "
                 f"{ex['n_included']} included"
                 + (f"; {screened} screened out by the device check (not in the sample)"
                    if screened else "") + ".</p>")
    parts.append(_fast_html(s.get("fast_answers")))
    parts.append(_design_html(s.get("design"), s.get("input")))
    if s.get("contrasts"):
        refs = [*s["design"]["baselines"], *([s["design"]["reference"]]
                                             if s["design"]["reference"] else [])]
        names = ", ".join(f"<code>{html.escape(r)}</code>" for r in refs)
        parts.append(f"<h2>Contrasts</h2><p>Each condition against {names}. Difference of "
                     "pooled accuracies with a bootstrap CI; p-values from a permutation test "
                     "that matches the design (a paired sign-flip test over participants when "
                     "the same participants saw both conditions; condition labels shuffled "
                     "between participants when each saw one) and from a mixed-effects "
                     "logistic regression (random effects for participant and unit as the design "
                     "needs: condition slopes where conditions vary within them), each "
                     "Holm-corrected over all contrasts. The verdict uses the Holm-corrected "
                     "permutation test.</p>")
        rows = [[f"{c['condition']} − {c['reference']}", f"{100 * c['difference']:+.1f}",
                 interval_text(c["ci_low"], c["ci_high"], None), c.get("test", ""),
                 _num(c["p_permutation"]), _num(c["p_permutation_holm"]), _num(c.get("p_glmm")),
                 _num(c.get("p_glmm_holm"))] for c in s["contrasts"]]
        parts.append(_table(["contrast", "diff (pp)", "95 % CI (pp)", "test", "p perm",
                             "p perm Holm", "p GLMM", "p GLMM Holm"], rows))
        parts.append("<ul>" + "".join(f"<li>{html.escape(c['statement'])}</li>"
                                      for c in s["contrasts"]) + "</ul>")
        mm = s.get("mixed_model")
        if mm:
            if mm.get("fitted"):
                sd = ", ".join(f"{k} {v:.2f}" for k, v in mm["sd_random"].items())
                state = "converged" if mm["converged"] else "DID NOT CONVERGE"
                structure = "; ".join(f"{k}: {v}" for k, v in
                                      (mm.get("random_effects") or {}).items())
                parts.append(f"<p class=small>Mixed model <code>{html.escape(mm['model'])}"
                             f"</code> ({html.escape(mm['method'])}): {state}; random effects "
                             f"used: {html.escape(structure)}; random-effect SDs (logit): "
                             f"{sd}. {html.escape(mm.get('message', ''))}</p>")
            else:
                parts.append(f"<p class=warn>Mixed model not fitted: "
                             f"{html.escape(mm.get('message', ''))}</p>")
    parts.append(_by_html(s.get("by")))
    parts.append(_models_html(s.get("models"), b64))
    if "layer" in b64:
        parts.append("<h2>Per layer</h2><p>Accuracy per layer of the unit, per condition "
                     "(bootstrap over participants).</p>" + _img(b64, "layer", "per layer"))
    if "confidence" in b64:
        parts.append("<h2>Confidence</h2><p>Accuracy at each confidence level (1 = low). "
                     "Calibrated observers are more accurate when more confident.</p>"
                     + _img(b64, "confidence", "by confidence"))
    if s.get("rt"):
        rows = [[c, _num(r["mean_participant_median_ms"], ".0f"),
                 interval_text(r["ci_low"], r["ci_high"], r.get("n_participants"),
                               lambda v: _num(v, ".0f")),
                 _num(r["median_correct_ms"], ".0f"), _num(r["median_wrong_ms"], ".0f")]
                for c, r in s["rt"].items()]
        parts.append("<h2>Reaction times</h2><p>Mean over participants of each participant's "
                     "median RT (ms), with a bootstrap CI.</p>"
                     + _table(["condition", "RT ms", "95 % CI", "median correct",
                               "median wrong"], rows))
    k = s.get("kappa", {})
    parts.append("<h2>Error consistency</h2>")
    if k.get("available"):
        parts.append(f"<p>Cohen's κ between the correctness of two observers on the trials both "
                     f"saw (matched on <code>{html.escape(k['matched_on'])}</code>, at least "
                     f"{k['min_common_trials']} shared trials): 0 = errors no more aligned "
                     f"than the accuracies predict, 1 = identical errors. Machine observers "
                     f"appear as <code>machine:NAME</code>.</p>" + (
                         _kappa_table(k) if _kappa_as_table(k) else _img(b64, "kappa", "kappa")))
    else:
        parts.append(f"<p>Not available: {html.escape(k.get('reason', ''))}.</p>")
    d = s.get("difficulty", {})
    parts.append("<h2>Difficulty</h2>")
    if d.get("available"):
        rho = "; ".join(f"{c}: ρ = {_num(v['rho'], '.2f')} (p = {_num(v['p'])}, "
                        f"{v['n_items']} trials)" for c, v in d["spearman"].items())
        parts.append("<p>Accuracy against the relative activation difference between the two "
                     "options (quantile bins; larger = easier in principle). Spearman ρ "
                     f"between a trial's difference and its accuracy: {html.escape(rho)}.</p>"
                     + _img(b64, "difficulty", "difficulty"))
    else:
        parts.append(f"<p>Not available: {html.escape(d.get('reason', ''))}.</p>")
    if s.get("observers"):
        rows = [[name, c, _pct(v.get("accuracy")),
                 interval_text(v.get("ci_low"), v.get("ci_high"), None), v.get("n_trials", "")]
                for name, o in s["observers"].items() for c, v in o["conditions"].items()]
        p = s.get("observers_perceptual") or {}
        sim = (f" Perceptual similarity of the reference observers and MIS: "
               f"<b>{html.escape(str(p.get('similarity', 'model features')))}</b> "
               f"(<code>{html.escape(str(p.get('model')))}</code>; "
               f"{html.escape(str(p.get('features', '')))}).") if p else ""
        parts.append("<h2>Machine observers</h2><p>From <code>report/observers.json</code>."
                     f"{sim}</p>"
                     + _table(["observer", "condition", "accuracy %", "95 % CI %", "trials"],
                              rows))
    style = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 "
             "1rem;color:#222;line-height:1.45}table{border-collapse:collapse;margin:.5rem 0 1rem;"
             "font-size:.9rem}td,th{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:"
             "right}td:first-child,th:first-child{text-align:left}figure{margin:.5rem 0}img{"
             "max-width:100%;height:auto}.meta,.small{color:#666;font-size:.85rem}.warn{color:"
             "#a40}code{background:#f3f3f3;padding:0 .2rem}.sim{background:#fde8e8;color:#a11;"
             "font-weight:700;font-size:1.1rem;padding:.6rem .8rem;border:2px solid #d62728;"
             "border-radius:6px}")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>causalvis analysis"
            f"</title><style>{style}</style></head><body>" + "\n".join(parts) + "</body></html>")


def _methods_html(m: dict[str, list[str]] | None) -> str:
    if not m:
        return ""
    out = ["<h2>Methods</h2>"]
    for head, lines in m.items():
        out.append(f"<h3>{html.escape(head.capitalize())}</h3><ul>"
                   + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul>")
    return "\n".join(out)


def _fast_html(f: dict[str, Any] | None) -> str:
    """Fast answers per condition (the ``fast_answers`` criterion's rule)."""
    if not f:
        return ""
    if not f.get("available"):
        return f"<h3>Fast answers</h3><p>Not available: {html.escape(f.get('reason', ''))}.</p>"
    rule = ("flagged only, never excluded" if f["max_fast_fraction"] >= 1.0
            else f"excluded when more than {f['max_fast_fraction']:.3g} of a participant's "
            "answers are this fast")
    rows = [[c, v["n_fast"], v["n_answers"], f"{v['n_participants_fast']} of {v['n_participants']}"]
            for c, v in f["by_condition"].items()]
    return (f"<h3>Fast answers</h3><p>Main + catch answers faster than {f['min_rt_ms']:g} ms "
            f"(<code>[exclusion] min_rt_ms</code>; {rule}), all participants.</p>"
            + _table(["condition", "fast answers", "answers", "participants with any"], rows))


def _kappa_table(k: dict[str, Any]) -> str:
    rows = [[a, b, f"{v:.2f}", n] for a, b, v, n in figures.kappa_pairs(k)]
    return _table(["observer", "observer", "κ", "shared trials"], rows)


def _by_html(by: dict[str, Any] | None) -> str:
    """``--by COLUMN``: each level's design, accuracies and contrasts."""
    if not by:
        return ""
    col = html.escape(str(by["column"]))
    out = [f"<h2>Per <code>{col}</code></h2><p>Each level of <code>{col}</code> analysed on "
           "its own trials (its own design, test and Holm family); exclusions are those "
           "of the whole data set.</p>"]
    for level, sec in by["levels"].items():
        out.append(f"<h3>{col} = {html.escape(level)} ({html.escape(sec['design']['design'])}"
                   f"-subject)</h3>" + _conditions_table(sec["conditions"]))
        out.append("<ul>" + "".join(f"<li>{html.escape(c['statement'])}</li>"
                                    for c in sec["contrasts"]) + "</ul>")
    return "\n".join(out)


def _design_html(d: dict[str, Any] | None, loaded: dict[str, Any] | None) -> str:
    """What the data were read as: the design found, the test used, the column mapping."""
    if not d:
        return ""
    per = d["conditions_per_participant"]
    out = [f"<h2>Design</h2><p>Design found: <b>{html.escape(d['design'])}-subject</b> "
           f"({d['n_conditions']} conditions; each participant saw {per['min']}–{per['max']} "
           f"of them). Test: {html.escape(d['test'])}. Bootstrap: "
           f"{html.escape(d['bootstrap'])}. Baseline(s): "
           f"{html.escape(', '.join(d['baselines']) or 'none found')}; reference: "
           f"{html.escape(d['reference'] or 'none')}.</p>"]
    if loaded:
        rows = [[f, m["column"], m["how"]] for f, m in loaded["mapping"].items()]
        rows += [[f, "", "dropped (--map FIELD=)"] for f in loaded["dropped"]]
        out.append("<p class=small>Columns read (mapped: --map; auto: a same-named column; "
                   f"RT unit of the file: {html.escape(loaded['rt_unit'])}):</p>"
                   + _table(["field", "column", "how"], rows))
        out += [f"<p class=warn>{html.escape(w)}</p>" for w in loaded["warnings"]]
    return "\n".join(out)


def _models_html(m: dict[str, Any] | None, b64: dict[str, tuple[str, int]]) -> str:
    """"Is a bigger model more interpretable?": scores with CIs, tests, the verdict."""
    if not m:
        return ""
    out = ["<h2>Models: is a bigger model more interpretable?</h2>"]
    if m.get("dictionary"):  # neurons vs dictionary features of the same layer
        d = m["dictionary"]
        out = [f"<h2>Neurons vs dictionary features: {html.escape(d['question'])}</h2>"]
        answers = "; ".join(f"{html.escape(c)}: <b>{html.escape(a)}</b>"
                            for c, a in d["answers"].items())
        out.append(f"<p>Neurons: {html.escape(d['neurons'])}; features: "
                   f"{html.escape(d['features'])}. Answer per condition: {answers}.</p>")
    if not m.get("available"):
        return out[0] + f"<p>Not available: {html.escape(str(m.get('reason', '')))}.</p>"
    rpu = m["responses_per_unit"]
    order = ("listed from smallest to largest" if m["order_is_size"]
             else "size order unknown: no scaling claim is made")
    out.append(f"<p>The unit of analysis is the unit (feature map), as in Zimmermann, Klein "
               f"&amp; Brendel 2023: a unit's accuracy is the mean over its included main-trial "
               f"responses ({rpu['min']}–{rpu['max']}, median {rpu['median']:g} per unit); a "
               f"model's score is the mean over its units, with a 95 % percentile bootstrap "
               f"interval over units ({m['settings']['n_boot']} replicates). Models are "
               f"compared per condition with a Kruskal–Wallis test over unit accuracies and "
               f"Conover's pairwise test, Holm-corrected. {m['n_models']} models "
               f"({html.escape(order)}), {m['n_units']} units.</p>")
    out.append(_img(b64, "models", "model scores"))
    label = m.get("labels", {})
    rows = [[cond, label.get(r["model"], r["model"]), _pct(r["score"]), f"{_pct(r['ci_low'])} – {_pct(r['ci_high'])}",
             r["n_units"], r["n_responses"], r["n_participants"]]
            for cond, c in m["by_condition"].items() for r in c["scores"]]
    out.append(_table(["condition", "model", "score %", "95 % CI %", "units", "responses",
                       "participants"], rows))
    for cond, c in m["by_condition"].items():
        comp = c["comparison"]
        if comp.get("available") and comp["pairs"]:
            prow = [[f"{label.get(p['a'], p['a'])} – {label.get(p['b'], p['b'])}", _num(p["p_raw"]), _num(p["p_holm"]),
                     "yes" if p["significant"] else "no"] for p in comp["pairs"]]
            out.append(f"<h3>{html.escape(cond)}</h3>"
                       + _table(["pair", "p Conover", "p Holm", "significant"], prow))
        out.append(f"<p>{html.escape(c['statement'])}</p>")
    return "\n".join(out)


# -- entry points ---------------------------------------------------------------------------

def analyze_study(study: str | Path | StudyInputs, *, db_url: str | None = None,
                  out: str | Path | None = None, exclusion: ExclusionConfig | None = None,
                  options: AnalysisOptions | None = None,
                  source: str | None = None,
                  simulated: bool | None = None) -> tuple[dict[str, Any], Path]:
    """Analyse a study's responses (exclusion config: given, else the study's); write
    STUDY/report/. ``source`` describes the responses in the report (default: the study).
    ``simulated`` labels every figure; None: when ``source`` says ``SIMULATED``."""
    inputs = StudyInputs.read(study)
    df = load_study(inputs, db_url)
    cfg = exclusion if exclusion is not None else resolve_exclusion(inputs.config)
    root = inputs.paths.root
    if simulated is None:
        simulated = "SIMULATED" in (source or "")
    return _finish(df, inputs, out or inputs.paths.report, cfg, options, source or str(root),
                   simulated=simulated)


def analyze_csv(path: str | Path, mapping: dict[str, str], *, out: str | Path,
                exclusion: ExclusionConfig | None = None,
                study: str | Path | StudyInputs | None = None,
                options: AnalysisOptions | None = None,
                fmt: str = "csv", auto: bool = True, rt_unit: str = "ms",
                where: str | None = None, by: str | None = None) -> tuple[dict[str, Any], Path]:
    """Analyse any trial-level CSV; ``study`` (optional) adds its trials.csv and observers.

    ``fmt="imi"`` reads the IMI dataset's layout (:mod:`causalvis.analysis.imi`; ``mapping``
    then overrides its roles): a 2-AFC, multi-model table, with IMI's exclusion thresholds
    when no ``exclusion`` is given and models in the paper's order. ``auto``, ``rt_unit``,
    ``where``, ``by``: see :func:`causalvis.analysis.load.load_csv` (csv layout only;
    ``options.by`` names the ``by`` column in the report)."""
    from causalvis.analysis.load import load_csv

    task = None
    if fmt == "imi":
        from causalvis.analysis.imi import load_imi_csv, model_order

        df = load_imi_csv(path, mapping)
        task = "two_afc"
        opt = options or AnalysisOptions()
        df = select_difficulty(df, opt.difficulty)
        if not opt.model_order and "model" in df.columns:
            opt = replace(opt, model_order=tuple(model_order(df["model"].dropna().unique())),
                          model_order_is_size=True)
        options = opt
    elif fmt == "csv":
        df = load_csv(path, mapping, auto=auto, rt_unit=rt_unit, where=where, by=by)
    else:
        raise CausalvisError(f"--format: unknown format {fmt!r} (csv | imi)")
    if exclusion is None:
        exclusion = resolve_exclusion(None, fmt=fmt)
    inputs = StudyInputs.read(study) if study is not None else None
    if inputs is not None and inputs.trials is not None:
        df = join_trials(df, inputs.trials)
    return _finish(df, inputs, out, exclusion, options, str(path), task=task)


def select_difficulty(df: pd.DataFrame, wanted: str | None) -> pd.DataFrame:
    """The rows of one difficulty level; which one and which were left out go into
    ``df.attrs["difficulty"]`` (the report says so). No difficulty column: unchanged."""
    if "difficulty" not in df.columns or df["difficulty"].isna().all():
        if wanted:
            raise CausalvisError("--difficulty: the responses have no difficulty levels")
        return df
    levels = sorted(df["difficulty"].dropna().unique().tolist())
    chosen = wanted or ("easy" if "easy" in levels or len(levels) != 1 else levels[0])
    if chosen not in levels:
        raise CausalvisError(f"--difficulty: {chosen!r} is not in the data "
                             f"(levels: {', '.join(levels)})")
    attrs = dict(df.attrs)
    out = df[df["difficulty"] == chosen].reset_index(drop=True)
    out.attrs = {**attrs, "difficulty": {
        "analysed": chosen, "levels": levels,
        "rows_left_out": int(len(df) - len(out)),
        "note": "one difficulty per analysis: harder query windows were separate "
                "experiments (analyse them with --difficulty NAME)"}}
    return out


def _finish(df: pd.DataFrame, inputs: StudyInputs | None, out: str | Path,
            cfg: ExclusionConfig | None, options: AnalysisOptions | None, source: str,
            task: str | None = None, simulated: bool = False) -> tuple[dict[str, Any], Path]:
    observers = observer_trials = trials = None
    options = options or AnalysisOptions()
    study_cfg = inputs.config if inputs is not None else None
    if study_cfg is not None:
        task = task or study_cfg.task
        if study_cfg.models and not options.model_order:
            # The study lists its models from smallest to largest (docs/analysis.md).
            options = replace(options, model_order=tuple(study_cfg.models),
                              model_order_is_size=True)
    if inputs is not None:
        observers = read_observers_report(inputs.paths)
        observer_trials = read_observer_trials(inputs.paths)
        trials = inputs.trials
    summary = analyze_frame(df, exclusion=cfg, observers=observers,
                            observer_trials=observer_trials, trials=trials, options=options,
                            source=source, task=task, config=study_cfg, simulated=simulated)
    return summary, write_report(summary, out)
