"""MIS: the machine interpretability score for the 2-AFC task.

Zimmermann, Klindt & Brendel (NeurIPS 2024) simulate a 2-AFC participant with a
perceptual similarity: s(q, E) = mean similarity of query q to the explanation images E,
Δ = [s(q⁺, E⁺) − s(q⁺, E⁻)] − [s(q⁻, E⁺) − s(q⁻, E⁻)] and P(correct) = σ(αΔ); a unit's
MIS is P(correct) averaged over simulated tasks. Here the similarity is by default the
observers' perceptual network (``reference.PerceptualEmbedder``: cosine of pooled features
of a net that is not the studied one); DreamSim (the paper's) or LPIPS can be plugged in
(``observers.similarity``). With the offline default the paper's α does not transfer: without
human responses (``alpha=None``) P(correct) is the hard decision (1 if Δ > 0, ½ on a tie,
0 otherwise), i.e. MIS = the share of simulated tasks solved; with human responses α is
fitted on them (``observe``). Deviations from the paper are listed in docs/observers.md.

Three uses:

* pure arithmetic (:func:`mis_delta`, :func:`p_correct`, :func:`task_deltas`);
* per-unit MIS of a study sampled from its scan (:func:`study_mis`, :func:`mis_for_models`);
* a trial-level observer on a built two_afc study's served trials (:class:`MisObserver`).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from causalvis.errors import CausalvisError
from causalvis.observers.score import sigmoid
from causalvis.observers.trials import AssetReader, image_set_of, read_trials
from causalvis.stimuli.exemplars import imi_plan, rank_order
from causalvis.store import trials as store_trials
from causalvis.store.activations import ActivationTable
from causalvis.store.layout import CONFIG_FILE, StudyPaths
from causalvis.store.units import read_units

log = logging.getLogger("causalvis.mis")

SCHEMES = ("imi", "mis")
MIS_NOTE = (
    "MIS per unit = mean over simulated tasks of P(correct) = sigma(alpha * delta), "
    "delta = [s(q+,E+) - s(q+,E-)] - [s(q-,E+) - s(q-,E-)], s = mean similarity under "
    "the perceptual similarity named in 'perceptual'; alpha null = hard decisions (share of tasks solved)"
)


# -- pure arithmetic -----------------------------------------------------------------------

def unit_norm(x: np.ndarray, what: str = "embeddings") -> np.ndarray:
    """``x`` scaled to unit L2 norm along its last axis, so that dot products are cosine
    similarities whatever the embedder returned; a zero or non-finite vector is an error
    (its similarity to anything is undefined)."""
    x = np.asarray(x, dtype=float)
    if not np.isfinite(x).all():
        raise CausalvisError(f"mis: {what} contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    if (norms < 1e-12).any():
        raise CausalvisError(f"mis: {int((norms < 1e-12).sum())} of the {what} have zero norm "
                             "(a blank image or a dead embedding layer?)")
    return x / norms


def set_similarity(queries: np.ndarray, explanations: np.ndarray,
                   metric: str = "cosine") -> np.ndarray:
    """s(q, E) per task: mean cosine similarity of ``queries`` [T, D] to ``explanations``
    [T, K, D] (or one shared set [K, D]); both are normalised here (:func:`unit_norm`).
    ``metric="neg_sq_euclidean"`` (LPIPS): minus the mean squared distance, unnormalised."""
    if metric == "neg_sq_euclidean":
        q, e = np.asarray(queries, dtype=float), np.asarray(explanations, dtype=float)
        e = e[None] if e.ndim == 2 else e
        return -((e - q[:, None, :]) ** 2).sum(axis=2).mean(axis=1)
    q = unit_norm(queries, "query embeddings")
    e = unit_norm(explanations, "explanation embeddings")
    if e.ndim == 2:
        return (q @ e.T).mean(axis=1)
    return np.einsum("td,tkd->tk", q, e).mean(axis=1)


def mis_delta(
    s_qplus_eplus: np.ndarray,
    s_qplus_eminus: np.ndarray,
    s_qminus_eplus: np.ndarray,
    s_qminus_eminus: np.ndarray,
) -> np.ndarray:
    """Δ = [s(q⁺,E⁺) − s(q⁺,E⁻)] − [s(q⁻,E⁺) − s(q⁻,E⁻)]; Δ > 0 = the task is solved."""
    return (np.asarray(s_qplus_eplus, dtype=float) - np.asarray(s_qplus_eminus, dtype=float)) - (
        np.asarray(s_qminus_eplus, dtype=float) - np.asarray(s_qminus_eminus, dtype=float)
    )


def p_correct(delta: np.ndarray, alpha: float | None = None) -> np.ndarray:
    """σ(αΔ); with ``alpha=None`` the hard decision (1 / ½ on a tie / 0)."""
    d = np.asarray(delta, dtype=float)
    if alpha is None:
        return np.where(d > 0, 1.0, np.where(d < 0, 0.0, 0.5))
    return sigmoid(alpha * d)


def task_deltas(
    q_plus: np.ndarray, q_minus: np.ndarray, e_plus: np.ndarray, e_minus: np.ndarray,
    metric: str = "cosine",
) -> np.ndarray:
    """Δ per task from embeddings: queries [T, D], explanations [T, K, D] or [K, D]."""
    return mis_delta(
        set_similarity(q_plus, e_plus, metric),
        set_similarity(q_plus, e_minus, metric),
        set_similarity(q_minus, e_plus, metric),
        set_similarity(q_minus, e_minus, metric),
    )


# -- simulated tasks in ranks ------------------------------------------------------------------

@dataclass(frozen=True)
class MisTask:
    """One simulated 2-AFC task in 0-based positions of the unit's descending ranking
    (0 = most activating image, n − 1 = least activating)."""

    query_plus: int
    query_minus: int
    explanations_plus: tuple[int, ...]
    explanations_minus: tuple[int, ...]


def imi_tasks(
    n_images: int, *, k: int, n_tasks: int, difficulty: str = "easy",
    seed: int | Sequence[int],
) -> list[MisTask]:
    """The study's own task distribution (``stimuli.exemplars.imi_plan``, one image set per
    task, IMI's scheme): E⁺ / E⁻ = one image from each of k rank bins of the top / bottom
    n_tasks × k, queries from the ``difficulty`` window (needs ≥ 2 n_tasks (k + 1)
    images for ``easy``)."""
    plan = imi_plan(n_images, n_references=k, n_min_references=k, n_image_sets=n_tasks,
                    difficulty=difficulty, seed=seed)
    return [
        MisTask(p.query - 1, n_images - int(p.min_query or 1),
                tuple(r - 1 for r in p.references),
                tuple(n_images - r for r in p.min_references))
        for p in plan
    ]


def _imi_task_count(n_images: int, k: int, wanted: int, difficulty: str, unit: str) -> int:
    """As many IMI tasks as the scan allows, up to ``wanted``: IMI's scheme uses n_tasks x k
    references per side plus the query window, so a small scan gets fewer tasks (logged)
    rather than failing; none at all is an error."""
    fits = wanted
    while fits > 0:
        try:
            imi_plan(n_images, n_references=k, n_min_references=k, n_image_sets=fits,
                     difficulty=difficulty, seed=0)
            break
        except CausalvisError:
            fits -= 1
    if fits == 0:
        raise CausalvisError(f"mis: {n_images} scanned images are too few for one IMI task "
                             f"of k = {k} (difficulty {difficulty}); scan more images or "
                             "lower k")
    if fits < wanted:
        log.warning("mis: %s: %d scanned images allow %d IMI tasks of k = %d (wanted %d)",
                    unit, n_images, fits, k, wanted)
    return fits


def paper_tasks(
    n_images: int, *, k: int, n_tasks: int, quantile: float, seed: int | Sequence[int]
) -> list[MisTask]:
    """The MIS paper's sampling: per task, k + 1 distinct images drawn from the top (and,
    independently, the bottom) ``quantile`` of the ranking; the k most extreme are the
    explanation, the least extreme is the query."""
    _check_quantile(quantile)
    pool = math.ceil(n_images * quantile)
    if pool < k + 1:
        raise CausalvisError(
            f"mis: quantile {quantile:g} of {n_images} images leaves {pool} per side, but a "
            f"task needs k + 1 = {k + 1}: use a quantile >= {(k + 1) / n_images:.3g} or scan "
            f">= {math.ceil((k + 1) / quantile)} images"
        )
    seeds = list(seed) if isinstance(seed, Sequence) else [seed]
    rng = np.random.default_rng([*seeds, 7])
    tasks = []
    for _ in range(n_tasks):
        top = np.sort(rng.choice(pool, size=k + 1, replace=False))
        low = np.sort(rng.choice(pool, size=k + 1, replace=False))
        tasks.append(MisTask(int(top[k]), n_images - 1 - int(low[k]),
                             tuple(int(p) for p in top[:k]),
                             tuple(n_images - 1 - int(p) for p in low[:k])))
    return tasks


def shuffled_tasks(
    tasks: Sequence[MisTask], n_images: int, seed: int | Sequence[int]
) -> list[MisTask]:
    """Control: the same queries with E⁺ and E⁻ drawn at random positions of the whole
    ranking (not the queries'), so the explanations carry no information: MIS ≈ ½."""
    seeds = list(seed) if isinstance(seed, Sequence) else [seed]
    rng = np.random.default_rng([*seeds, 11])
    out = []
    for t in tasks:
        k_plus, k_minus = len(t.explanations_plus), len(t.explanations_minus)
        free = np.setdiff1d(np.arange(n_images), [t.query_plus, t.query_minus])
        pick = rng.choice(free, size=k_plus + k_minus, replace=False)
        out.append(MisTask(t.query_plus, t.query_minus,
                           tuple(int(p) for p in pick[:k_plus]),
                           tuple(int(p) for p in pick[k_plus:])))
    return out


# -- per-unit MIS of a study ---------------------------------------------------------------

@dataclass
class MisSettings:
    """How tasks are simulated. ``k`` None = the study's ``exemplars.n_references``."""

    n_tasks: int = 20
    k: int | None = None
    scheme: str = "imi"
    quantile: float = 0.05
    alpha: float | None = None
    shuffled: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        _check_quantile(self.quantile)
        if self.scheme not in SCHEMES:
            raise CausalvisError(f"mis: unknown scheme {self.scheme!r}: choose {SCHEMES}")
        if self.n_tasks < 1:
            raise CausalvisError("mis: n_tasks must be >= 1")
        if self.k is not None and self.k < 1:
            raise CausalvisError("mis: k must be >= 1")


def _check_quantile(quantile: float) -> None:
    """Any quantile in (0, 0.5]: above it the top and bottom pools would share images."""
    if not 0 < quantile <= 0.5:
        raise CausalvisError(f"mis: quantile {quantile:g} must be in (0, 0.5] (the share of "
                             "the ranking each side's pool takes; the two must not overlap)")


def make_embedder(perceptual_model: str, *, weights: str | None = None, device: str = "cpu"):
    """The observers' perceptual similarity for ``perceptual_model``: a model's features,
    ``dreamsim[:TYPE]`` or ``lpips[:NET]`` (``observers.similarity``)."""
    from causalvis.observers.similarity import make_similarity

    return make_similarity(perceptual_model, weights=weights, device=device)


def embedder_info(embedder) -> dict:
    """What the outputs say of the similarity used (``similarity`` names its kind)."""
    if hasattr(embedder, "describe"):
        return embedder.describe()
    return {"similarity": "custom", "model": type(embedder).__name__,
            "features": "user-supplied embedder, cosine"}


def _metric(embedder) -> str:
    return getattr(embedder, "metric", "cosine")


def synthetic_explanations(paths: StudyPaths, method_dir: str, key: str) -> tuple[list[Path], list[Path]]:
    """(max side, min side) feature visualizations of a unit: ``<i>.png`` and ``min-<i>.png``
    under ``references/<method>/<unit>/``, in index order; empty lists when absent."""
    folder = paths.reference_dir(method_dir, key)
    if not folder.is_dir():
        return [], []
    sides: dict[str, list[tuple[int, Path]]] = {"max": [], "min": []}
    for f in folder.glob("*.png"):
        m = re.fullmatch(r"(min-)?(\d+)\.png", f.name)
        if m:
            sides["min" if m.group(1) else "max"].append((int(m.group(2)), f))
    return ([p for _, p in sorted(sides["max"])], [p for _, p in sorted(sides["min"])])


def _embed_files(embedder, files: Sequence[Path]) -> np.ndarray:
    """Embeddings of image files, cached by content hash (a re-rendered file is new)."""
    import hashlib
    import io

    from PIL import Image

    blobs = [f.read_bytes() for f in files]
    keys = [f"png:{hashlib.sha256(b).hexdigest()}" for b in blobs]
    data = dict(zip(keys, blobs, strict=True))

    def decode(key: str) -> np.ndarray:
        with Image.open(io.BytesIO(data[key])) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)

    return embedder.embed_lazy(keys, decode)


