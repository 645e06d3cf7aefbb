"""Power by simulation: the closed-form binomial case, monotonicity, pilot estimates, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from causalvis.analysis.stats import logit_location, mean_logit_normal
from causalvis.cli import main
from causalvis.observers.power import (
    PowerDesign,
    exact_ztest_power,
    pilot_design,
    power_curve,
    simulate_power,
)
from causalvis.store.layout import StudyPaths


@pytest.mark.parametrize("n", [5, 20])
def test_simulation_matches_the_closed_form_binomial_case(n):
    # no participant or unit variability: every response is Bernoulli(p)
    design = PowerDesign(18, 18, baseline=0.6, sigma_participant=0.0, sigma_unit=0.0)
    exact = exact_ztest_power(n * 18, n * 18, 0.6, 0.68)
    sim = simulate_power(design, 0.08, n, reps=4000, test="ztest", seed=1)
    assert abs(sim - exact) < 4 * np.sqrt(exact * (1 - exact) / 4000)


def test_exact_power_agrees_with_the_normal_approximation():
    na = nb = 2000
    pa, pb = 0.6, 0.64
    se = np.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    approx = stats.norm.sf(stats.norm.ppf(0.975) - (pb - pa) / se)
    assert exact_ztest_power(na, nb, pa, pb) == pytest.approx(approx, abs=0.02)
    # under the null the test holds its level
    assert exact_ztest_power(300, 300, 0.6, 0.6) == pytest.approx(0.05, abs=0.01)


def test_marginal_accuracy_is_matched_with_variability():
    mu = logit_location(0.6, 1.2)
    assert float(mean_logit_normal(mu, 1.2)) == pytest.approx(0.6, abs=1e-9)
    rng = np.random.default_rng(0)
    draws = 1 / (1 + np.exp(-(mu + 1.2 * rng.standard_normal(400_000))))
    assert draws.mean() == pytest.approx(0.6, abs=3e-3)


def test_welch_holds_its_level_and_variability_costs_power():
    design = PowerDesign(18, 18)
    assert simulate_power(design, 0.0, 20, reps=2000) == pytest.approx(0.05, abs=0.02)
    calm = PowerDesign(18, 18, sigma_participant=0.0, sigma_unit=0.0)
    assert simulate_power(calm, 0.08, 30, reps=1000) > simulate_power(
        PowerDesign(18, 18, sigma_participant=1.0, sigma_unit=0.7), 0.08, 30, reps=1000
    ) + 0.1


def test_required_n_shrinks_with_the_effect():
    design = PowerDesign(18, 18)
    small = power_curve(design, 0.06, reps=400)
    large = power_curve(design, 0.15, reps=400)
    assert large.required_n < small.required_n
    p = dict(large.curve)
    assert p[large.required_n] >= 0.8
    assert all(p[n] < 0.8 for n in p if n < large.required_n and n >= large.required_n - 1)


def test_pilot_design_recovers_the_spread():
    rng = np.random.default_rng(0)
    rows = []
    u = rng.normal(0, 0.8, 200)
    for i in range(200):
        for j in range(20):
            rows.append({"participant_id": f"p{i}", "unit": f"u{j}",
                         "correct": rng.random() < 1 / (1 + np.exp(-(0.4 + u[i])))})
    d = pilot_design(pd.DataFrame(rows), 20, 20)
    assert d.sigma_participant == pytest.approx(0.8, abs=0.2)
    assert d.sigma_unit < 0.25
    assert d.baseline == pytest.approx(np.mean([r["correct"] for r in rows]))


def test_power_cli_writes_curve_and_figure(mixed_study, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["power", str(mixed_study), "--effect", "0.2", "--reps", "200"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "required participants per condition:" in out
    assert "4 main trials per participant, 4 units" in out
    paths = StudyPaths(mixed_study)
    png = paths.report / "figures" / "power.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((paths.report / "power.json").read_text())
    assert saved["required_n_per_condition"] == int(out.split("condition:")[1].split()[0])
