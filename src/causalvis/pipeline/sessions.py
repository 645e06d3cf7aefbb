"""Stage ``sessions``: conditions x image sets x units -> served trials and the bundle.

Reads the condition-free base trials (``stimuli/trials_base.csv``) and the reference
images of every method, and writes

* ``trials.csv`` — one row per served trial (main, catch, practice, the worked example)
  per condition; the two option images of every row have the same byte length,
* ``bundle/assets/`` — every reference image, content-hashed (queries and options are
  there already), ``bundle/sessions.json`` — the balanced session plan,
* ``bundle/manifest.json`` — config hash, software version and file hashes, so a bundle
  can be archived and served elsewhere.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from causalvis import __version__
from causalvis.errors import CausalvisError
from causalvis.pipeline.registry import get_task
from causalvis.stimuli.catch import (
    catch_pool,
    select_catch,
    select_practice_pools,
    unrelated_partner,
    without_example,
)
from causalvis.stimuli.plan import PlannedSession, balanced_labels, plan_sessions, shuffled
from causalvis.store.assets import copy_asset, equal_length_pair, read_asset
from causalvis.store.layout import (
    REFERENCE_META_FILE,
    StudyPaths,
    read_stamp,
    stamp_matches,
    write_stamp,
)
from causalvis.store.seeds import opaque_id, stable_seed
from causalvis.store.sessions import (
    SessionEntry,
    SessionPlan,
    build_manifest,
    write_manifest,
    write_sessions,
)
from causalvis.store.trials import SERVED_COLUMNS, read_trials, write_trials_frame
from causalvis.store.units import Unit, read_units

log = logging.getLogger("causalvis.sessions")


def _base_trials(paths: StudyPaths) -> pd.DataFrame:
    base = read_trials(
        paths.base_trials, missing_hint=f"run `causalvis build {paths.root} --stage trials`"
    )
    if base.empty:
        raise CausalvisError(
            f"{paths.base_trials} holds no trials: every trial was dropped (see the trials log)"
        )
    return base


def _units(paths: StudyPaths) -> tuple[list[str], set[str], set[str]]:
    main = [u.spec for u in read_units(paths, "main")]
    practice = {u.spec for u in read_units(paths, "practice")}
    catch = {u.spec for u in read_units(paths, "catch")}
    return main, practice, catch


@dataclass
class _Source:
    """Where one model's base trials and references live: the study itself, or one
    sub-study of a multi-model study (``ctx`` measures activations with that model)."""

    model: str
    paths: StudyPaths
    config: object
    ctx: object
    tagged: bool  # multi-model: the model enters ids and session entries


def _sources(ctx) -> list[_Source]:
    config = ctx.config
    if not config.models:
        return [_Source(config.model.name, ctx.paths, config, ctx, False)]
    from causalvis.config import StudyConfig
    from causalvis.pipeline.build import StageContext
    from causalvis.pipeline.multimodel import existing_substudies

    out = []
    for model, sub in existing_substudies(ctx.paths, config).items():
        if not sub.config.is_file():
            raise CausalvisError(
                f"{sub.root} is missing: run `causalvis build {ctx.paths.root}` (all stages)"
            )
        sub_cfg = StudyConfig.load(sub.config)
        sub_ctx = StageContext(sub, sub_cfg, progress=ctx.progress, device=ctx.device)
        out.append(_Source(model, sub, sub_cfg, sub_ctx, True))
    return out


# Bump when the rules that turn base trials into sessions change, so that a study built
# by an older version is re-planned on its next build (2: correct labels balanced per session;
# 3: obvious / non-obvious practice pools, a worked example used nowhere else, the two
# options of every trial padded to the same byte length; 4: no practice in `none`, catch
# trials from catch units disjoint from the session's main units, references shown in a
# seeded order per session).
SESSION_RULES_VERSION = 4


def _session_inputs_digest(paths: StudyPaths, config, sources: list[_Source]) -> str:
    h = hashlib.sha256()
    h.update(f"rules={SESSION_RULES_VERSION}".encode())
    h.update(config.digest("conditions", "sessions", "seed", "task", "models").encode())
    for src in sources:
        h.update(src.model.encode())
        h.update(src.paths.base_trials.read_bytes())
        for meta in sorted(src.paths.references.glob(f"*/*/{REFERENCE_META_FILE}")):
            h.update(str(meta.relative_to(src.paths.references)).encode())
            h.update(meta.read_bytes())
    return h.hexdigest()[:16]


class _ReferenceResolver:
    """Reference assets per (condition, unit, image set, side) of one source, copied into
    the served bundle once."""

    def __init__(self, bundle: StudyPaths, src: _Source) -> None:
        from causalvis.pipeline.methods import reference_paths

        self.bundle = bundle
        self.src = src
        self._files = reference_paths
        self._cache: dict[tuple[str, str, int, str], list[str]] = {}

    def __call__(self, condition: str, unit: str, image_set: int, side: str = "max") -> list[str]:
        key = (condition, unit, image_set, side)
        if key not in self._cache:
            ukey = Unit.parse(unit).key
            kwargs = {} if side == "max" else {"side": side}
            files = self._files(
                self.src.paths, self.src.config, condition, ukey, image_set, **kwargs
            )
            self._cache[key] = [copy_asset(self.bundle, f) for f in files]
        return self._cache[key]


def _row(
    src: _Source,
    base: pd.Series,
    kind: str,
    condition: str,
    references: list[str],
    min_references: list[str] = (),
    **override,
) -> dict:
    row = {col: base[col] for col in SERVED_COLUMNS if col in base.index}
    row.update(
        base_trial_id=base["trial_id"],
        kind=kind,
        condition=condition,
        reference_assets=" ".join(references),
        min_reference_assets=" ".join(min_references),
        model=src.model,
    )
    row.update(override)
    return row


_SWAPPED = (("option_a_asset", "option_b_asset"), ("act_a", "act_b"), ("box_a", "box_b"))


def _oriented(row: dict, label: str) -> dict:
    """``row`` with its options labelled so that the correct one is ``label``: assets,
    activations and boxes swap together, so the ground truth stays true."""
    if row["correct"] != label:
        row = dict(row)
        for a, b in _SWAPPED:
            row[a], row[b] = row[b], row[a]
        row["correct"] = label
    return row


def _with_id(src: _Source, row: dict) -> dict:
    """The row's opaque id (it names the option order, so both orders of one base trial
    are distinct served rows)."""
    tag = (src.model,) if src.tagged else ()
    row["trial_id"] = opaque_id(
        "t", row["base_trial_id"], row["condition"], row["kind"], row["option_b_asset"], *tag
    )
    return row


Measure = Callable[[str, int, str], float]  # (layer, channel, served asset) -> activation


def _none_catch(measure: Measure, base: pd.DataFrame, trial: pd.Series) -> dict | None:
    """`none` catch trial: the query's best occlusion vs an occluded unrelated image."""
    partner = unrelated_partner(base, trial)
    if partner is None:
        return None
    good = trial["correct"]
    good_asset, good_act, good_box = (
        trial[f"option_{good}_asset"],
        trial[f"act_{good}"],
        trial[f"box_{good}"],
    )
    bad_asset = (
        partner["option_b_asset"] if partner["correct"] == "a" else partner["option_a_asset"]
    )
    bad_box = partner["box_b"] if partner["correct"] == "a" else partner["box_a"]
    bad_act = measure(trial["layer"], int(trial["channel"]), bad_asset)
    flip = random.Random(stable_seed("none-catch", trial["trial_id"])).random() < 0.5
    a, b = (
        ((bad_asset, bad_act, bad_box), (good_asset, good_act, good_box))
        if flip
        else (
            (good_asset, good_act, good_box),
            (bad_asset, bad_act, bad_box),
        )
    )
    base_act = float(trial["act_base"])
    return {
        "option_a_asset": a[0],
        "act_a": a[1],
        "box_a": a[2],
        "option_b_asset": b[0],
        "act_b": b[1],
        "box_b": b[2],
        "correct": "b" if flip else "a",
        "rel_diff": abs(a[1] - b[1]) / abs(base_act) if base_act else float("nan"),
    }