def _conditions(paths: StudyPaths, config, requested: Sequence[str] | None) -> list[str]:
    """natural + every generated method whose folder exists (synthetic explanations)."""
    if requested is not None:
        return list(requested)
    from causalvis.pipeline.methods import generated_methods, method_dir_name

    out = ["natural"]
    for name in generated_methods(config):
        if (paths.references / method_dir_name(name)).is_dir():
            out.append(name)
    return out


def study_mis(
    study: str | Path,
    *,
    embedder=None,
    perceptual_model: str | None = None,
    settings: MisSettings | None = None,
    conditions: Sequence[str] | None = None,
    model_label: str | None = None,
    device: str = "cpu",
) -> pd.DataFrame:
    """Per-unit MIS of one single-model study (stages scan and units done).

    Queries always come from the scan (natural images, as in the study); explanations
    are the unit's natural extremes (``natural``) or, per generated method, its rendered
    feature visualizations when both sides exist (units without them are skipped).
    Every distinct image is embedded once (the embedder caches by image id).
    Returns one row per (condition, unit): model, condition, unit (``LAYER:CHANNEL``, the
    spelling of every ``unit`` column), layer, channel, mis, hit_rate, mean_delta, n_tasks.
    """
    from causalvis.config import StudyConfig
    from causalvis.pipeline.build import StageContext
    from causalvis.pipeline.methods import method_dir_name

    settings = settings or MisSettings()
    paths = StudyPaths(Path(study))
    if not paths.config.is_file():
        raise CausalvisError(f"mis: no {CONFIG_FILE} in {paths.root}")
    config = StudyConfig.load(paths.config)
    if config.models:
        raise CausalvisError(
            f"{paths.config}: multi-model study; use mis_for_models on its models/<name>/ folders"
        )
    k = settings.k or config.exemplars.n_references
    difficulty = config.exemplars.difficulty
    table = ActivationTable(paths)
    units = read_units(paths, role="main")
    if embedder is None:
        from causalvis.observers.reference import perceptual_model_for

        embedder = make_embedder(perceptual_model or perceptual_model_for(config.model.name),
                                 device=device)
    ctx = StageContext(paths, config, progress=False, device=device)
    source = ctx.source
    ids = table.ids
    label = model_label or config.model.name
    conds = _conditions(paths, config, conditions)

    prefix = f"src:{source.name}:{source.size}:"

    def embed_ids(image_ids: Sequence[str]) -> np.ndarray:
        return embedder.embed_lazy(
            [prefix + i for i in image_ids],
            lambda key: np.asarray(source.load(key[len(prefix):]).convert("RGB"), np.uint8),
        )

    rows = []
    for unit in units:
        acts = table.column(unit.layer, unit.channel)
        order = rank_order(acts)
        n = len(order)
        seed = [settings.seed, unit.seed]
        if settings.scheme == "imi":
            tasks = imi_tasks(n, k=k, n_tasks=_imi_task_count(n, k, settings.n_tasks,
                                                              difficulty, unit.spec),
                              difficulty=difficulty, seed=seed)
        else:
            tasks = paper_tasks(n, k=k, n_tasks=settings.n_tasks, quantile=settings.quantile,
                                seed=seed)
        if settings.shuffled:
            tasks = shuffled_tasks(tasks, n, seed)
        qp = embed_ids([ids[order[t.query_plus]] for t in tasks])
        qm = embed_ids([ids[order[t.query_minus]] for t in tasks])
        for cond in conds:
            if cond == "natural":
                ep = np.stack([embed_ids([ids[order[p]] for p in t.explanations_plus])
                               for t in tasks])
                em = np.stack([embed_ids([ids[order[p]] for p in t.explanations_minus])
                               for t in tasks])
            else:
                plus, minus = synthetic_explanations(paths, method_dir_name(cond), unit.key)
                if not (plus and minus):
                    continue
                ep, em = _embed_files(embedder, plus), _embed_files(embedder, minus)
            delta = task_deltas(qp, qm, ep, em, _metric(embedder))
            rows.append({
                "model": label, "condition": cond, "unit": unit.spec, "layer": unit.layer,
                "channel": unit.channel, "mis": float(p_correct(delta, settings.alpha).mean()),
                "hit_rate": float(p_correct(delta, None).mean()),
                "mean_delta": float(delta.mean()), "n_tasks": len(tasks),
            })
    cols = ["model", "condition", "unit", "layer", "channel", "mis", "hit_rate", "mean_delta",
            "n_tasks"]
    return pd.DataFrame(rows, columns=cols)


