"""Simulated participants against the real ``causalvis serve`` app (uvicorn on 127.0.0.1):
their own accuracy equals what the analysis computes from the server's export."""

from __future__ import annotations

import io
from contextlib import contextmanager

import httpx
import numpy as np
import pandas as pd
import pytest

from causalvis.cli import main
from causalvis.config import StudyConfig
from causalvis.observers.simulate import SimSettings, Strategy, build_strategy, simulate
from causalvis.server.run import free_port

from .conftest import TrialSpec, write_study

ADMIN = "observer-test-admin-token"


def _study(tmp_path):
    """The mixed study (4 units x 2 image sets x none/natural) with catch and practice."""
    gen = np.random.default_rng(1)
    specs = []
    for cond in ("none", "natural"):
        for b in range(2):
            for j in range(4):
                q = np.full((64, 64, 3), 128, np.uint8)
                q[:, 32:] = gen.integers(0, 256, size=(64, 32, 3), dtype=np.uint8)
                refs = [] if cond == "none" else [gen.integers(0, 256, (64, 64, 3), np.uint8)]
                specs.append(
                    TrialSpec(
                        q,
                        (0, 0, 20, 20),
                        (30, 22, 50, 42),
                        "a" if j % 2 == 0 else "b",
                        unit=f"blocks.3.2-c{j:04d}",
                        condition=cond,
                        image_set=b,
                        references=refs,
                        base_trial_id=f"base-{j}-{b}",
                    )
                )
            specs.append(
                TrialSpec(
                    _ramp(90),
                    (0, 0, 20, 20),
                    (40, 40, 60, 60),
                    "a",
                    unit="blocks.5.3-c0009",
                    condition=cond,
                    kind="catch",
                    image_set=b,
                )
            )
        for k in range(2):
            specs.append(
                TrialSpec(
                    _ramp(60 + k),
                    (0, 0, 20, 20),
                    (40, 40, 60, 60),
                    "ab"[k],
                    unit="blocks.5.3-c0010",
                    condition=cond,
                    kind="practice",
                )
            )
    # simulated participants answer without waiting: keep them in the analysis
    # (in every condition: no per-condition time window for `none` either)
    cfg = StudyConfig(name="obs-sim", exclusion={"min_total_time_s": 0.0, "conditions": {}},
                      server={"overassign_factor": 3.0})  # 8 participants, 4 places
    return write_study(tmp_path / "study", specs, config=cfg)


def _ramp(level: int) -> np.ndarray:
    """A picture whose two occluded corners differ: the browser (and the simulator) tell
    options apart only by their images, so a trial's two options must not be identical."""
    img = np.full((64, 64, 3), level, np.uint8)
    img[..., 0] = np.arange(64, dtype=np.uint8)[None, :] * 3
    return img


@contextmanager
def _serve(study, **app_options):
    """The real app under uvicorn on 127.0.0.1 in a thread."""
    from causalvis.server.app import create_app
    from causalvis.server.run import serve_in_thread

    app = create_app(study, admin_token=ADMIN, **app_options)
    with serve_in_thread(app) as url:
        yield url


@pytest.fixture
def server_study(tmp_path):
    pytest.importorskip("causalvis.server.app")
    study = _study(tmp_path)
    with _serve(study) as url:
        yield url, study


