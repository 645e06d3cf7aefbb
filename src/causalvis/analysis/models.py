"""Model comparison for multi-model studies (the IMI analysis, Zimmermann, Klein & Brendel
2023): per-unit accuracy, model score = mean over units with a bootstrap CI over units,
Kruskal–Wallis over models and Conover's post-hoc test with Holm's correction.

The unit is the statistical unit here, not the participant: IMI asks whether a model's
*units* are easier to interpret, so every unit contributes one value (its mean accuracy
over ~30 responses) and the tests compare the distributions of unit values between models.

Public API (also used by machine observers): :func:`unit_accuracy`, :func:`model_scores`,
:func:`compare_models`.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from causalvis.analysis.design import baselines
from causalvis.analysis.stats import percentile_interval, resample_weights
from causalvis.errors import CausalvisError

DEFAULT_MODEL = "model"
ALPHA = 0.05


def _value_name(value: str) -> str:
    return "accuracy" if value == "correct" else value


def unit_accuracy(
    df: pd.DataFrame, *, value: str = "correct", by: Sequence[str] = ("model", "unit")
) -> pd.DataFrame:
    """Per-unit mean of ``value`` over main-trial responses (the caller drops excluded
    participants). Columns: ``by...``, ``accuracy`` (or ``value`` when it is not
    ``correct``), ``n_responses``.

    A table without a ``model`` column is one model, named ``"model"``. A missing ``unit``
    is built from ``layer`` and ``channel`` as ``layer:channel``.
    """
    by = list(by)
    if value not in df.columns:
        raise CausalvisError(f"responses: no column {value!r} to average per unit")
    data = df
    if "is_main" in data.columns:
        data = data[data["is_main"].to_numpy(dtype=bool)]
    data = data.copy()
    if "model" in by and "model" not in data.columns:
        data["model"] = DEFAULT_MODEL
    elif "model" in by:
        data["model"] = data["model"].where(data["model"].notna(), DEFAULT_MODEL)
    if "unit" in by and "unit" not in data.columns:
        if not {"layer", "channel"} <= set(data.columns):
            raise CausalvisError("responses: per-unit accuracy needs a unit column "
                                 "(or layer and channel)")
        data["unit"] = [f"{la}:{int(ch)}" if pd.notna(ch) else None
                        for la, ch in zip(data["layer"], data["channel"], strict=True)]
    missing = [c for c in by if c not in data.columns]
    if missing:
        raise CausalvisError(f"responses: per-unit accuracy needs column(s) {', '.join(missing)}")
    data = data.dropna(subset=[*by, value])
    name = _value_name(value)
    out_cols = [*by, name, "n_responses"]
    if data.empty:
        return pd.DataFrame(columns=out_cols)
    vals = pd.to_numeric(data[value].astype(float), errors="coerce")
    grouped = data.assign(_v=vals).groupby(by, sort=True, observed=True)["_v"]
    out = grouped.agg(["mean", "size"]).reset_index()
    out = out.rename(columns={"mean": name, "size": "n_responses"})
    out["n_responses"] = out["n_responses"].astype(int)
    return out[out_cols]


def _group_seed(seed: int, name: Any) -> np.random.Generator:
    """One generator per group, independent of the other groups and their order."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(str(name).encode())])