def summarize_mis(
    per_unit: pd.DataFrame, *, n_boot: int = 2000, seed: int = 0, ci: float = 0.95
) -> dict:
    """Per condition: model scores (mean per-unit MIS, bootstrap CI over units, from
    ``analysis.models.model_scores``) and, with several models, ``compare_models``
    (Kruskal–Wallis + Conover–Holm)."""
    from causalvis.analysis.models import compare_models, comparison_statement, model_scores

    # an ordered model column (mis_for_models(order_is_size=True)) lists smallest → largest
    order_is_size = bool(getattr(per_unit["model"].dtype, "ordered", False))
    out: dict = {}
    for cond, d in per_unit.groupby("condition", sort=False):
        scores = model_scores(d, value="mis", group="model", n_boot=n_boot, ci=ci, seed=seed)
        entry: dict = {"scores": _records(scores.astype({"model": str}))}
        if d["model"].nunique() > 1:
            entry["comparison"] = compare_models(d, value="mis", group="model")
            entry["statement"] = "MIS " + comparison_statement(
                str(cond), entry["scores"], entry["comparison"], order_is_size)
        out[str(cond)] = entry
    return out


def _records(frame: pd.DataFrame) -> list[dict]:
    return frame.to_dict(orient="records")


def mis_for_models(
    study_dirs: Mapping[str, str | Path],
    *,
    perceptual_model: str | None = None,
    settings: MisSettings | None = None,
    conditions: Sequence[str] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    device: str = "cpu",
    embedder=None,
    order_is_size: bool = False,
) -> dict:
    """Per-unit MIS of several single-model studies with ONE perceptual network (scores of
    different models are only comparable under the same similarity), and their comparison.

    ``perceptual_model`` None = the first embedded net (lite0, lite1, lite2) that is none of
    the compared models, else lite1 with a warning (``perceptual_is_compared``).
    ``order_is_size``: the folders are listed from the smallest to the largest model, so
    ``compare_models`` also answers "is the largest model better than each smaller one?".
    Returns ``{"per_unit": records, "summary": summarize_mis(...), "perceptual": ...}``.
    """
    if not study_dirs:
        raise CausalvisError("mis_for_models: no study folders given")
    studied = _model_names(study_dirs)
    if embedder is None:
        if perceptual_model is None:
            from causalvis.observers.reference import perceptual_model_for

            perceptual_model = perceptual_model_for(*studied)
        embedder = make_embedder(perceptual_model, device=device)
    frames = [
        study_mis(folder, embedder=embedder, settings=settings, conditions=conditions,
                  model_label=name, device=device)
        for name, folder in study_dirs.items()
    ]
    per_unit = pd.concat(frames, ignore_index=True)
    per_unit["model"] = pd.Categorical(per_unit["model"], categories=list(study_dirs),
                                       ordered=order_is_size)
    perceptual = embedder_info(embedder)
    perceptual["is_compared"] = perceptual["model"] in studied | set(study_dirs)
    if perceptual["is_compared"]:
        log.warning("mis: perceptual net %s is one of the compared models; its own MIS is "
                    "judged in its own feature space", perceptual["model"])
    return {
        "note": MIS_NOTE,
        "settings": _settings_dict(settings or MisSettings()),
        "perceptual": perceptual,
        "per_unit": per_unit.astype({"model": str}).to_dict(orient="records"),
        "summary": summarize_mis(per_unit, n_boot=n_boot, seed=seed),
    }


