"""Model comparison (IMI analysis): per-unit accuracy, scores with unit-bootstrap CIs,
Kruskal–Wallis + Conover–Holm (checked against scipy and the textbook formulas), the
report's models section, and IMI's side-variability exclusion."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from causalvis.analysis.load import canonicalize
from causalvis.analysis.models import compare_models, model_scores, unit_accuracy
from causalvis.analysis.report import AnalysisOptions, analyze_frame, write_report
from causalvis.analysis.stats import holm
from causalvis.config import ExclusionConfig
from causalvis.errors import CausalvisError
from causalvis.responses.exclusion import apply_exclusions


def _responses(acc: dict[str, float], *, n_units=10, n_resp=12, conditions=("natural",),
               seed=0) -> pd.DataFrame:
    """2-AFC responses: unit accuracies spread around each model's mean; 4 participants."""
    rng = np.random.default_rng(seed)
    rows = []
    for cond in conditions:
        for model, mu in acc.items():
            for u in range(n_units):
                p_unit = float(np.clip(mu + rng.normal(0, 0.08), 0.05, 0.99))
                for r in range(n_resp):
                    rows.append({"participant_id": f"{model}-{cond}-p{r % 4}",
                                 "condition": cond, "model": model, "unit": f"L{u % 3}:{u}",
                                 "correct": bool(rng.random() < p_unit), "kind": "main",
                                 "side": "left" if rng.random() < 0.5 else "right",
                                 "confidence": 1 + r % 3, "rt": 1500.0 + r})
            for p in range(4):  # one catch trial per participant, all passed
                rows.append({"participant_id": f"{model}-{cond}-p{p}", "condition": cond,
                             "model": model, "unit": None, "correct": True, "kind": "catch",
                             "side": "left", "confidence": 3, "rt": 900.0})
    return canonicalize(pd.DataFrame(rows), {})


def test_unit_accuracy_means_main_trials_per_model_and_unit():
    df = pd.DataFrame({
        "model": ["a", "a", "a", "b", "b", "a"],
        "unit": ["u1", "u1", "u2", "u1", "u1", "u1"],
        "correct": [True, False, True, True, True, False],
        "is_main": [True, True, True, True, True, False],  # last row: a catch trial
    })
    out = unit_accuracy(df)
    assert list(out.columns) == ["model", "unit", "accuracy", "n_responses"]
    got = {(r.model, r.unit): (r.accuracy, r.n_responses) for r in out.itertuples()}
    assert got == {("a", "u1"): (0.5, 2), ("a", "u2"): (1.0, 1), ("b", "u1"): (1.0, 2)}
    # no model column: one model called "model"; unit built from layer:channel
    single = unit_accuracy(pd.DataFrame({"layer": ["x", "x"], "channel": [3, 3],
                                         "correct": [1, 0]}))
    assert single.to_dict("records") == [{"model": "model", "unit": "x:3", "accuracy": 0.5,
                                          "n_responses": 2}]
    other = unit_accuracy(df.assign(conf=[1, 2, 3, 3, 1, 9]), value="conf")
    assert "conf" in other.columns and "accuracy" not in other.columns
    with pytest.raises(CausalvisError, match="unit"):
        unit_accuracy(pd.DataFrame({"correct": [1]}))


def test_model_scores_bootstrap_over_units_is_deterministic_and_calibrated():
    rng = np.random.default_rng(3)
    per_unit = pd.DataFrame({"model": np.repeat(["a", "b"], 40),
                             "unit": [f"u{i}" for i in range(80)],
                             "accuracy": np.r_[rng.normal(0.7, 0.1, 40), np.full(40, 0.9)]})
    s1 = model_scores(per_unit, n_boot=4000, seed=5)
    s2 = model_scores(per_unit, n_boot=4000, seed=5)
    pd.testing.assert_frame_equal(s1, s2)
    a = s1.set_index("model").loc["a"]
    x = per_unit.loc[per_unit.model == "a", "accuracy"].to_numpy()
    assert a.score == pytest.approx(x.mean()) and a.n_units == 40
    half = 1.96 * x.std(ddof=1) / np.sqrt(40)  # normal approximation of the 95 % interval
    assert a.ci_low == pytest.approx(x.mean() - half, abs=0.25 * half)
    assert a.ci_high == pytest.approx(x.mean() + half, abs=0.25 * half)
    b = s1.set_index("model").loc["b"]
    assert b.ci_low == pytest.approx(0.9) and b.ci_high == pytest.approx(0.9)  # no spread
    assert not s1.equals(model_scores(per_unit, n_boot=4000, seed=6))


def _conover_by_hand(groups: list[np.ndarray]) -> dict[tuple[int, int], float]:
    """Conover–Iman (1979) pairwise t test on pooled ranks, with the tie-corrected H."""
    x = np.concatenate(groups)
    n, k = len(x), len(groups)
    ranks = sps.rankdata(x)
    sizes = [len(g) for g in groups]
    bounds = np.cumsum([0, *sizes])
    rbar = [ranks[bounds[i]:bounds[i + 1]].mean() for i in range(k)]
    s2 = (np.sum(ranks ** 2) - n * (n + 1) ** 2 / 4) / (n - 1)
    h = sps.kruskal(*groups).statistic  # tie-corrected
    out = {}
    for i, j in combinations(range(k), 2):
        t = abs(rbar[i] - rbar[j]) / np.sqrt(
            s2 * (n - 1 - h) / (n - k) * (1 / sizes[i] + 1 / sizes[j]))
        out[(i, j)] = float(2 * sps.t.sf(t, n - k))
    return out


