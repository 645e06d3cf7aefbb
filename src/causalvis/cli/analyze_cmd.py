"""``causalvis analyze``: exclusions, accuracy with CIs, contrasts, κ, report."""

from __future__ import annotations

from pathlib import Path

import typer

from causalvis.cli.app import app, fail


@app.command("analyze")
def analyze_command(
    study: Path | None = typer.Argument(
        None, help="study folder (its database, trials.csv, observers.json, exclusion config)"
    ),
    db: str | None = typer.Option(None, "--db", help="database URL (default: STUDY's sqlite)"),
    responses_csv: Path | None = typer.Option(
        None, "--responses-csv", help="trial-level CSV to analyse instead of the database"
    ),
    mapping: str | None = typer.Option(
        None, "--map", help="FIELD=COLUMN,... (canonical field -> CSV column; FIELD= drops "
        "a field; with --format imi: IMI role -> column)"
    ),
    show_mapping: bool = typer.Option(False, "--show-mapping", help="print which column "
                                      "each field was read from (mapped / auto-detected)"),
    no_auto_map: bool = typer.Option(False, "--no-auto-map", help="read only --map'ped "
                                     "fields, never same-named columns"),
    rt_unit: str | None = typer.Option(None, "--rt-unit", help="unit of the CSV's rt: ms "
                                       "(default) | s"),
    where: str | None = typer.Option(None, "--where", help="pandas query over the CSV's "
                                     "columns, e.g. \"n_refs == 1 and pool == 'max'\""),
    by: str | None = typer.Option(None, "--by", help="CSV column: also analyse each of its "
                                  "levels on its own (own design and contrasts)"),
    conditions: str | None = typer.Option(
        None, "--conditions", help="OLD=NEW,... relabel conditions (several OLD may share a "
        "NEW); the order given is the display order"),
    baseline: str | None = typer.Option(None, "--baseline", help="baseline condition(s), "
                                        "comma-separated (default: none, else none_*)"),
    reference: str | None = typer.Option(None, "--reference", help="reference condition of "
                                         "the contrasts (default: natural)"),
    fmt: str | None = typer.Option(
        None, "--format", help="layout of --responses-csv: csv (canonical columns; the "
        "default) | imi (the IMI dataset's released responses)"
    ),
    profile: str | None = typer.Option(
        None, "--profile", help="dataset profile: a shipped NAME (causalvis, imi) or a "
        "FILE.toml holding the options below (given options win)"),
    out: Path | None = typer.Option(None, "--out", help="report folder (default STUDY/report "
                                    "or ./report)"),
    n_boot: int = typer.Option(2000, "--n-boot", min=100, help="bootstrap replicates"),
    n_perm: int = typer.Option(5000, "--n-perm", min=100, help="permutations per contrast"),
    seed: int = typer.Option(0, "--seed"),
    ci: str = typer.Option("auto", "--ci", help="auto | participants | crossed"),
    no_mixed_model: bool = typer.Option(False, "--no-mixed-model", help="skip the GLMM"),
    min_catch_accuracy: float | None = typer.Option(None, "--min-catch-accuracy"),
    min_total_time: float | None = typer.Option(None, "--min-total-time", help="seconds"),
    max_total_time: float | None = typer.Option(None, "--max-total-time", help="seconds"),
    min_instruction_time: float | None = typer.Option(None, "--min-instruction-time",
                                                      help="seconds"),
    max_practice_attempts: int | None = typer.Option(None, "--max-practice-attempts"),
    max_same_side_fraction: float | None = typer.Option(
        None, "--max-same-side-fraction", help="1.0 = exclude only all-one-side responders"
    ),
    difficulty: str | None = typer.Option(
        None, "--difficulty", help="--format imi: the difficulty level to analyse (easy, "
        "hard85, hard95, hard99; default easy, IMI's main figure)"),
    min_side_choices: int | None = typer.Option(
        None, "--min-side-choices", min=0, help="exclude if either answer position was "
        "chosen fewer times (IMI's row variability: 5; default off, 5 with --format imi)"
    ),
) -> None:
    """Analyse responses: a study's database, or any CSV with --responses-csv and --map."""
    from causalvis.analysis.design import parse_conditions
    from causalvis.analysis.load import StudyInputs, parse_map
    from causalvis.analysis.report import AnalysisOptions, analyze_csv, analyze_study
    from causalvis.responses.exclusion import resolve_exclusion

    if study is None and responses_csv is None:
        fail("give a STUDY folder or --responses-csv FILE")
    if responses_csv is not None and db is not None:
        fail("--db and --responses-csv are alternatives: give one")
    prof = None
    if profile is not None:
        from causalvis.analysis.profile import load_profile

        prof = load_profile(profile)
    if (mapping or prof is not None) and responses_csv is None:
        fail("--map and --profile apply to --responses-csv only")
    fmt = fmt or (prof.format if prof else None) or "csv"
    if fmt not in ("csv", "imi"):
        fail(f"--format: unknown format {fmt!r} (csv | imi)")
    if fmt != "csv" and responses_csv is None:
        fail("--format applies to --responses-csv only")
    if difficulty is not None and fmt != "imi":
        fail("--difficulty applies to --format imi only")
    if rt_unit not in (None, "ms", "s"):
        fail(f"--rt-unit: unknown unit {rt_unit!r} (ms | s)")
    csv_only = {"--where": where, "--by": by, "--rt-unit": rt_unit,
                "--no-auto-map": no_auto_map or None}
    for flag, value in csv_only.items():
        if value is not None and (responses_csv is None or fmt != "csv"):
            fail(f"{flag} applies to --responses-csv with --format csv only")
    if prof is not None:  # the profile fills what the command line leaves unset
        where = where or prof.where
        by = by or prof.by
        rt_unit = rt_unit or prof.rt_unit
        no_auto_map = no_auto_map or prof.auto_map is False
        reference = reference or prof.reference
        baseline = baseline or ",".join(prof.baselines) or None
        if conditions is None and prof.conditions:
            conditions = ",".join(f"{old}={new}" for old, new in prof.conditions)
    if study is not None and not study.is_dir():
        fail(f"no study folder at {study}")
    # study.toml and trials.csv are parsed here, once, and handed down.
    inputs = StudyInputs.read(study) if study is not None else None
    exclusion = resolve_exclusion(inputs.config if inputs else None, {
        "min_catch_accuracy": min_catch_accuracy, "min_total_time_s": min_total_time,
        "max_total_time_s": max_total_time, "min_instruction_time_s": min_instruction_time,
        "max_practice_attempts": max_practice_attempts,
        "max_same_side_fraction": max_same_side_fraction,
    }, fmt)
    options = AnalysisOptions(n_boot=n_boot, n_perm=n_perm, seed=seed, design=ci,
                              mixed_model=not no_mixed_model,
                              min_side_choices=min_side_choices,
                              conditions=parse_conditions(conditions),
                              baselines=tuple(b.strip() for b in (baseline or "").split(",")
                                              if b.strip()),
                              reference=reference, by=by, difficulty=difficulty)
    if responses_csv is not None:
        if fmt == "imi":
            from causalvis.analysis.imi import IMI_COLUMNS

            fields = tuple(IMI_COLUMNS)
        else:
            from causalvis.analysis.load import CANONICAL as fields
        field_map = dict(prof.mapping) if prof else {}
        unknown = sorted(set(field_map) - set(fields))
        if unknown:
            fail(f"profile {prof.name}: [map] has unknown field(s) {', '.join(unknown)}; "
                 f"known fields: {', '.join(fields)}")
        field_map |= parse_map(mapping, fields=fields)  # the command line wins
        summary, page = analyze_csv(responses_csv, field_map,
                                    out=out or (inputs.paths.report if inputs else Path("report")),
                                    exclusion=exclusion, study=inputs, options=options,
                                    fmt=fmt, auto=not no_auto_map, rt_unit=rt_unit or "ms",
                                    where=where, by=by)
    else:
        assert inputs is not None
        summary, page = analyze_study(inputs, db_url=db, out=out, exclusion=exclusion,
                                      options=options)
    loaded = summary.get("input")
    if prof is not None:
        typer.echo(f"profile: {prof.name}" + (f" ({prof.description})" if prof.description
                                              else ""))
    if show_mapping and loaded:
        for field, m in loaded["mapping"].items():
            typer.echo(f"map: {field:<20} <- {m['column']} ({m['how']})")
        for field in loaded["dropped"]:
            typer.echo(f"map: {field:<20} dropped")
    for warning in (loaded or {}).get("warnings", []):
        typer.echo(f"warning: {warning}")
    ex = summary["exclusions"]
    typer.echo(f"participants: {ex['n_participants']} ({ex['n_excluded']} excluded)")
    d = summary.get("design")
    if d:
        typer.echo(f"design: {d['design']}-subject; test: {d['test']}")
    if summary.get("note"):
        typer.echo(f"note: {summary['note']}")
    for name, c in summary["conditions"].items():
        typer.echo(f"{name:<12} {_pct(c['accuracy'])} %  95% CI [{_pct(c['ci_low'])}, "
                   f"{_pct(c['ci_high'])}]  ±2SEM {_pct(c['sem2'])}  "
                   f"n={c['n_participants']} participants, {c['n_trials']} trials")
    for c in summary["contrasts"]:
        typer.echo(c["statement"])
    for level, sec in (summary.get("by") or {}).get("levels", {}).items():
        typer.echo(f"{summary['by']['column']} = {level} ({sec['design']['design']}-subject):")
        for name, c in sec["conditions"].items():
            typer.echo(f"  {name:<12} {_pct(c['accuracy'])} %  95% CI [{_pct(c['ci_low'])}, "
                       f"{_pct(c['ci_high'])}]  n={c['n_participants']} participants")
        for c in sec["contrasts"]:
            typer.echo(f"  {c['statement']}")
    for cond, c in (summary.get("models") or {}).get("by_condition", {}).items():
        typer.echo(f"models ({cond}): {c['statement']}")
    mm = summary.get("mixed_model")
    if mm and mm.get("fitted"):
        typer.echo(f"mixed model: {mm['model']}")
    if mm and mm.get("fallback"):
        typer.echo(f"note: {mm['fallback']}")
    if mm and not mm.get("converged"):
        typer.echo(f"warning: mixed model did not converge: {mm.get('message', '')}")
    typer.echo(f"report: {page}")


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"