def _model_names(study_dirs: Mapping[str, str | Path]) -> set[str]:
    """The studied model of every folder (each must be a study)."""
    from causalvis.config import StudyConfig

    out = set()
    for name, folder in study_dirs.items():
        cfg = StudyPaths(Path(folder)).config
        if not cfg.is_file():
            raise CausalvisError(f"mis_for_models: {name}: no {CONFIG_FILE} in {folder}")
        out.add(StudyConfig.load(cfg).model.name)
    return out


def _settings_dict(s: MisSettings) -> dict:
    return {"n_tasks": s.n_tasks, "k": s.k, "scheme": s.scheme, "quantile": s.quantile,
            "alpha": s.alpha, "shuffled": s.shuffled, "seed": s.seed}


# -- the trial-level observer on a built two_afc study -----------------------------------------

# A two_afc trial table names the minimal references too (docs/study-folder.md).
TWO_AFC_COLUMNS = (*store_trials.REQUIRED_COLUMNS, "unit", "min_reference_assets")


@dataclass(frozen=True)
class TwoAfcTrial:
    """One served two_afc trial: two natural queries, maximal and minimal references."""

    trial_id: str
    kind: str
    condition: str
    unit: str
    option_a: str
    option_b: str
    references: tuple[str, ...]
    min_references: tuple[str, ...] = field(default_factory=tuple)
    correct: str = "a"
    base_trial_id: str = ""
    image_set: int = -1
    model: str = ""