def _measure(ctx, layer: str, channel: int, asset: str) -> float:
    """The unit's activation on a served asset (decoded bytes)."""
    from causalvis.images import pil_to_tensor
    from causalvis.models import probe_tensor

    x = pil_to_tensor(read_asset(ctx.paths, asset))[None]
    return float(probe_tensor(ctx.model, x, [layer])[layer][0, channel])


def _padded(bundle: StudyPaths, row: dict) -> dict:
    """``row`` with option assets of equal byte length (padded copies), so the file size
    of an option says nothing about whether it is correct."""
    a, b = equal_length_pair(bundle, row["option_a_asset"], row["option_b_asset"])
    return {**row, "option_a_asset": a, "option_b_asset": b}


def _copy_trial_assets(bundle: StudyPaths, src: _Source, base: pd.DataFrame) -> None:
    """A sub-study's queries and options, copied into the parent's bundle (content-hashed
    names, so the names in its trial table stay valid)."""
    if not src.tagged:
        return
    for col in ("query_asset", "option_a_asset", "option_b_asset"):
        for rel in sorted(set(base[col]) - {""}):
            copy_asset(bundle, src.paths.bundle / rel)


def _two_afc_catch(trial: pd.Series, refs: list[str], min_refs: list[str]) -> tuple[list, list]:
    """IMI catch rule for the 2-AFC task: each query is also one of its side's references."""
    good = trial[f"option_{trial['correct']}_asset"]
    bad = trial["option_b_asset" if trial["correct"] == "a" else "option_a_asset"]
    return [*refs[:-1], good], [*min_refs[:-1], bad]