def model_scores(
    per_unit: pd.DataFrame,
    *,
    value: str = "accuracy",
    group: str = "model",
    n_boot: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Per ``group``: ``score`` = mean of ``value`` over units, ``ci_low``/``ci_high`` =
    expanded percentile bootstrap over units (``analysis.stats``, as every CI of the report) (``n_boot`` replicates), ``n_units``; plus ``sd`` of the
    unit values. Deterministic for a given ``seed``; group order follows the column
    (an ordered Categorical keeps its order, anything else is sorted)."""
    if not 0 < ci < 1:
        raise CausalvisError(f"ci must be in (0, 1), got {ci}")
    if n_boot < 1:
        raise CausalvisError(f"n_boot must be positive, got {n_boot}")
    for col in (value, group):
        if col not in per_unit.columns:
            raise CausalvisError(f"per-unit table has no column {col!r}")
    rows = []
    for name, sub in per_unit.groupby(group, sort=True, observed=True):
        x = pd.to_numeric(sub[value], errors="coerce").dropna().to_numpy(dtype=float)
        n = len(x)
        if n == 0:
            continue
        score = float(x.mean())
        if n > 1:
            w = resample_weights(n, n_boot, _group_seed(seed, name))
            reps = w @ x / n
            lo, hi = percentile_interval(reps, n, ci)
        else:
            lo = hi = float("nan")  # one unit: no spread to resample
        rows.append({group: name, "score": score, "ci_low": lo, "ci_high": hi,
                     "n_units": n, "sd": float(x.std(ddof=1)) if n > 1 else float("nan")})
    return pd.DataFrame(rows, columns=[group, "score", "ci_low", "ci_high", "n_units", "sd"])


def _order(per_unit: pd.DataFrame, group: str) -> tuple[list[Any], bool]:
    """Groups in the column's order, and whether that order is meaningful (an ordered
    Categorical, e.g. models listed from smallest to largest)."""
    col = per_unit[group]
    if isinstance(col.dtype, pd.CategoricalDtype):
        present = set(col.dropna().unique())
        return [c for c in col.cat.categories if c in present], bool(col.cat.ordered)
    return sorted(col.dropna().unique(), key=str), False


def compare_models(
    per_unit: pd.DataFrame, *, value: str = "accuracy", group: str = "model"
) -> dict[str, Any]:
    """Kruskal–Wallis over the groups' unit values and Conover's pairwise post-hoc test with
    Holm's correction (scikit-posthocs ``posthoc_conover``, as in the IMI analysis).

    Returns ``available`` (False with ``reason`` when fewer than two groups have units),
    ``kruskal`` (``H, df, p``), ``pairs`` (``a, b, p_raw, p_holm, significant``),
    ``scores`` (group -> mean), ``ordered`` (groups by score, best first), ``best``,
    ``best_significantly_better`` (best beats every other group at Holm p < 0.05), and
    ``largest`` / ``largest_significantly_better`` / ``largest_vs`` when the group column is
    an ordered Categorical (last category = largest model), else None.
    """
    for col in (value, group):
        if col not in per_unit.columns:
            raise CausalvisError(f"per-unit table has no column {col!r}")
    data = per_unit[[group, value]].copy()
    data[value] = pd.to_numeric(data[value], errors="coerce")
    data = data.dropna()
    order, meaningful = _order(data, group)
    samples = {g: data.loc[data[group] == g, value].to_numpy(dtype=float) for g in order}
    samples = {g: x for g, x in samples.items() if len(x)}
    names = list(samples)
    out: dict[str, Any] = {
        "alpha": ALPHA, "group": group, "value": value,
        "n_units": {str(g): int(len(x)) for g, x in samples.items()},
        "scores": {str(g): float(x.mean()) for g, x in samples.items()},
    }
    ranked = sorted(names, key=lambda g: -samples[g].mean())
    out["ordered"] = [str(g) for g in ranked]
    out["best"] = str(ranked[0]) if ranked else None
    if len(names) < 2:
        out.update(available=False, reason=f"needs at least two {group}s with units "
                   f"(found {len(names)})", kruskal=None, pairs=[],
                   best_significantly_better=None, largest=None,
                   largest_significantly_better=None, largest_vs=[])
        return out
    values = np.concatenate([samples[g] for g in names])
    if np.ptp(values) == 0:
        h, p = 0.0, 1.0  # all unit values equal: no evidence of any difference
    else:
        h, p = (float(v) for v in sps.kruskal(*(samples[g] for g in names)))
    out["available"] = True
    out["kruskal"] = {"H": h, "df": len(names) - 1, "p": p, "n_groups": len(names),
                      "n_units": int(len(values))}
    pairs = _conover_pairs(data, names, group, value)
    out["pairs"] = pairs
    best = ranked[0]
    best_pairs = [r for r in pairs if best in (r["a"], r["b"])]
    out["best_significantly_better"] = bool(
        all(r["significant"] for r in best_pairs)
        and all(samples[best].mean() > samples[_other(r, best)].mean() for r in best_pairs))
    if meaningful:
        largest = names[-1]
        vs = []
        for r in pairs:
            if largest not in (r["a"], r["b"]):
                continue
            other = _other(r, largest)
            diff = float(samples[largest].mean() - samples[other].mean())
            vs.append({"other": str(other), "difference": diff, "p_holm": r["p_holm"],
                       "better": bool(r["significant"] and diff > 0),
                       "worse": bool(r["significant"] and diff < 0)})
        out["largest"] = str(largest)
        out["largest_vs"] = vs
        out["largest_significantly_better"] = bool(vs and all(v["better"] for v in vs))
    else:
        out["largest"] = None
        out["largest_vs"] = []
        out["largest_significantly_better"] = None
    for r in pairs:
        r["a"], r["b"] = str(r["a"]), str(r["b"])
    return out


def _other(row: dict[str, Any], name: Any) -> Any:
    return row["b"] if row["a"] == name else row["a"]


def _conover_pairs(data: pd.DataFrame, names: list[Any], group: str,
                   value: str) -> list[dict[str, Any]]:
    """Conover–Iman pairwise p-values, raw and Holm-adjusted over all pairs."""
    import scikit_posthocs as sph

    frame = data[data[group].isin(names)].copy()
    frame[group] = frame[group].astype(object)
    if np.ptp(frame[value].to_numpy(dtype=float)) == 0:
        raw = holm = pd.DataFrame(1.0, index=names, columns=names)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            raw = sph.posthoc_conover(frame, val_col=value, group_col=group, p_adjust=None)
            holm = sph.posthoc_conover(frame, val_col=value, group_col=group, p_adjust="holm")
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            p_raw = float(raw.loc[a, b])
            p_holm = float(holm.loc[a, b])
            rows.append({"a": a, "b": b, "p_raw": p_raw, "p_holm": p_holm,
                         "significant": bool(np.isfinite(p_holm) and p_holm < ALPHA)})
    return rows


def model_labels(models: list[str]) -> dict[str, str]:
    """Readable names for the report: a ``python:/long/path/file.py:factory`` entry reads
    ``file.py:factory`` (other names, ``python:pkg.mod:factory`` included, are kept);
    where two labels would coincide both keep their full names."""
    def short(name: str) -> str:
        if not name.startswith("python:"):
            return name
        spec, sep, factory = name[len("python:"):].rpartition(":")
        if not sep or ("/" not in spec and "\\" not in spec):
            return name
        return f"{spec.replace(chr(92), '/').rsplit('/', 1)[-1]}:{factory}"

    labels = {m: short(m) for m in models}
    counts = pd.Series(list(labels.values())).value_counts()
    return {m: (lab if counts[lab] == 1 else m) for m, lab in labels.items()}


def models_section(
    main: pd.DataFrame,
    *,
    order: Sequence[str] | None = None,
    order_is_size: bool = False,
    n_boot: int = 10_000,
    ci: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """The report's ``models`` section from included main trials: per-unit table, model
    scores with CIs and Kruskal–Wallis + Conover–Holm per condition, and a plain answer to
    "is a bigger model more interpretable?". ``order`` lists the models (smallest first
    when ``order_is_size``); models not in it follow alphabetically."""
    per_unit = unit_accuracy(main, by=("condition", "model", "unit"))
    if per_unit.empty:
        return {"available": False, "reason": "no main trials with a unit"}
    present = [str(m) for m in per_unit["model"].unique()]
    listed = [m for m in (order or []) if m in present]
    models = listed + sorted(set(present) - set(listed))
    order_is_size = bool(order_is_size and listed and len(listed) == len(models))
    per_unit["model"] = pd.Categorical(per_unit["model"].astype(str), categories=models,
                                       ordered=order_is_size)
    data = main if "model" in main.columns else main.assign(model=DEFAULT_MODEL)
    data = data.assign(model=data["model"].where(data["model"].notna(), DEFAULT_MODEL))
    n_resp = per_unit["n_responses"].to_numpy()
    section: dict[str, Any] = {
        "available": True,
        "models": models,
        "labels": model_labels(models),
        "order_is_size": order_is_size,
        "n_models": len(models),
        "n_units": int(per_unit[["model", "unit"]].drop_duplicates().shape[0]),
        "responses_per_unit": {"min": int(n_resp.min()), "median": float(np.median(n_resp)),
                               "mean": float(n_resp.mean()), "max": int(n_resp.max())},
        "settings": {"n_boot": n_boot, "ci": ci, "seed": seed, "ci_method":
                     "expanded percentile bootstrap over units", "alpha": ALPHA},
        "by_condition": {},
    }
    # A model comparison is fair only on conditions every compared model was run in.
    have = per_unit.groupby("condition", observed=True)["model"].agg(
        lambda m: {str(x) for x in m})
    section["common_conditions"] = sorted((str(c) for c, ms in have.items()
                                           if ms == set(models)), key=str)  # fmt: skip
    section["models_missing"] = {str(c): sorted(set(models) - ms) for c, ms in have.items()
                                 if ms != set(models)}  # fmt: skip
    for cond in sorted(per_unit["condition"].unique(), key=str):
        pu = per_unit[per_unit["condition"] == cond]
        missing = section["models_missing"].get(str(cond), [])
        scores = model_scores(pu, n_boot=n_boot, ci=ci, seed=seed)
        resp = data[data["condition"] == cond].groupby("model", observed=True).agg(
            accuracy=("correct", "mean"), n_responses=("correct", "size"),
            n_participants=("participant_id", "nunique"))
        rows = []
        for rec in scores.to_dict("records"):
            m = str(rec["model"])
            extra = resp.loc[m].to_dict() if m in resp.index else {}
            rows.append({**rec, "model": m, "response_accuracy": extra.get("accuracy"),
                         "n_responses": int(extra.get("n_responses", 0)),
                         "n_participants": int(extra.get("n_participants", 0))})
        comparison = compare_models(pu)
        statement = comparison_statement(str(cond), rows, comparison, order_is_size)
        if missing:  # not a comparison of all models: say so, never rank across it
            comparison = {**comparison, "all_models": False, "missing_models": missing}
            statement = (f"{statement} (only {len(models) - len(missing)} of {len(models)} "
                         f"models were run in condition {cond}: {', '.join(missing)} "
                         "missing, so this is not a comparison of all models)")
        pair = dictionary_pair(models) if order_is_size else None
        if pair is not None:  # neurons vs dictionary features: answer that question
            statement, answer = dictionary_statement(
                str(cond), rows, comparison, *pair,
                baseline=str(cond) in baselines([str(c) for c in per_unit["condition"].unique()]))
            section.setdefault("dictionary", {"neurons": pair[0], "features": pair[1],
                                              "question": DICTIONARY_QUESTION, "answers": {}})
            section["dictionary"]["answers"][str(cond)] = answer
        section["by_condition"][str(cond)] = {
            "scores": rows, "comparison": comparison, "statement": statement}
    section["per_unit"] = [
        {**r, "model": str(r["model"])} for r in per_unit.to_dict("records")]
    return section


def _fmt_score(r: dict[str, Any]) -> str:
    ci = "" if not np.isfinite(r["ci_low"]) else \
        f" [{100 * r['ci_low']:.1f}, {100 * r['ci_high']:.1f}]"
    return f"{r['model']} {100 * r['score']:.1f} %{ci} ({r['n_units']} units)"


def comparison_statement(cond: str, rows: list[dict[str, Any]], comp: dict[str, Any],
               order_is_size: bool) -> str:
    """One honest sentence per condition: scores with CIs, the test, the verdict."""
    by_model = {r["model"]: r for r in rows}
    head = f"{cond}: " + "; ".join(_fmt_score(r) for r in rows) + "."
    if not comp.get("available"):
        return head + f" No comparison between models: {comp.get('reason')}."
    kw = comp["kruskal"]
    test = (f" Kruskal–Wallis over units: H = {kw['H']:.2f}, df = {kw['df']}, "
            f"p = {kw['p']:.3g}.")
    if order_is_size:
        big = comp["largest"]
        better = [v["other"] for v in comp["largest_vs"] if v["better"]]
        worse = [v["other"] for v in comp["largest_vs"] if v["worse"]]
        same = [v["other"] for v in comp["largest_vs"] if not (v["better"] or v["worse"])]
        if comp["largest_significantly_better"]:
            verdict = (f" Yes for these data: the largest model ({big}) scores significantly "
                       "higher than every smaller model (Conover, Holm-corrected p < 0.05).")
        elif worse and not better:
            verdict = (f" No: the largest model ({big}) scores significantly lower than "
                       f"{', '.join(worse)} (Conover–Holm p < 0.05).")
        else:
            parts = []
            if better:
                parts.append(f"higher than {', '.join(better)}")
            if worse:
                parts.append(f"lower than {', '.join(worse)}")
            if same:
                parts.append(f"not different from {', '.join(same)}")
            verdict = (f" Not shown that the largest model is the most interpretable: {big} "
                       "scores " + "; ".join(parts) + " (Conover–Holm at α = 0.05). A "
                       "non-significant difference is not evidence that there is none.")
        return head + test + verdict
    best = comp["best"]
    if comp["best_significantly_better"]:
        verdict = (f" The best-scoring model ({best}, {100 * by_model[best]['score']:.1f} %) "
                   "is significantly better than every other (Conover–Holm p < 0.05).")
    else:
        verdict = (f" The best-scoring model ({best}) is not significantly better than every "
                   "other (Conover–Holm); model size order unknown, so no scaling claim.")
    return head + test + verdict


DICTIONARY_QUESTION = "Are the dictionary features more understandable than the neurons?"


def dictionary_pair(models: Sequence[str]) -> tuple[str, str] | None:
    """``(neurons, features)`` when the study compares a model with ``MODEL+DICT`` (its
    layer's dictionary features, :mod:`causalvis.pipeline.multimodel`), else None."""
    if len(models) == 2 and models[1].startswith(f"{models[0]}+"):
        return models[0], models[1]
    return None


def dictionary_statement(cond: str, rows: list[dict[str, Any]], comp: dict[str, Any],
                         neurons: str, features: str, *,
                         baseline: bool = False) -> tuple[str, str]:
    """The condition's sentence and answer (``yes`` | ``no`` | ``not shown`` |
    ``baseline``) to :data:`DICTIONARY_QUESTION`: Conover–Holm between the two unit sets.
    A no-explanation baseline does not answer it: there a difference says how predictable
    the units' occlusion effects are without any explanation, the floor the explanation
    conditions are read against."""
    head = f"{cond}: " + "; ".join(_fmt_score(r) for r in rows) + "."
    if baseline:
        return (head + " Baseline without explanations: a difference here is how predictable "
                "each unit set is without any explanation, not how understandable its "
                "explanations make it; read the explanation conditions against it.",
                "baseline")
    if not comp.get("available"):
        return (head + f" {DICTIONARY_QUESTION} Not answerable: {comp.get('reason')}.",
                "not shown")
    vs = next((v for v in comp.get("largest_vs", []) if v["other"] == neurons), None)
    p = f"Conover–Holm p = {vs['p_holm']:.3g}" if vs else "no pairwise test"
    if vs and vs["better"]:
        answer, verdict = "yes", (f"Yes for these data: the features of {features} score "
                                  f"significantly higher than the neurons of {neurons} ({p}).")
    elif vs and vs["worse"]:
        answer, verdict = "no", (f"No: the features of {features} score significantly lower "
                                 f"than the neurons of {neurons} ({p}).")
    else:
        answer, verdict = "not shown", (
            f"Not shown: the features of {features} and the neurons of {neurons} do not "
            f"differ significantly ({p}); a non-significant difference is not evidence "
            "that there is none.")
    return f"{head} {DICTIONARY_QUESTION} {verdict}", answer
