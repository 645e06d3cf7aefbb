"""The study bundle as the server sees it: session plan + private trial table, loaded once.

The server keeps the ground truth (``trials.csv``) in memory and only ever sends asset
URLs to the browser; nothing here is served as a file. The files are parsed by their one
reader each (``store.trials``, ``store.sessions``); this module adds the cross-checks only
the server needs: every listed trial exists, and every asset it will serve is on disk,
and reads the participant texts the study names (``texts.consent_file``) once at start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from causalvis.config import TASKS, StudyConfig
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths
from causalvis.store.sessions import SessionEntry, read_sessions
from causalvis.store.trials import read_trials, split_assets


@dataclass(frozen=True)
class Trial:
    trial_id: str
    base_trial_id: str
    kind: str
    condition: str
    unit: str
    layer: str
    channel: int | None
    image_set: int | None
    query: str | None  # None in the 2-AFC task: the two options are the queries
    option_a: str
    option_b: str
    references: tuple[str, ...]  # 2-AFC: the maximally activating references
    correct: str
    min_references: tuple[str, ...] = ()  # 2-AFC only: the minimally activating references
    model: str = ""  # multi-model studies: which model the unit belongs to


@dataclass
class StudyBundle:
    root: Path
    name: str
    config: StudyConfig
    conditions: list[str]
    sessions: dict[str, SessionEntry]
    trials: dict[str, Trial]
    examples: dict[str, str] = field(default_factory=dict)
    task: str = "causal_occlusion"
    table: pd.DataFrame = field(default_factory=pd.DataFrame)  # trials.csv, typed
    # How many practice trials each participant is given, and how many of them obvious
    # (``SessionPlan.practice_draw``); None: every practice trial of the session, none obvious.
    practice_draw: dict[str, int] | None = None
    # ``texts.consent_file`` split into paragraphs; None: the front end's default text.
    consent_paragraphs: tuple[str, ...] | None = None

    @property
    def assets_dir(self) -> Path:
        return StudyPaths(self.root).assets


def _asset_name(value: str, where: str) -> str:
    """``assets/3f2a.png`` -> ``3f2a.png``; anything outside ``assets/`` is a bundle error."""
    value = value.strip()
    if not value.startswith("assets/") or "/" in value[len("assets/") :] or ".." in value:
        raise CausalvisError(f"{where}: asset path {value!r} must look like assets/NAME")
    return value[len("assets/") :]


def _opt_int(value: object) -> int | None:
    return None if pd.isna(value) else int(value)


def _trials(table: pd.DataFrame, path: Path, assets: Path, task: str) -> dict[str, Trial]:
    """``task`` two_afc: the query is optional (empty) and every trial needs minimal and
    maximal references."""
    two_afc = task == "two_afc"
    trials: dict[str, Trial] = {}
    for i, row in enumerate(table.to_dict("records"), start=2):
        where = f"{path}:{i}"
        refs = tuple(_asset_name(r, where) for r in split_assets(row["reference_assets"]))
        min_refs = tuple(_asset_name(r, where) for r in split_assets(row["min_reference_assets"]))
        query_cell = row["query_asset"]
        query = _asset_name(query_cell, where) if query_cell or not two_afc else None
        if two_afc and not (refs and min_refs):
            side = "min_reference_assets" if refs else "reference_assets"
            raise CausalvisError(
                f"{where}: a two_afc trial needs minimal and maximal references; {side} is empty"
            )
        trial = Trial(
            trial_id=row["trial_id"],
            base_trial_id=row["base_trial_id"] or row["trial_id"],
            kind=row["kind"],
            condition=row["condition"],
            unit=row["unit"],
            layer=row["layer"],
            channel=_opt_int(row["channel"]),
            image_set=_opt_int(row["image_set"]),
            query=query,
            option_a=_asset_name(row["option_a_asset"], where),
            option_b=_asset_name(row["option_b_asset"], where),
            references=refs,
            correct=row["correct"],
            min_references=min_refs,
            model=row["model"],
        )
        for name in (trial.query, trial.option_a, trial.option_b, *refs, *min_refs):
            if name is not None and not (assets / name).is_file():
                raise CausalvisError(f"{where}: asset {assets / name} is missing")
        trials[trial.trial_id] = trial
    return trials


def consent_paragraphs(config: StudyConfig, root: Path) -> tuple[str, ...] | None:
    """The consent body of ``texts.consent_file`` (relative to the study folder), split at
    blank lines; None when none is configured. A missing or empty file stops the server at
    start (a participant must never see a half-configured consent page)."""
    name = config.texts.consent_file.strip()
    if not name:
        return None
    path = (root / name).resolve()
    if not path.is_file():
        raise CausalvisError(f"texts.consent_file: {path} does not exist (study.toml names it)")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CausalvisError(f"texts.consent_file: cannot read {path} ({exc})") from exc
    paragraphs = tuple(" ".join(block.split()) for block in re.split(r"\n\s*\n", text)
                       if block.strip())  # fmt: skip
    if not paragraphs:
        raise CausalvisError(f"texts.consent_file: {path} is empty")
    return paragraphs


def load_bundle(study_dir: str | Path) -> StudyBundle:
    """Read and cross-check ``sessions.json`` and ``trials.csv`` of a built study."""
    paths = StudyPaths(Path(study_dir))
    if not paths.root.is_dir():
        raise CausalvisError(f"study folder {paths.root} does not exist")
    config = StudyConfig.load(paths.config) if paths.config.is_file() else StudyConfig()
    plan = read_sessions(paths.sessions)
    task = plan.task or config.task
    if task not in TASKS:
        raise CausalvisError(f"{paths.sessions}: task {task!r} is not one of {', '.join(TASKS)}")
    table = read_trials(paths.trials)
    trials = _trials(table, paths.trials, paths.assets, task)
    sessions: dict[str, SessionEntry] = {}
    for i, sess in enumerate(plan.sessions):
        where = f"{paths.sessions}: sessions[{i}]"
        for tid in sess.trials + sess.practice:
            if tid not in trials:
                raise CausalvisError(f"{where}: trial {tid!r} is not in {paths.trials}")
        for tid in sess.practice:
            if trials[tid].kind != "practice":
                raise CausalvisError(f"{where}: practice trial {tid!r} has kind {trials[tid].kind}")
        for tid in sess.trials:
            if trials[tid].kind in ("practice", "example"):
                raise CausalvisError(
                    f"{where}: {trials[tid].kind} trial {tid!r} listed among trials")
        for name, attr in (("reference_order", "references"),
                           ("min_reference_order", "min_references")):
            for tid, order in getattr(sess, name, {}).items():
                if len(order) != len(getattr(trials[tid], attr)):
                    raise CausalvisError(f"{where}: {name}[{tid!r}] orders {len(order)} "
                                         f"images, the trial has {len(getattr(trials[tid], attr))}")
        for tid in getattr(sess, "practice_obvious", ()):
            if tid not in sess.practice:
                raise CausalvisError(f"{where}: practice_obvious trial {tid!r} not in practice")
        sessions[sess.session_id] = sess
    for cond, tid in plan.instructions_example.items():
        if tid not in trials:
            raise CausalvisError(f"{paths.sessions}: instructions_example[{cond}] {tid!r} unknown")
    draw = getattr(plan, "practice_draw", None) or None
    conditions = list(plan.conditions or sorted({s.condition for s in sessions.values()}))
    return StudyBundle(
        root=paths.root,
        name=plan.study or config.name,
        config=config,
        conditions=conditions,
        sessions=sessions,
        trials=trials,
        examples=dict(plan.instructions_example),
        task=task,
        table=table,
        practice_draw=dict(draw) if draw else None,
        consent_paragraphs=consent_paragraphs(config, paths.root),
    )