def load_two_afc_trials(path: str | Path, kinds: tuple[str, ...] = ("main",)) -> list[TwoAfcTrial]:
    """The two_afc trials of ``trials.csv`` (docs/study-folder.md), in file order.

    A study with several models (``model`` column) gets unit labels ``<model>/<unit>``:
    the same layer:channel of two models is not the same unit.
    """
    frame = read_trials(path, required=TWO_AFC_COLUMNS)
    multi = frame.loc[frame["model"] != "", "model"].nunique() > 1
    frame = frame[frame["kind"].isin(kinds)]
    out = []
    for row in frame.itertuples(index=False):
        tid = row.trial_id
        if not row.option_a_asset or not row.option_b_asset:
            raise CausalvisError(f"{path}: trial {tid}: option_a_asset / option_b_asset empty")
        out.append(TwoAfcTrial(
            trial_id=tid, kind=row.kind, condition=row.condition,
            unit=f"{row.model}/{row.unit}" if multi else row.unit,
            option_a=row.option_a_asset, option_b=row.option_b_asset,
            references=tuple(row.reference_assets.split()),
            min_references=tuple(row.min_reference_assets.split()),
            correct=row.correct, base_trial_id=row.base_trial_id or tid,
            image_set=image_set_of(row.image_set), model=row.model,
        ))
    return out