@dataclass
class SourcePlan:
    """What one source (model) contributes: its sessions and its worked example per
    condition (trial ids; the rows went to ``add``)."""

    sessions: list[PlannedSession]
    examples: dict[str, str] = field(default_factory=dict)


RefsOf = Callable[[str, str, int], tuple[list[str], list[str]]]


def _reference_assets(
    base: pd.DataFrame, units: list[str], conditions: list[str], refs_of: RefsOf
) -> set[str]:
    """Every reference image a trial of ``units`` may show (any condition, either side)."""
    cells = base.loc[base["unit"].isin(units), ["unit", "image_set"]].drop_duplicates()
    out: set[str] = set()
    for unit, image_set in cells.itertuples(index=False):
        for condition in conditions:
            refs, min_refs = refs_of(condition, unit, int(image_set))
            out.update(refs, min_refs)
    return out


def _plan_source(src: _Source, bundle: StudyPaths, config, add) -> SourcePlan:
    """Practice, example, main and catch trials and the sessions of one model (one source)."""
    two_sided = "min" in get_task(config.task).sides  # the 2-AFC task
    base = _base_trials(src.paths)
    _copy_trial_assets(bundle, src, base)
    main_units, practice_units, catch_units = _units(src.paths)
    resolve = _ReferenceResolver(bundle, src)

    def refs_of(condition: str, unit: str, image_set: int) -> tuple[list[str], list[str]]:
        refs = resolve(condition, unit, image_set)
        return refs, (resolve(condition, unit, image_set, "min") if two_sided else [])

    def measure(layer: str, channel: int, asset: str) -> float:
        return _measure(src.ctx, layer, channel, asset)

    return assemble_source(
        src.model, src.tagged, base, main_units, practice_units, config,
        refs_of=refs_of, measure=measure, pad=lambda row: _padded(bundle, row), add=add,
        catch_units=catch_units,
    )  # fmt: skip


