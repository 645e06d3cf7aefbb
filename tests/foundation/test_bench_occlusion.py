"""benchmarks/bench_occlusion.py: every side of the suite's comparisons runs and reports
the work it did (a coarse grid: 16 positions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("side", ["plain", "incremental", "reference", "truncated"])
def test_each_side_reports_time_and_work(side):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_occlusion.py"), "--side", side,
         "--units", "1", "--stride", "56", "--threads", "1", "--repeat", "1"],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    ).stdout
    res = json.loads(out.strip().splitlines()[-1])
    assert res["side"] == side and res["positions"] == 16 and res["seconds"] > 0
    assert res["macs_per_image_m"] > 0 and res["ms_per_gmac"] > 0
    assert 0 < res["macs_truncated_m"] < res["macs_full_m"]
    assert res["checksum"] is None or res["checksum"] == res["checksum"]  # not NaN


def test_a_side_times_several_calls_and_reports_their_median():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_occlusion.py"), "--side", "truncated",
         "--units", "1", "--stride", "56", "--threads", "1", "--timed-runs", "3"],
        capture_output=True, text=True, env=env, timeout=300, check=True,
    ).stdout
    res = json.loads(out.strip().splitlines()[-1])
    runs = res["runs_s"]
    assert len(runs) == 3 and all(r > 0 for r in runs)
    assert res["seconds"] == sorted(runs)[1]


def test_the_suite_times_short_sides_several_times_and_long_ones_once():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import suite

    table = suite.comparisons("cpu", 1, False, None, timed_runs=4)

    def runs(side) -> int | None:
        argv = list(side.argv)
        return int(argv[argv.index("--timed-runs") + 1]) if "--timed-runs" in argv else None

    for name in ("occlusion_plain_vs_truncated", "occlusion_k1", "scan_vs_bare_forward"):
        base, cand, _ = table[name]
        assert runs(base) == runs(cand) == 4, name
    ref_layer, inc_layer, _ = table["occlusion_incremental_layer"]
    assert runs(ref_layer) is None and runs(inc_layer) == 4
    quick = suite.comparisons("cpu", 1, True, None)["occlusion_plain_vs_truncated"]
    assert runs(quick[0]) == runs(quick[1]) == 1
