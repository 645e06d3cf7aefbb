"""The study bundle as the server sees it: session plan + private trial table, loaded once.

The server keeps the ground truth (``trials.csv``) in memory and only ever sends asset
URLs to the browser; nothing here is served as a file.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from causalvis.config import TASKS, StudyConfig
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths

KINDS = ("main", "practice", "catch")


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


@dataclass(frozen=True)
class Session:
    session_id: str
    condition: str
    image_set: int | None
    trials: tuple[str, ...]
    practice: tuple[str, ...]
    planned: int


@dataclass
class StudyBundle:
    root: Path
    name: str
    config: StudyConfig
    conditions: list[str]
    sessions: dict[str, Session]
    trials: dict[str, Trial]
    examples: dict[str, str] = field(default_factory=dict)
    task: str = "causal_occlusion"

    @property
    def assets_dir(self) -> Path:
        return StudyPaths(self.root).assets


def _asset_name(value: str, where: str) -> str:
    """``assets/3f2a.png`` -> ``3f2a.png``; anything outside ``assets/`` is a bundle error."""
    value = value.strip()
    if not value.startswith("assets/") or "/" in value[len("assets/") :] or ".." in value:
        raise CausalvisError(f"{where}: asset path {value!r} must look like assets/NAME")
    return value[len("assets/") :]


def _opt_int(value: str | None) -> int | None:
    value = (value or "").strip()
    return int(float(value)) if value else None


def _refs(value: str | None, where: str) -> tuple[str, ...]:
    return tuple(_asset_name(r, where) for r in (value or "").split())


def _read_trials(path: Path, assets: Path, task: str) -> dict[str, Trial]:
    """``task`` two_afc: the query is optional (empty) and every trial needs minimal and
    maximal references; optional columns (``min_reference_assets``, ``model``) may be absent
    in bundles built before they existed."""
    two_afc = task == "two_afc"
    if not path.is_file():
        raise CausalvisError(f"no trial table at {path} (run `causalvis build` first)")
    trials: dict[str, Trial] = {}
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        need = {
            "trial_id",
            "kind",
            "condition",
            "query_asset",
            "option_a_asset",
            "option_b_asset",
            "reference_assets",
            "correct",
        }
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise CausalvisError(f"{path}: missing columns {', '.join(sorted(missing))}")
        for i, row in enumerate(reader, start=2):
            where = f"{path}:{i}"
            kind = row["kind"].strip()
            if kind not in KINDS:
                raise CausalvisError(f"{where}: kind {kind!r} is not one of {', '.join(KINDS)}")
            correct = row["correct"].strip()
            if correct not in ("a", "b"):
                raise CausalvisError(f"{where}: correct must be a or b, not {correct!r}")
            refs = _refs(row["reference_assets"], where)
            min_refs = _refs(row.get("min_reference_assets"), where)
            query_cell = (row["query_asset"] or "").strip()
            query = _asset_name(query_cell, where) if query_cell or not two_afc else None
            if two_afc and not (refs and min_refs):
                side = "min_reference_assets" if refs else "reference_assets"
                raise CausalvisError(
                    f"{where}: a two_afc trial needs minimal and maximal references; "
                    f"{side} is empty"
                )
            trial = Trial(
                trial_id=row["trial_id"].strip(),
                base_trial_id=(row.get("base_trial_id") or row["trial_id"]).strip(),
                kind=kind,
                condition=row["condition"].strip(),
                unit=(row.get("unit") or "").strip(),
                layer=(row.get("layer") or "").strip(),
                channel=_opt_int(row.get("channel")),
                image_set=_opt_int(row.get("image_set")),
                query=query,
                option_a=_asset_name(row["option_a_asset"], where),
                option_b=_asset_name(row["option_b_asset"], where),
                references=refs,
                correct=correct,
                min_references=min_refs,
                model=(row.get("model") or "").strip(),
            )
            if trial.trial_id in trials:
                raise CausalvisError(f"{where}: duplicate trial_id {trial.trial_id!r}")
            for name in (trial.query, trial.option_a, trial.option_b, *refs, *min_refs):
                if name is not None and not (assets / name).is_file():
                    raise CausalvisError(f"{where}: asset {assets / name} is missing")
            trials[trial.trial_id] = trial
    return trials


def load_bundle(study_dir: str | Path) -> StudyBundle:
    """Read and cross-check ``sessions.json`` and ``trials.csv`` of a built study."""
    paths = StudyPaths(Path(study_dir))
    if not paths.root.is_dir():
        raise CausalvisError(f"study folder {paths.root} does not exist")
    config = StudyConfig.load(paths.config) if paths.config.is_file() else StudyConfig()
    if not paths.sessions.is_file():
        raise CausalvisError(f"no session plan at {paths.sessions} (run `causalvis build` first)")
    try:
        plan = json.loads(paths.sessions.read_text())
    except json.JSONDecodeError as exc:
        raise CausalvisError(f"{paths.sessions}: invalid JSON: {exc}") from exc
    task = str(plan.get("task") or config.task)
    if task not in TASKS:
        raise CausalvisError(f"{paths.sessions}: task {task!r} is not one of {', '.join(TASKS)}")
    trials = _read_trials(paths.trials, paths.assets, task)
    sessions: dict[str, Session] = {}
    for i, raw in enumerate(plan.get("sessions") or []):
        where = f"{paths.sessions}: sessions[{i}]"
        try:
            sess = Session(
                session_id=str(raw["session_id"]),
                condition=str(raw["condition"]),
                image_set=raw.get("image_set"),
                trials=tuple(raw["trials"]),
                practice=tuple(raw.get("practice") or ()),
                planned=int(raw.get("planned_participants", 1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CausalvisError(f"{where}: malformed session ({exc})") from exc
        for tid in sess.trials + sess.practice:
            if tid not in trials:
                raise CausalvisError(f"{where}: trial {tid!r} is not in {paths.trials}")
        for tid in sess.practice:
            if trials[tid].kind != "practice":
                raise CausalvisError(f"{where}: practice trial {tid!r} has kind {trials[tid].kind}")
        for tid in sess.trials:
            if trials[tid].kind == "practice":
                raise CausalvisError(f"{where}: practice trial {tid!r} listed among trials")
        if not sess.trials:
            raise CausalvisError(f"{where}: session has no trials")
        sessions[sess.session_id] = sess
    if not sessions:
        raise CausalvisError(f"{paths.sessions}: the plan has no sessions")
    examples = {str(k): str(v) for k, v in (plan.get("instructions_example") or {}).items()}
    for cond, tid in examples.items():
        if tid not in trials:
            raise CausalvisError(f"{paths.sessions}: instructions_example[{cond}] {tid!r} unknown")
    conditions = list(plan.get("conditions") or sorted({s.condition for s in sessions.values()}))
    return StudyBundle(
        root=paths.root,
        name=str(plan.get("study") or config.name),
        config=config,
        conditions=conditions,
        sessions=sessions,
        trials=trials,
        examples=examples,
        task=task,
    )
