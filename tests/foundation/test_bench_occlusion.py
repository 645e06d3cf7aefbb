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