class MisObserver:
    """Δ(a, b) = [s(a,E⁺) − s(a,E⁻)] − [s(b,E⁺) − s(b,E⁻)] on the served trial: Δ > 0
    says option a is the maximal query (choice a). Oriented towards the truth this is the
    MIS Δ. Trials without both reference sides get NaN (not applicable)."""

    name = "mis"
    uses_references = True

    def __init__(self, embedder) -> None:
        self.embedder = embedder

    def deltas(self, trials: Sequence[TwoAfcTrial], reader: AssetReader) -> np.ndarray:
        usable = [t for t in trials if t.references and t.min_references]
        assets = {a for t in usable
                  for a in (t.option_a, t.option_b, *t.references, *t.min_references)}
        emb = self.embedder.embed_keyed({f"img:{a}": reader(a) for a in sorted(assets)})
        out = np.full(len(trials), np.nan)
        for i, t in enumerate(trials):
            if not (t.references and t.min_references):
                continue
            q = np.stack([emb[f"img:{t.option_a}"], emb[f"img:{t.option_b}"]])
            e_plus = np.stack([emb[f"img:{r}"] for r in t.references])
            e_minus = np.stack([emb[f"img:{r}"] for r in t.min_references])
            out[i] = task_deltas(q[:1], q[1:], e_plus, e_minus, _metric(self.embedder))[0]
        return out


def scan_mis_section(
    paths: StudyPaths, config, embedder, *, alpha: float | None, n_tasks: int = 20,
    n_boot: int = 2000, seed: int = 0,
) -> dict:
    """``observers.json["mis"]`` of a two_afc study: per-unit MIS sampled from the scan
    (per model for a multi-model study, with the model comparison), using the trial-level
    observer's perceptual net and its α fitted on human responses when there is one."""
    from causalvis.pipeline.multimodel import existing_substudies

    settings = MisSettings(n_tasks=n_tasks, alpha=alpha, seed=seed)
    if config is not None and config.models:
        folders = {m: sub.root for m, sub in existing_substudies(paths, config).items()}
    else:
        folders = {config.model.name if config is not None else paths.root.name: paths.root}
    missing = [m for m, f in folders.items() if not StudyPaths(f).activations_index.is_file()
               or not StudyPaths(f).units.is_file()]
    if config is None or missing:
        return {"available": False,
                "reason": f"no scan/units for {', '.join(missing) or paths.root.name}: "
                          "build stages scan and units to get the per-unit MIS"}
    # a multi-model study lists its models from the smallest to the largest (config docs)
    out = mis_for_models(folders, settings=settings, n_boot=n_boot, seed=seed,
                         embedder=embedder, order_is_size=bool(config.models))
    out["alpha_source"] = ("fitted on human responses (observer mis)" if alpha is not None
                           else "none: hard decisions (no human responses)")
    return {"available": True, **out}