def _analysis_accuracy(url: str) -> tuple[dict[str, float], set[str]]:
    """Accuracy per condition as ``causalvis analyze`` computes it from the export (over
    included participants), and the external ids of those participants."""
    from causalvis.analysis.load import canonicalize
    from causalvis.analysis.tables import condition_table
    from causalvis.responses.exclusion import apply_exclusions

    resp = httpx.get(
        f"{url}/api/v1/admin/responses.csv", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    resp.raise_for_status()
    raw = pd.read_csv(io.StringIO(resp.text))
    df = canonicalize(raw, {})
    rules = StudyConfig(exclusion={"min_total_time_s": 0.0, "conditions": {}}).exclusion
    excl = apply_exclusions(df, rules)
    table, _ = condition_table(
        df[df["is_main"] & df["participant_id"].isin(excl.included)], n_boot=50
    )
    included = set(raw.loc[raw["participant_id"].isin(excl.included), "external_id"])
    return {c: row["accuracy"] for c, row in table.items()}, included


def test_fixed_strategy_accuracy_equals_the_analysis(server_study):
    url, study = server_study
    strategy = build_strategy(study, "center")
    settings = SimSettings(strategy="center", lapse=0.3, seed=7)
    result = simulate(url, strategy, 8, settings, concurrency=3)
    out = result.to_json()
    assert out["n_failed"] == 0, out["errors"]
    analysis, included = _analysis_accuracy(url)
    assert len(included) >= 4  # lapses on catch trials may exclude a few, as with humans
    mine = {c: row["accuracy"] for c, row in result.accuracy_by_condition(included).items()}
    assert set(mine) == {"none", "natural"}
    assert mine == analysis  # exactly, not approximately
    # every participant finished with a completion code and a passed practice
    assert all(p.completion_code for p in result.participants)
    assert all(p.practice_attempts >= 1 for p in result.participants)


def test_center_without_lapses_is_exactly_half_right(server_study):
    # center always picks the corner patch (a); truth alternates by unit
    url, study = server_study
    result = simulate(url, build_strategy(study, "center"), 4, SimSettings(seed=1), concurrency=2)
    assert all(p.accuracy == 0.5 for p in result.participants)
    analysis, included = _analysis_accuracy(url)
    assert len(included) == 4 and set(analysis.values()) == {0.5}


def test_oracle_is_perfect_and_resumes_are_idempotent(server_study):
    url, study = server_study
    strategy = build_strategy(study, "oracle")
    first = simulate(url, strategy, 3, SimSettings(seed=3), concurrency=3)
    assert {p.accuracy for p in first.participants} == {1.0}
    # the same external ids again: the server answers 409 (already finished)
    again = simulate(url, strategy, 3, SimSettings(seed=3), concurrency=3)
    assert all(p.error and "409" in p.error for p in again.participants)
    assert set(_analysis_accuracy(url)[0].values()) == {1.0}


def test_lapses_and_reaction_times_are_realistic():
    truth = {f"t{i}": "a" for i in range(4000)}
    kinds = dict.fromkeys(truth, "main")
    strat = Strategy("oracle", truth, kinds)
    rng = np.random.default_rng(0)
    picks = [strat.choose(t, rng, 0.4)[0] for t in truth]
    # lapses answer with a coin: accuracy = 1 - lapse / 2
    assert np.mean(np.array(picks) == "a") == pytest.approx(0.8, abs=0.02)


def test_simulate_retries_then_reports_a_clear_error(server_study, capsys):
    url, study = server_study
    dead = f"http://127.0.0.1:{free_port()}"
    settings = SimSettings(seed=0, max_retries=2, backoff_s=0.01)
    res = simulate(dead, build_strategy(study, "random"), 1, settings)
    assert res.retries == 2
    assert "gave up after 3 tries" in res.participants[0].error
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "simulate",
                str(study),
                "--url",
                url,
                "--participants",
                "2",
                "--strategy",
                "variance",
                "--lapse",
                "0.1",
            ]
        )
    assert exc.value.code == 0
    assert "req/s" in capsys.readouterr().out


def test_observe_calibrates_on_the_study_database(server_study):
    # "humans" = the center observer with 30 % lapses: it agrees with center on 85 %
    from scipy import special

    from causalvis.observers.observe import observe

    url, study = server_study
    simulate(
        url, build_strategy(study, "center"), 6, SimSettings(lapse=0.3, seed=11), concurrency=3
    )
    res = observe(study, ["center"], n_boot=100)
    analysis, included = _analysis_accuracy(url)
    human = res.human
    assert human is not None and human["participant_id"].nunique() == len(included)
    entry = res.summary["observers"]["center"]
    assert entry["calibrated"] and entry["alpha_n_responses"] == len(human)
    joined = human.merge(
        res.decisions[["trial_id", "choice", "correct", "delta"]],
        on="trial_id",
        suffixes=("_h", ""),
    )
    agree = np.mean(joined["correct_h"] == (joined["choice"] == joined["correct"]))
    d = abs(joined["delta"].iloc[0])  # one box geometry: |Δ| is the same on every trial
    assert special.expit(entry["alpha"] * d) == pytest.approx(agree, abs=1e-4)
    comp = res.summary["human_comparison"]["center"]
    for cond, acc in analysis.items():
        assert comp[cond]["human_accuracy"] == pytest.approx(acc)


def test_rate_limited_creation_waits_for_retry_after(tmp_path):
    pytest.importorskip("causalvis.server.app")
    from causalvis.server.guards import Rate

    study = _study(tmp_path)
    with _serve(study, create_rate=Rate(2, 2.0)) as url:  # 1 new participant per second
        res = simulate(url, build_strategy(study, "oracle"), 4, SimSettings(seed=2), concurrency=4)
    assert [p.error for p in res.participants] == [None] * 4
    assert res.retries >= 2  # the server said 429 + Retry-After, and the client waited


def test_strategy_and_settings_errors(tmp_path):
    from causalvis.errors import CausalvisError

    study = _study(tmp_path)
    with pytest.raises(CausalvisError, match="unknown strategy 'nope'"):
        build_strategy(study, "nope")
    with pytest.raises(CausalvisError, match="--lapse"):
        SimSettings(lapse=1.5)