def test_compare_models_matches_scipy_and_the_conover_formula():
    groups = [np.array([0.5, 0.6, 0.6, 0.7, 0.55]), np.array([0.7, 0.8, 0.75, 0.6]),
              np.array([0.9, 0.95, 0.85, 1.0, 0.9, 0.8])]
    names = ["small", "medium", "large"]
    per_unit = pd.DataFrame({"model": np.repeat(names, [len(g) for g in groups]),
                             "accuracy": np.concatenate(groups)})
    per_unit["model"] = pd.Categorical(per_unit["model"], categories=names, ordered=True)
    res = compare_models(per_unit)
    kw = sps.kruskal(*groups)
    assert res["kruskal"]["H"] == pytest.approx(kw.statistic)
    assert res["kruskal"]["p"] == pytest.approx(kw.pvalue) and res["kruskal"]["df"] == 2
    hand = _conover_by_hand(groups)
    raw = {(names.index(r["a"]), names.index(r["b"])): r["p_raw"] for r in res["pairs"]}
    for key, p in hand.items():
        assert raw[key] == pytest.approx(p, rel=1e-9)
    keys = sorted(hand)
    expected_holm = holm(np.array([hand[k] for k in keys]))
    got_holm = [next(r["p_holm"] for r in res["pairs"]
                     if (names.index(r["a"]), names.index(r["b"])) == k) for k in keys]
    assert got_holm == pytest.approx(list(expected_holm))
    assert res["ordered"] == ["large", "medium", "small"] and res["best"] == "large"
    assert res["largest"] == "large"
    sig_small = next(r for r in res["pairs"] if {r["a"], r["b"]} == {"small", "large"})
    assert sig_small["significant"]
    assert res["largest_significantly_better"] == all(v["better"] for v in res["largest_vs"])
    # unordered models: no claim about size
    plain = compare_models(per_unit.assign(model=per_unit["model"].astype(str)))
    assert plain["largest"] is None and plain["largest_significantly_better"] is None
    one = compare_models(per_unit[per_unit["model"] == "small"])
    assert one["available"] is False and "two" in one["reason"]


def test_report_models_section_answers_the_scaling_question(tmp_path):
    df = _responses({"lite0": 0.65, "lite1": 0.7, "lite2": 0.92},
                    conditions=("natural", "synthetic"))
    opt = AnalysisOptions(n_boot=200, n_perm=200, mixed_model=False, model_boot=2000,
                          model_order=("lite0", "lite1", "lite2"), model_order_is_size=True)
    s = analyze_frame(df, options=opt)
    m = s["models"]
    assert m["available"] and m["models"] == ["lite0", "lite1", "lite2"] and m["order_is_size"]
    assert m["n_units"] == 30 and m["responses_per_unit"]["min"] == 12
    for cond in ("natural", "synthetic"):
        c = m["by_condition"][cond]
        assert [r["model"] for r in c["scores"]] == ["lite0", "lite1", "lite2"]
        assert all(r["ci_low"] <= r["score"] <= r["ci_high"] and r["n_units"] == 10
                   for r in c["scores"])
        assert c["comparison"]["kruskal"]["p"] < 0.01
        assert c["comparison"]["largest"] == "lite2"
        assert "Kruskal–Wallis" in c["statement"] and "lite2" in c["statement"]
    assert len(m["per_unit"]) == 60
    page = write_report(s, tmp_path / "r")
    assert (tmp_path / "r" / "figures" / "models.png").is_file()
    assert (tmp_path / "r" / "figures" / "models.pdf").is_file()
    html = page.read_text()
    assert "is a bigger model more interpretable?" in html and "p Holm" in html
    json.loads((tmp_path / "r" / "summary.json").read_text())


def test_single_model_occlusion_keeps_its_report_and_two_afc_gets_one_model():
    df = _responses({"m": 0.7}).drop(columns=["model"])
    opt = AnalysisOptions(n_boot=200, n_perm=200, mixed_model=False, model_boot=500)
    assert "models" not in analyze_frame(df, options=opt)
    s = analyze_frame(df, options=opt, task="two_afc")
    m = s["models"]
    assert m["models"] == ["model"] and m["by_condition"]["natural"]["comparison"][
        "available"] is False
    assert "No comparison between models" in m["by_condition"]["natural"]["statement"]


def test_side_variability_exclusion_is_imis_row_check():
    rows = []
    for pid, n_left in (("ok", 10), ("biased", 3), ("one", 0)):
        for i in range(20):
            rows.append({"participant_id": pid, "condition": "natural", "correct": True,
                         "side": "upper" if i < n_left else "lower"})
    df = canonicalize(pd.DataFrame(rows), {})
    off = apply_exclusions(df, ExclusionConfig())
    assert "side_variability" not in off.criteria and off.excluded == ["one"]
    on = apply_exclusions(df, ExclusionConfig(), min_side_choices=5)
    crit = on.criteria["side_variability"]
    assert crit["available"] and crit["participants"] == ["biased", "one"]
    assert on.per_participant.loc["biased", "n_rarer_side"] == 3
    none = apply_exclusions(df.drop(columns=["side"]), ExclusionConfig(), min_side_choices=5)
    assert none.criteria["side_variability"]["available"] is False
