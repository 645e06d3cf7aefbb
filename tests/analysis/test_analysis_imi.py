"""Import of the IMI dataset's released responses (layout of brendel-group/imi,
tools/data_analysis/comparison.ipynb, "Export Data") and `analyze --format imi`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from causalvis.analysis.imi import load_imi_csv, model_order
from causalvis.cli import main
from causalvis.errors import CausalvisError

MODELS = {"googlenet": 0.85, "resnet50": 0.75, "clip-vit_b32": 0.62}


def imi_csv(path, *, seed=0, instruction_s=None, all_upper=()):
    """A small file in the IMI export layout: per model and mode one task of 8 units (4
    layers), 5 participants per task, each with 2 practice, 8 main and 2 catch trials."""
    rng = np.random.default_rng(seed)
    rows = []
    pid = 0
    for model, acc in MODELS.items():
        for mode in ("natural", "optimized"):
            task_id = f"{model}_{mode}/task-1"
            for resp in range(5):
                pid += 1
                participant = f"P{pid:04}"
                base = {"participant_id": participant, "task_id": task_id, "task_number": 1,
                        "response_index": resp, "passed_checks": True,
                        "multi_participation": False,
                        "instruction_time_details_extracted":
                            (instruction_s or {}).get(participant, 40.0),
                        "total_response_time_details_extracted": 600.0,
                        "demo_trials_details_extracted": 1,
                        "row_variability_details": "{'n_upper_row': 5, 'n_lower_row': 5}"}
                trial = 0
                for d in range(2):  # practice: no structure appended (NaN model/layer/...)
                    rows.append({**base, "is_demo": True, "catch_trial": False,
                                 "corrected_trial_index": d - 2, "trial_index": trial,
                                 "correct": True, "confidence": 3, "rt": 2000.0,
                                 "button_pressed": d * 3, "choice": "b", "mode": np.nan,
                                 "model": np.nan, "layer": np.nan, "channel": pd.NA,
                                 "batch": pd.NA})
                    trial += 1
                for t in range(10):
                    catch = t >= 8
                    unit = t % 8
                    correct = True if catch else bool(rng.random() < acc - 0.05 * (unit % 2))
                    upper = participant in all_upper or t % 2 == 0
                    conf = int(rng.integers(1, 4))
                    rows.append({
                        **base, "is_demo": False, "catch_trial": catch,
                        "corrected_trial_index": t, "trial_index": trial, "correct": correct,
                        "confidence": conf, "rt": float(rng.integers(800, 5000)),
                        "button_pressed": (conf - 1) if upper else (conf + 2),
                        "choice": "b" if correct else "a",
                        "mode": "catch_trial" if catch else mode,
                        "model": "catch/manual" if catch else model,
                        "layer": "manual_4c" if catch else f"layer{unit // 2}",
                        "channel": 1 if catch else 10 + unit, "batch": -1 if catch else 0,
                        "trial_type": "2afc-image-confidence-response",
                        "min_query": "anonymized", "max_query": "anonymized"})
                    trial += 1
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_load_imi_maps_the_columns(tmp_path):
    df = load_imi_csv(imi_csv(tmp_path / "responses_main.csv"))
    assert len(df) == 3 * 2 * 5 * 12
    assert df["kind"].value_counts().to_dict() == {"main": 240, "practice": 60, "catch": 60}
    assert set(df["condition"]) == {"natural", "synthetic"}
    # catch and practice rows take their session's model and condition
    assert set(df["model"]) == set(MODELS)
    sess = df.groupby("session_id")
    assert (sess["model"].nunique() == 1).all() and (sess["condition"].nunique() == 1).all()
    main_rows = df[df["is_main"]]
    assert main_rows["unit"].str.fullmatch(r"layer\d:1\d").all()
    assert main_rows.groupby("model")["unit"].nunique().to_dict() == dict.fromkeys(MODELS, 8)
    assert df.loc[df["kind"] == "catch", "unit"].isna().all()
    assert set(df["side"].dropna()) == {"upper", "lower"}
    assert df["instruction_time_s"].eq(40.0).all() and df["practice_attempts"].eq(1).all()
    assert df.loc[df["kind"] == "practice", "trial_id"].isna().all()
    assert main_rows["trial_id"].str.contains("#").all()
    assert df.attrs["imi"]["dropped_multi_participation"] == 0
    assert model_order(["resnet50", "zzz", "googlenet"]) == ["googlenet", "resnet50", "zzz"]


def test_load_imi_errors_and_overrides(tmp_path):
    path = imi_csv(tmp_path / "r.csv")
    raw = pd.read_csv(path)
    raw.rename(columns={"mode": "explanation"}).to_csv(tmp_path / "renamed.csv", index=False)
    with pytest.raises(CausalvisError, match="condition.*'mode'"):
        load_imi_csv(tmp_path / "renamed.csv")
    df = load_imi_csv(tmp_path / "renamed.csv", {"condition": "explanation"})
    assert set(df["condition"]) == {"natural", "synthetic"}
    with pytest.raises(CausalvisError, match="unknown role"):
        load_imi_csv(path, {"colour": "x"})
    raw.assign(mode=raw["mode"].replace("optimized", "painted")).to_csv(tmp_path / "bad.csv",
                                                                        index=False)
    with pytest.raises(CausalvisError, match="painted"):
        load_imi_csv(tmp_path / "bad.csv")
    flawed = raw.assign(multi_participation=raw["participant_id"] == "P0001")
    flawed.to_csv(tmp_path / "all.csv", index=False)
    df = load_imi_csv(tmp_path / "all.csv")
    assert "P0001" not in set(df["participant_id"])
    assert df.attrs["imi"]["dropped_multi_participation"] == 12


def test_cli_analyze_format_imi_computes_the_models_section(tmp_path, capsys):
    path = imi_csv(tmp_path / "responses_main.csv", instruction_s={"P0003": 10.0},
                   all_upper=("P0007",))
    out = tmp_path / "report"
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", "--responses-csv", str(path), "--format", "imi", "--out", str(out),
              "--n-boot", "200", "--n-perm", "200", "--no-mixed-model"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert "models (natural)" in printed
    s = json.loads((out / "summary.json").read_text())
    crit = s["exclusions"]["criteria"]
    # IMI excludes per HIT response: the participant ids are HITs of the worker.
    [hit] = crit["instruction_time"]["participants"]  # IMI: >= 15 s
    assert hit.endswith("/P0003")
    [hit] = crit["side_variability"]["participants"]  # IMI: each row >= 5 times
    assert hit.endswith("/P0007")
    assert s["settings"]["exclusion"]["min_catch_accuracy"] == 0.8
    m = s["models"]
    assert m["models"] == ["googlenet", "resnet50", "clip-vit_b32"] and m["order_is_size"]
    for cond in ("natural", "synthetic"):
        c = m["by_condition"][cond]
        assert c["comparison"]["available"] and c["comparison"]["kruskal"]["df"] == 2
        assert len(c["comparison"]["pairs"]) == 3
        assert {r["model"]: r["n_units"] for r in c["scores"]} == dict.fromkeys(MODELS, 8)
    assert (out / "figures" / "models.png").is_file()
    assert "bigger model" in (out / "index.html").read_text()


def test_cli_format_requires_a_csv(tmp_path, capsys):
    for argv in (["analyze", str(tmp_path), "--format", "imi"],
                 ["analyze", "--responses-csv", str(tmp_path / "x.csv"), "--format", "xls"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 1
        assert "--format" in capsys.readouterr().err


def _with_hard_variant(tmp_path):
    """The IMI layout with a separate hard95 experiment of resnet50 whose HITs were taken
    by the same workers as the easy ones (workers with several HITs)."""
    raw = pd.read_csv(imi_csv(tmp_path / "easy.csv"))
    hard = raw[raw["model"].isin(["resnet50"]) | raw["task_id"].str.startswith("resnet50_")]
    hard = hard.assign(task_id=hard["task_id"].str.replace("resnet50_", "resnet50_hard95_"),
                       model=hard["model"].replace("resnet50", "resnet50_hard95"))
    both = pd.concat([raw, hard], ignore_index=True)
    # One worker fails the authors' checks in the hard HIT only.
    failing = both["task_id"].str.startswith("resnet50_hard95_natural") & (
        both["participant_id"] == "P0011")
    both.loc[failing, "passed_checks"] = False
    path = tmp_path / "responses_all.csv"
    both.to_csv(path, index=False)
    return path


def test_imi_difficulty_is_split_and_one_level_is_analysed(tmp_path):
    from causalvis.analysis.report import select_difficulty

    df = load_imi_csv(_with_hard_variant(tmp_path))
    assert set(df["difficulty"]) == {"easy", "hard95"}
    assert set(df["model"]) == set(MODELS)  # the suffix is not a model
    assert df.attrs["imi"]["difficulties"] == ["easy", "hard95"]
    easy = select_difficulty(df, None)
    assert set(easy["difficulty"]) == {"easy"}
    assert easy.attrs["difficulty"]["rows_left_out"] == int((df["difficulty"] == "hard95").sum())
    hard = select_difficulty(df, "hard95")
    assert set(hard["model"]) == {"resnet50"} and len(hard) == 2 * 5 * 12
    with pytest.raises(CausalvisError, match="hard99.*levels: easy, hard95"):
        select_difficulty(df, "hard99")


def test_imi_excludes_per_hit_and_honours_passed_checks(tmp_path):
    from causalvis.analysis.report import analyze_csv

    path = _with_hard_variant(tmp_path)
    df = load_imi_csv(path)
    hits = df[df["worker_id"] == "P0011"]["participant_id"].unique()
    assert len(hits) == 2  # one worker, two HITs: judged separately
    summary, _ = analyze_csv(path, {}, out=tmp_path / "hard", fmt="imi",
                             options=_opts(difficulty="hard95"))
    crit = summary["exclusions"]["criteria"]["passed_checks"]
    assert crit["available"] and crit["n_excluded"] == 1
    [hit] = crit["participants"]
    assert hit.startswith("resnet50_hard95_natural/") and hit.endswith("/P0011")
    assert summary["data"]["difficulty"]["analysed"] == "hard95"
    easy, _ = analyze_csv(path, {}, out=tmp_path / "easy", fmt="imi", options=_opts())
    # The same worker's easy HIT passed its checks and is included.
    assert easy["exclusions"]["criteria"]["passed_checks"]["n_excluded"] == 0
    assert any("Difficulty analysed: easy" in line for line in easy["methods"]["design"])


def test_models_are_compared_only_where_every_model_ran(tmp_path):
    from causalvis.analysis.report import analyze_csv

    raw = pd.read_csv(imi_csv(tmp_path / "r.csv"))
    raw = raw[~raw["task_id"].str.startswith("googlenet_optimized")]
    raw.to_csv(tmp_path / "partial.csv", index=False)
    summary, _ = analyze_csv(tmp_path / "partial.csv", {}, out=tmp_path / "rep", fmt="imi",
                             options=_opts())
    m = summary["models"]
    assert m["common_conditions"] == ["natural"]
    assert m["models_missing"] == {"synthetic": ["googlenet"]}
    syn = m["by_condition"]["synthetic"]
    assert syn["comparison"]["all_models"] is False
    assert "not a comparison of all models" in syn["statement"]
    assert "all_models" not in m["by_condition"]["natural"]["comparison"]


def _opts(**kw):
    from causalvis.analysis.report import AnalysisOptions

    return AnalysisOptions(n_boot=200, n_perm=200, mixed_model=False, model_boot=200, **kw)
