"""benchmarks/gpu_suite.py under its time budget: a part that runs out keeps what finished
and leaves no benchmark process behind (device time is scarce: nothing may be lost)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import gpu_suite  # noqa: E402


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    marker = tmp_path / "grandchild-alive"
    cmd = ["bash", "-c", f"(sleep 3; touch {marker}) & sleep 30"]
    t0 = time.perf_counter()
    with pytest.raises(subprocess.TimeoutExpired):
        gpu_suite._run(cmd, 0.5)
    assert time.perf_counter() - t0 < 10
    time.sleep(3.5)
    assert not marker.exists()  # the background child died with the group


def test_the_benchmarks_part_keeps_finished_comparisons(monkeypatch):
    def stopped_early(cmd, timeout_s):
        out = Path(cmd[cmd.index("--out") + 1])
        (out / "occlusion_k1.json").write_text(json.dumps({"benchmark": "occlusion_k1"}))
        (out / "results.md").write_text("| table |\n")
        raise subprocess.TimeoutExpired(cmd, timeout_s)

    monkeypatch.setattr(gpu_suite, "_run", stopped_early)
    part = gpu_suite._benchmarks("cpu", True, 1, 7.0)
    assert list(part["results"]) == ["occlusion_k1"] and part["table"] == "| table |\n"
    assert "7 s budget" in part["timed_out"]


def test_the_benchmarks_part_fails_when_nothing_finished(monkeypatch):
    def nothing(cmd, timeout_s):
        raise subprocess.TimeoutExpired(cmd, timeout_s)

    monkeypatch.setattr(gpu_suite, "_run", nothing)
    with pytest.raises(RuntimeError, match="no comparison finished"):
        gpu_suite._benchmarks("cpu", True, 1, 7.0)