def assemble_source(
    model: str,
    tagged: bool,
    base: pd.DataFrame,
    main_units: list[str],
    practice_units: set[str],
    config,
    *,
    refs_of: RefsOf,
    measure: Measure,
    pad: Callable[[dict], dict],
    add: Callable[[dict], str],
    catch_units: set[str] = frozenset(),
) -> SourcePlan:
    """The session rules on one source's base trials, free of files (references, the
    activation of a `none` partner and the padding of options come in as functions), so
    a paper-sized plan can be checked without building its images. ``tagged``: a
    multi-model study (the model enters ids and sessions); ``pad`` must leave a padded
    row as it is (2-AFC catch trials show their padded options among the references).
    ``catch_units``: the units whose easiest trials are the catch trials (none: the
    trials of units outside the session, with a warning)."""
    src = _Source(model, None, config, None, tagged)  # the rows' model tag only
    sc, cc = config.sessions, config.conditions
    two_sided = "min" in get_task(config.task).sides
    main_units = [u for u in main_units if u in set(base["unit"])]
    if not main_units:
        raise CausalvisError(f"model {src.model}: no main unit has a trial")
    image_sets = sorted(
        int(b) for b in base.loc[base["unit"].isin(main_units), "image_set"].unique()
    )
    conditions = list(cc.names)
    prefix = f"model {src.model}: " if src.tagged else ""

    n_refs: dict[str, tuple[int, int]] = {}  # trial id -> (#references, #minimal ones)

    def finish(row: dict, label: str) -> str:
        trial_id = add(_with_id(src, pad(_oriented(row, label))))
        n_refs[trial_id] = (len(row["reference_assets"].split()),
                            len(row["min_reference_assets"].split()))  # fmt: skip
        return trial_id

    def balanced_rows(rows: list[dict], *seed_parts: object) -> list[str]:
        """Label the rows' options so that ``a``/``b`` is correct equally often."""
        labels = balanced_labels(len(rows), config.seed, *seed_parts)
        return [finish(r, lab) for r, lab in zip(rows, labels, strict=True)]

    # every image set of a main unit gets sessions, so this is empty unless that changes
    spare_main = base[base["unit"].isin(main_units) & ~base["image_set"].isin(image_sets)]
    selection = select_practice_pools(
        base, practice_units, n_practice=sc.n_practice, n_obvious=sc.n_practice_obvious,
        factor=sc.practice_pool_factor, spare_main=spare_main,
        avoid=_reference_assets(base, [*main_units, *practice_units, *catch_units], conditions,
                                refs_of),
    )  # fmt: skip
    if sc.n_practice and selection.short:
        log.warning(
            "sessions: %spractice pools hold %d obvious + %d non-obvious trials (wanted %d + "
            "%d): participants are drawn from what there is",
            prefix, len(selection.obvious), len(selection.non_obvious), *selection.wanted,
        )  # fmt: skip
    scoring_base = without_example(base, selection.example)
    used_practice = set(selection.obvious["trial_id"]) | set(selection.non_obvious["trial_id"])
    own_practice: dict[str, tuple[list[str], list[str]]] = {}
    examples: dict[str, str] = {}
    for condition in conditions:
        own_practice[condition] = ([], [])  # the paper: `none` without practice
        if condition != "none" or sc.practice_in_none:
            pools = []
            for name, pool in (("obvious", selection.obvious),
                               ("non-obvious", selection.non_obvious)):
                rows = [
                    _row(src, t, "practice", condition,
                         *refs_of(condition, t["unit"], int(t["image_set"])))
                    for _, t in pool.iterrows()
                ]
                pools.append(balanced_rows(rows, "practice", name, src.model, condition))
            own_practice[condition] = (pools[0], pools[1])
        ex = selection.example
        if ex is not None:
            refs, min_refs = refs_of(condition, ex["unit"], int(ex["image_set"]))
            label = balanced_labels(1, config.seed, "example", src.model, condition)[0]
            examples[condition] = finish(_row(src, ex, "example", condition, refs, min_refs), label)

    sessions = plan_sessions(
        conditions,
        image_sets,
        main_units,
        max_units_per_session=sc.max_units_per_session,
        responses_per_cell=sc.responses_per_cell,
        seed=config.seed + sc.seed,
        model=src.model if src.tagged else None,
    )
    catch_units = {u for u in catch_units if u in set(base["unit"])} - set(main_units)
    if sc.n_catch and not catch_units:
        # A chosen 0 (the quick preset) is a choice, not a problem; an older study is.
        chosen = src.config.units.n_catch_units == 0
        (log.info if chosen else log.warning)(
            "sessions: %sno catch units (units.n_catch_units = 0, or a study built before "
            "them): catch trials come from the trials of units outside each session",
            prefix,
        )
    missing_cells = 0
    no_catch = 0
    for session in sessions:
        scored = []  # main and catch rows, labelled together below
        for unit in session.units:
            match = base[(base["unit"] == unit) & (base["image_set"] == session.image_set)]
            if match.empty:
                missing_cells += 1
                continue
            trial = match.iloc[0]
            refs, min_refs = refs_of(session.condition, unit, session.image_set)
            scored.append(_row(src, trial, "main", session.condition, refs, min_refs))
        pool = catch_pool(
            scoring_base,
            main_units=set(session.units),
            practice_units=practice_units,
            used_practice=used_practice,
            image_set=session.image_set,
            catch_units=catch_units,
            other_units=set(main_units) - set(session.units),
        )
        no_catch += sc.n_catch > 0 and pool.empty
        for _, trial in select_catch(pool, sc.n_catch).iterrows():
            if session.condition == "none":
                override = _none_catch(measure, scoring_base, trial)
                if override is None:
                    log.warning("sessions: no unrelated image for a `none` catch trial")
                    continue
                scored.append(_row(src, trial, "catch", "none", [], **override))
                continue
            refs, min_refs = refs_of(session.condition, trial["unit"], int(trial["image_set"]))
            if sc.catch_rule == "query_in_references" and refs:
                if two_sided:  # the queries are the options: show the same (padded) files
                    trial = pd.Series({**trial.to_dict(), **pad(trial.to_dict())})
                    refs, min_refs = _two_afc_catch(trial, refs, min_refs)
                else:
                    refs = [*refs[:-1], trial["query_asset"]]
            scored.append(_row(src, trial, "catch", session.condition, refs, min_refs))
        trial_ids = balanced_rows(scored, session.session_id)
        session.trials = shuffled(trial_ids, config.seed, sc.seed, session.session_id)
        obvious, non_obvious = own_practice[session.condition]
        session.practice = [*obvious, *non_obvious]
        session.practice_obvious = list(obvious)
        _order_references(session, n_refs, config.seed, sc.seed)
    if no_catch:
        log.warning("sessions: %s%d session(s) have no catch trial: no trial of a unit outside "
                    "the session is left", prefix, no_catch)  # fmt: skip
    if missing_cells:
        log.info(
            "sessions: %s%d (unit, image set) cells have no trial (dropped by ground truth)",
            prefix, missing_cells,
        )
    return SourcePlan(sessions, examples)


