"""MIS (machine interpretability score) for the 2-AFC task: the arithmetic by hand, the
scan-sampled per-unit score on a tiny real study (lite0, sample images, lite1 as the
perceptual net), its shuffled control, the trial-level observer in ``observe`` and the
multi-model comparison."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pandas as pd
import pytest

from causalvis.cli import main
from causalvis.config import preset
from causalvis.errors import CausalvisError
from causalvis.observers.mis import (
    MisObserver,
    MisSettings,
    TwoAfcTrial,
    imi_tasks,
    load_two_afc_trials,
    make_embedder,
    mis_delta,
    mis_for_models,
    p_correct,
    paper_tasks,
    set_similarity,
    shuffled_tasks,
    study_mis,
    task_deltas,
)
from causalvis.observers.observe import observe
from causalvis.observers.trials import AssetReader
from causalvis.pipeline.build import StageContext, build
from causalvis.store.assets import encode_png, write_asset
from causalvis.store.layout import StudyPaths

K = 3
N_TASKS = 5  # IMI scheme: references span the top N_TASKS x K, queries just below


# -- arithmetic ------------------------------------------------------------------------------

def test_delta_and_p_correct_by_hand():
    d = mis_delta(np.array([0.8, 0.2]), np.array([0.3, 0.5]), np.array([0.4, 0.1]),
                  np.array([0.6, 0.1]))
    # (0.8 - 0.3) - (0.4 - 0.6) = 0.7 ; (0.2 - 0.5) - (0.1 - 0.1) = -0.3
    np.testing.assert_allclose(d, [0.7, -0.3])
    np.testing.assert_allclose(p_correct(d), [1.0, 0.0])
    np.testing.assert_allclose(p_correct(np.array([0.0])), [0.5])
    np.testing.assert_allclose(p_correct(d, alpha=2.0),
                               [1 / (1 + np.exp(-1.4)), 1 / (1 + np.exp(0.6))])


def test_task_deltas_from_embeddings_by_hand():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    diag = np.array([np.sqrt(0.5), np.sqrt(0.5)])
    q_plus = np.stack([e1, diag])             # task 0: q+ = e1 ; task 1: q+ on the diagonal
    q_minus = np.stack([e2, e2])
    e_plus = np.stack([e1, diag])             # shared explanation sets [K, D]
    e_minus = np.stack([e2, e2])
    np.testing.assert_allclose(set_similarity(q_plus, e_plus),
                               [(1 + np.sqrt(0.5)) / 2, (np.sqrt(0.5) + 1) / 2])
    # task 0: s(q+,E+) = .8536, s(q+,E-) = 0, s(q-,E+) = .3536, s(q-,E-) = 1
    expected0 = (1 + np.sqrt(0.5)) / 2 - 0 - (np.sqrt(0.5) / 2 - 1)
    # task 1: s(q+,E+) = .8536, s(q+,E-) = .7071, same q- as task 0
    expected1 = (1 + np.sqrt(0.5)) / 2 - np.sqrt(0.5) - (np.sqrt(0.5) / 2 - 1)
    np.testing.assert_allclose(task_deltas(q_plus, q_minus, e_plus, e_minus),
                               [expected0, expected1])
    # per-task explanation sets [T, K, D] give the same numbers
    np.testing.assert_allclose(
        task_deltas(q_plus, q_minus, np.stack([e_plus, e_plus]), np.stack([e_minus, e_minus])),
        [expected0, expected1])


def test_task_sampling_in_ranks():
    n = 200
    tasks = imi_tasks(n, k=4, n_tasks=6, difficulty="easy", seed=[1, 2])
    plus = sorted(r for t in tasks for r in t.explanations_plus)
    minus = sorted(r for t in tasks for r in t.explanations_minus)
    assert plus == list(range(24))  # IMI: one per bin of the top n_tasks x k, each once
    assert minus == list(range(n - 24, n))
    for t in tasks:  # one explanation from each rank bin of 6
        assert sorted(r // 6 for r in t.explanations_plus) == [0, 1, 2, 3]
        assert 24 <= t.query_plus < 30 and n - 31 < t.query_minus <= n - 25
    assert len({t.explanations_plus for t in tasks}) == 6  # differ between tasks
    assert tasks == imi_tasks(n, k=4, n_tasks=6, difficulty="easy", seed=[1, 2])
    paper = paper_tasks(n, k=4, n_tasks=50, quantile=0.1, seed=3)
    for t in paper:  # the query is the least extreme of the k + 1 drawn in the top 10 %
        assert max(t.explanations_plus) < t.query_plus < 20
        assert n - 20 <= t.query_minus < min(t.explanations_minus)
    assert paper != paper_tasks(n, k=4, n_tasks=50, quantile=0.1, seed=4)
    shuffled = shuffled_tasks(paper, n, seed=0)
    assert [t.query_plus for t in shuffled] == [t.query_plus for t in paper]
    spread = np.concatenate([t.explanations_plus + t.explanations_minus for t in shuffled])
    assert spread.min() < 40 and spread.max() > 160  # random ranks, not the extremes
    with pytest.raises(CausalvisError, match="quantile"):
        paper_tasks(n, k=30, n_tasks=2, quantile=0.1, seed=0)


# -- a tiny real study -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def mis_study(tmp_path_factory):
    """lite0 on 80 sample images, two main units in each of two layers (scan + units)."""
    root = tmp_path_factory.mktemp("mis") / "study"
    root.mkdir()
    cfg = preset("quick", task="two_afc")
    cfg.name = "mis-test"
    cfg.images.max_images = 80
    cfg.scan.shard_size = 40
    cfg.units.layers = ["blocks.2.1", "blocks.4.2"]
    cfg.units.per_layer = 2
    cfg.units.n_practice_units = 0
    cfg.exemplars.n_references = K
    cfg.exemplars.n_min_references = K
    cfg.conditions.n_references = K
    cfg.save(StudyPaths(root).config)
    build(root, ["scan", "units"], progress=False)
    return root


@pytest.fixture(scope="module")
def embedder():
    return make_embedder("lite1")


@pytest.fixture(scope="module")
def natural(mis_study, embedder):
    return study_mis(mis_study, embedder=embedder, settings=MisSettings(n_tasks=N_TASKS))


def test_natural_explanations_beat_chance(natural):
    assert len(natural) == 4 and set(natural["condition"]) == {"natural"}
    assert (natural["n_tasks"] == N_TASKS).all()
    assert natural["mis"].mean() > 0.7
    # uncalibrated: MIS is the share of tasks solved
    np.testing.assert_allclose(natural["mis"], natural["hit_rate"])


def test_shuffled_explanations_are_at_chance(mis_study, embedder, natural):
    # E+ and E- are exchangeable here, so P(delta > 0) = 1/2 exactly; 8 seeds x 4 x 5 tasks
    shuffled = pd.concat([
        study_mis(mis_study, embedder=embedder,
                  settings=MisSettings(n_tasks=N_TASKS, shuffled=True, seed=seed))
        for seed in range(8)])
    assert abs(shuffled["mis"].mean() - 0.5) < 0.1
    assert natural["mis"].mean() - shuffled["mis"].mean() > 0.15


def test_mis_is_deterministic_and_alpha_grades_it(mis_study, embedder, natural):
    again = study_mis(mis_study, embedder=embedder, settings=MisSettings(n_tasks=N_TASKS))
    pd.testing.assert_frame_equal(again, natural)
    graded = study_mis(mis_study, embedder=embedder,
                       settings=MisSettings(n_tasks=N_TASKS, alpha=3.0))
    np.testing.assert_allclose(graded["mean_delta"], natural["mean_delta"])
    assert ((graded["mis"] > 0) & (graded["mis"] < 1)).all()
    assert not np.allclose(graded["mis"], natural["mis"])
    other = study_mis(mis_study, embedder=embedder,
                      settings=MisSettings(n_tasks=N_TASKS, scheme="mis", quantile=0.1))
    assert len(other) == 4 and other["mis"].between(0, 1).all()


def test_synthetic_explanations_are_read_from_the_reference_folder(mis_study, embedder,
                                                                   natural, tmp_path):
    """Feature visualizations identical to the k most / least activating images give the
    natural MIS exactly (imi scheme: the natural explanations are those k images)."""
    from causalvis.config import StudyConfig
    from causalvis.stimuli.exemplars import rank_order
    from causalvis.store.activations import ActivationTable
    from causalvis.store.units import read_units

    study = tmp_path / "study"
    shutil.copytree(mis_study, study)
    paths = StudyPaths(study)
    ctx = StageContext(paths, StudyConfig.load(paths.config), progress=False)
    table = ActivationTable(paths)
    units = read_units(paths, role="main")
    for unit in units[:3]:  # the fourth unit has no feature visualizations: skipped
        order = rank_order(table.column(unit.layer, unit.channel))
        folder = paths.reference_dir("synthetic", unit.key)
        folder.mkdir(parents=True)
        for i in range(K):
            (folder / f"{i}.png").write_bytes(encode_png(ctx.source.load(table.ids[order[i]])))
            (folder / f"min-{i}.png").write_bytes(
                encode_png(ctx.source.load(table.ids[order[-1 - i]])))
    res = study_mis(study, embedder=embedder, settings=MisSettings(n_tasks=N_TASKS))
    synth = res[res["condition"] == "synthetic"].set_index("unit")
    assert list(synth.index) == [u.spec for u in units[:3]]  # LAYER:CHANNEL, as in trials.csv
    # The same tasks' queries against the FIXED feature-visualization sets, by hand.
    source = ctx.source
    for unit in units[:3]:
        order = rank_order(table.column(unit.layer, unit.channel))
        tasks = imi_tasks(len(order), k=K, n_tasks=N_TASKS, seed=[0, unit.seed])

        def emb(positions, order=order):
            ids = [table.ids[order[i]] for i in positions]
            return embedder.embed_lazy([f"hand:{i}" for i in ids], lambda key: np.asarray(
                source.load(key[5:]).convert("RGB"), np.uint8))
        e_plus, e_minus = emb(range(K)), emb([len(order) - 1 - i for i in range(K)])
        delta = task_deltas(emb([t.query_plus for t in tasks]),
                            emb([t.query_minus for t in tasks]), e_plus, e_minus)
        assert synth.loc[unit.spec, "mean_delta"] == pytest.approx(delta.mean(), abs=1e-6)


def test_study_mis_errors(tmp_path, embedder):
    with pytest.raises(CausalvisError, match="no study.toml"):
        study_mis(tmp_path, embedder=embedder)
    preset("quick", task="two_afc").save(StudyPaths(tmp_path).config)
    with pytest.raises(CausalvisError, match="--stage scan"):
        study_mis(tmp_path, embedder=embedder)
    with pytest.raises(CausalvisError, match="scheme"):
        MisSettings(scheme="dreamsim")


# -- the trial-level observer in ``observe`` ------------------------------------------------------

COLUMNS = ["trial_id", "base_trial_id", "kind", "condition", "unit", "layer", "channel",
           "image_set", "query_asset", "option_a_asset", "option_b_asset", "reference_assets",
           "min_reference_assets", "box_a", "box_b", "act_base", "act_a", "act_b", "correct",
           "rel_diff", "model"]


def _two_afc_study(mis_study, tmp_path):
    """A copy of the tiny study with a served two_afc trial table: per unit and image set
    b, max query = rank K + 1 + b, min query = bottom rank K + 1 + b, references = the K
    most / least activating images; the max query is option a on even trials."""
    from causalvis.config import StudyConfig
    from causalvis.stimuli.exemplars import rank_order
    from causalvis.store.activations import ActivationTable
    from causalvis.store.units import read_units

    study = tmp_path / "study"
    shutil.copytree(mis_study, study)
    paths = StudyPaths(study)
    ctx = StageContext(paths, StudyConfig.load(paths.config), progress=False)
    table = ActivationTable(paths)

    def asset(pos, order):
        return write_asset(paths, np.asarray(ctx.source.load(table.ids[order[pos]])))

    rows = []
    for unit in read_units(paths, role="main"):
        order = rank_order(table.column(unit.layer, unit.channel))
        refs = " ".join(asset(p, order) for p in range(K))
        mins = " ".join(asset(-1 - p, order) for p in range(K))
        for b in range(2):
            i = len(rows)
            qmax, qmin = asset(K + b, order), asset(-1 - K - b, order)
            a, bb = (qmax, qmin) if i % 2 == 0 else (qmin, qmax)
            rows.append({
                "trial_id": f"t{i:03d}", "base_trial_id": f"t{i:03d}", "kind": "main",
                "condition": "natural", "unit": unit.spec, "layer": unit.layer,
                "channel": unit.channel, "image_set": b, "query_asset": "",
                "option_a_asset": a, "option_b_asset": bb, "reference_assets": refs,
                "min_reference_assets": mins, "box_a": "", "box_b": "", "act_base": "",
                "act_a": "", "act_b": "", "correct": "a" if i % 2 == 0 else "b",
                "rel_diff": 0.9, "model": "lite0",
            })
    with paths.trials.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return study


def test_mis_observer_is_oriented_and_blind_to_truth(mis_study, embedder, tmp_path):
    study = _two_afc_study(mis_study, tmp_path)
    trials = load_two_afc_trials(StudyPaths(study).trials)
    assert len(trials) == 8 and trials[0].references and trials[0].min_references
    reader = AssetReader(StudyPaths(study).bundle)
    obs = MisObserver(embedder)
    d = obs.deltas(trials, reader)
    t = trials[0]
    swapped = TwoAfcTrial(t.trial_id, "main", t.condition, t.unit, t.option_b, t.option_a,
                          t.references, t.min_references, correct="b")
    flipped_truth = TwoAfcTrial(t.trial_id, "main", t.condition, t.unit, t.option_a,
                                t.option_b, t.references, t.min_references, correct="b")
    no_min = TwoAfcTrial("x", "main", t.condition, t.unit, t.option_a, t.option_b,
                         t.references, ())
    d2 = obs.deltas([swapped, flipped_truth, no_min], reader)
    assert d2[0] == pytest.approx(-d[0]) and d2[1] == pytest.approx(d[0])
    assert np.isnan(d2[2])


@pytest.fixture
def cached_embedder(monkeypatch, embedder):
    """``observe`` builds its own PerceptualEmbedder (lite1): hand it the module's one, so
    images embedded by earlier tests are not embedded again (keys are content hashes and
    sample ids, identical in every copy of the study)."""
    from causalvis.observers import reference

    monkeypatch.setattr(reference, "PerceptualEmbedder", lambda net: embedder)
    return embedder


def test_observe_two_afc_study(mis_study, tmp_path, capsys, cached_embedder):
    study = _two_afc_study(mis_study, tmp_path)
    res = observe(study, n_boot=200, mis_tasks=10)
    summary = json.loads((StudyPaths(study).report / "observers.json").read_text())
    assert summary["task"] == "two_afc" and list(summary["observers"]) == ["mis"]
    entry = summary["observers"]["mis"]
    assert entry["calibrated"] is False
    row = entry["conditions"]["natural"]
    assert row["n_trials"] == 8 and row["n_units"] == 4 and row["accuracy"] >= 0.75
    assert len(entry["per_unit"]["natural"]) == 4
    assert set(res.decisions["choice"]) <= {"a", "b"}
    mis = summary["mis"]
    assert mis["available"] is True and mis["perceptual"]["model"] == "lite1"
    assert mis["alpha_source"].startswith("none")
    score = mis["summary"]["natural"]["scores"][0]
    assert score["model"] == "lite0" and score["n_units"] == 4
    assert score["ci_low"] <= score["score"] <= score["ci_high"]
    assert "comparison" not in mis["summary"]["natural"]
    with pytest.raises(CausalvisError, match="does not apply to task 'two_afc'"):
        observe(study, ["center"])
    with pytest.raises(SystemExit) as exc:
        main(["observe", str(study), "--mis-tasks", "5"])
    assert exc.value.code == 0
    assert "scan MIS lite0" in capsys.readouterr().out


def test_observe_two_afc_calibrates_on_humans(mis_study, tmp_path, cached_embedder):
    study = _two_afc_study(mis_study, tmp_path)
    trials = pd.read_csv(StudyPaths(study).trials, dtype=str)
    rows = []
    for p in range(10):
        for j, t in trials.iterrows():
            ok = p < (9 if j % 4 else 6)  # 90 % / 60 % correct
            rows.append({"participant_id": f"p{p}", "condition": t["condition"],
                         "trial_id": t["trial_id"], "kind": "main", "correct": ok,
                         "choice": t["correct"] if ok else ("b" if t["correct"] == "a" else "a")})
    csv_path = tmp_path / "humans.csv"
    pd.DataFrame(rows).to_csv(csv_path, index=False)
    res = observe(study, responses_csv=csv_path, n_boot=200, mis_tasks=10)
    entry = res.summary["observers"]["mis"]
    assert entry["calibrated"] is True and entry["alpha_n_responses"] == 80
    mis = res.summary["mis"]
    assert mis["settings"]["alpha"] == pytest.approx(entry["alpha"])
    assert mis["alpha_source"].startswith("fitted")
    assert all(0 < r["mis"] < 1 for r in mis["per_unit"])  # graded, not hard decisions
    assert res.summary["human_comparison"]["mis"]["all"]["n_responses"] == 80


def test_observe_multi_model_study(mis_study, tmp_path, monkeypatch, embedder):
    """A parent study with models/<name>/ sub-studies: one perceptual net that is none of
    the compared models (lite2 for lite0 + lite1), unit labels <model>/<unit>, and the
    per-unit MIS compared between the models."""
    from causalvis.observers import reference

    requested = []
    monkeypatch.setattr(reference, "PerceptualEmbedder",
                        lambda net: requested.append(net.name) or embedder)
    parent = _two_afc_study(mis_study, tmp_path)
    paths = StudyPaths(parent)
    cfg = preset("quick", task="two_afc", models=["lite0", "lite1"])
    cfg.save(paths.config)
    for m in cfg.models:  # the same scanned units stand in for both models' sub-studies
        shutil.copytree(mis_study, paths.root / "models" / m)
    trials = pd.read_csv(paths.trials, dtype=str, keep_default_na=False)
    trials["model"] = ["lite0"] * 4 + ["lite1"] * 4
    trials.to_csv(paths.trials, index=False)
    res = observe(parent, n_boot=100, mis_tasks=5)
    assert requested == ["lite2"]
    units = set(res.decisions["unit"])
    assert len(units) == 4 and all(u.split("/")[0] in {"lite0", "lite1"} for u in units)
    mis = res.summary["mis"]
    assert {r["model"] for r in mis["per_unit"]} == {"lite0", "lite1"}
    natural = mis["summary"]["natural"]
    assert natural["comparison"]["kruskal"]["p"] == pytest.approx(1.0)
    # models listed smallest first: the verdict is about the largest one
    assert natural["comparison"]["largest"] == "lite1"
    assert "Not shown that the largest model" in natural["statement"]


def test_observe_refuses_mis_on_causal_occlusion(mixed_study):
    with pytest.raises(CausalvisError, match="does not apply to task 'causal_occlusion'"):
        observe(mixed_study, ["mis"])


def test_load_two_afc_trials_errors(mixed_study):
    with pytest.raises(CausalvisError, match="min_reference_assets"):
        load_two_afc_trials(StudyPaths(mixed_study).trials)


# -- several models ----------------------------------------------------------------------------

def test_mis_for_models_compares_with_one_perceptual_net(mis_study, embedder, natural):
    res = mis_for_models({"small": mis_study, "large": mis_study}, embedder=embedder,
                         settings=MisSettings(n_tasks=N_TASKS), n_boot=200,
                         order_is_size=True)
    assert res["perceptual"]["model"] == "lite1" and res["perceptual"]["is_compared"] is False
    per_unit = pd.DataFrame(res["per_unit"])
    assert list(per_unit["model"].unique()) == ["small", "large"] and len(per_unit) == 8
    summary = res["summary"]["natural"]
    scores = {r["model"]: r for r in summary["scores"]}
    assert scores["small"]["score"] == pytest.approx(natural["mis"].mean())
    assert scores["large"]["score"] == pytest.approx(natural["mis"].mean())
    comp = summary["comparison"]
    assert comp["available"] and comp["kruskal"]["df"] == 1
    assert comp["kruskal"]["p"] == pytest.approx(1.0)  # the same units twice
    assert comp["largest"] == "large" and comp["largest_significantly_better"] is False
    with pytest.raises(CausalvisError, match="no study folders"):
        mis_for_models({})


def test_similarity_normalises_embeddings_and_refuses_degenerate_ones():
    from causalvis.observers.mis import set_similarity

    q = np.array([[3.0, 4.0], [0.0, 2.0]])
    e = np.array([[1.0, 0.0], [0.0, 10.0]])
    # cosine, whatever the scale: q0 = (.6, .8), q1 = (0, 1)
    np.testing.assert_allclose(set_similarity(q, e), [(0.6 + 0.8) / 2, (0.0 + 1.0) / 2])
    np.testing.assert_allclose(set_similarity(7 * q, 0.1 * e), set_similarity(q, e))
    with pytest.raises(CausalvisError, match="zero norm"):
        set_similarity(np.zeros((1, 2)), e)
    with pytest.raises(CausalvisError, match="NaN"):
        set_similarity(q, np.array([[np.nan, 1.0]]))


def test_any_quantile_that_leaves_enough_images():
    from causalvis.observers.mis import MisSettings

    for quantile in (0.01, 0.033, 0.2, 0.5):  # not a fixed menu
        tasks = paper_tasks(2000, k=4, n_tasks=5, quantile=quantile, seed=0)
        pool = int(np.ceil(2000 * quantile))
        assert all(max(t.explanations_plus) < t.query_plus < pool for t in tasks)
    with pytest.raises(CausalvisError, match=r"leaves 2 per side.*quantile >= 0\.025.*>= 500"):
        paper_tasks(200, k=4, n_tasks=5, quantile=0.01, seed=0)
    for bad in (0.0, 0.6, -1):
        with pytest.raises(CausalvisError, match=r"must be in \(0, 0\.5\]"):
            MisSettings(quantile=bad)


def test_a_small_scan_gets_fewer_imi_tasks_not_an_error(caplog):
    from causalvis.observers.mis import _imi_task_count

    # IMI: n tasks use n x k references per side plus a window of n: 2 n (k + 1) <= 96
    assert _imi_task_count(96, 3, 20, "easy", "u:1") == 12
    assert "allow 12 IMI tasks" in caplog.text
    assert _imi_task_count(2000, 3, 20, "easy", "u:1") == 20
    with pytest.raises(CausalvisError, match="too few for one IMI task"):
        _imi_task_count(6, 3, 20, "easy", "u:1")