def _order_references(
    session: PlannedSession, n_refs: dict[str, tuple[int, int]], *seed: int
) -> None:
    """The order the session shows each trial's references in (the original shuffled them
    per task): seeded by the study, the sessions seed and the session, recorded in the
    plan (indices into the trial's reference lists) for the server and the export."""
    session.reference_seed = stable_seed("reference-order", *seed, session.session_id)
    for trial_id in [*session.trials, *session.practice]:
        rng = random.Random(stable_seed(session.reference_seed, trial_id))
        n_max, n_min = n_refs[trial_id]
        if n_max > 1:
            session.reference_order[trial_id] = rng.sample(range(n_max), n_max)
        if n_min > 1:
            session.min_reference_order[trial_id] = rng.sample(range(n_min), n_min)


def run_sessions_stage(ctx) -> None:
    paths: StudyPaths = ctx.paths
    config = ctx.config
    sources = _sources(ctx)
    digest = _session_inputs_digest(paths, config, sources)
    if (
        stamp_matches(paths, "sessions", digest)
        and paths.sessions.is_file()
        and paths.trials.is_file()
        and read_stamp(paths, "sessions").get("trials_sha256") == _sha256(paths.trials)
    ):
        log.info("sessions: up to date")
        return

    rows: dict[str, dict] = {}

    def add(row: dict) -> str:
        rows.setdefault(row["trial_id"], row)
        return row["trial_id"]

    sessions = []
    examples: dict[str, str] = {}
    for src in sources:
        planned = _plan_source(src, paths, config, add)
        sessions += planned.sessions
        for condition, trial_id in planned.examples.items():
            examples.setdefault(condition, trial_id)
    conditions = list(config.conditions.names)
    for condition in conditions:
        if condition not in examples:
            log.warning(
                "sessions: no trial can be the worked example of condition %s (each one's "
                "images are shown elsewhere): the instructions show none", condition,
            )  # fmt: skip

    table = pd.DataFrame(list(rows.values()), columns=list(SERVED_COLUMNS))
    write_trials_frame(paths.trials, table)
    plan = SessionPlan(
        sessions=tuple(_entry(s) for s in sessions),
        study=config.name,
        task=config.task,
        config_hash=config.digest(),
        conditions=tuple(conditions),
        models=tuple(config.models),
        instructions_example=examples,
        practice_draw={
            "n_total": config.sessions.n_practice,
            "n_obvious": config.sessions.n_practice_obvious,
        },
    )
    write_sessions(paths.sessions, plan)
    write_manifest(paths.manifest, build_manifest(
        paths, study=config.name, config_hash=config.digest(), software_version=__version__,
    ))
    write_stamp(
        paths,
        "sessions",
        digest,
        n_sessions=len(sessions),
        n_trials=len(table),
        trials_sha256=_sha256(paths.trials),
    )
    counts = table["kind"].value_counts().to_dict()
    log.info(
        "sessions: %d sessions, %d participants needed, trials %s",
        len(sessions),
        plan.n_participants_needed,
        counts,
    )


def _entry(session: PlannedSession) -> SessionEntry:
    return SessionEntry(
        session_id=session.session_id, condition=session.condition,
        image_set=session.image_set, trials=tuple(session.trials),
        practice=tuple(session.practice), planned_participants=session.planned_participants,
        units=tuple(session.units), model=session.model,
        practice_obvious=tuple(session.practice_obvious),
        reference_seed=session.reference_seed,
        reference_order={k: tuple(v) for k, v in session.reference_order.items()},
        min_reference_order={k: tuple(v) for k, v in session.min_reference_order.items()},
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


__all__ = ["SourcePlan", "assemble_source", "run_sessions_stage"]
