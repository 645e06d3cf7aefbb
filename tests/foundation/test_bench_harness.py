"""The benchmark harness: fresh processes, counterbalanced order, per-child CPU and RSS."""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from harness import Side, compare, markdown_table, run_side, write_results  # noqa: E402


def _busy(n: int, mib: int = 0) -> Side:
    code = ("import json, time\n"
            f"buf = bytes(range(256)) * ({mib} * 4096)\n"
            "t = time.perf_counter(); sum(range(%d))\n" % n
            + "print('noise line'); print(json.dumps({'seconds': time.perf_counter() - t}))")
    return Side(f"busy{n}", [sys.executable, "-c", code + "\nimport time; time.sleep(0.1)"])


def test_sides_run_counterbalanced_and_the_ratio_favours_the_faster_side(tmp_path: Path):
    slow, fast = _busy(4_000_000), _busy(400_000)
    result = compare("toy", slow, fast, pairs=4, log=lambda *_: None)
    assert result["order"] == ["busy4000000", "busy400000", "busy400000", "busy4000000"] * 2
    assert result["ratio"]["n"] == 4 and result["ratio"]["median"] > 2
    assert result["ratio"]["min"] <= result["ratio"]["median"] <= result["ratio"]["max"]
    assert result["cpu_ratio_of"] == "whole process"
    side = result["sides"]["busy400000"]
    assert side["cpu_s"]["median"] > 0 and side["wall_s"]["median"] >= side["seconds"]["median"]
    table = write_results([result], tmp_path)
    assert "| toy | busy400000 vs busy4000000 |" in table.read_text()
    assert json.loads((tmp_path / "toy.json").read_text())["pairs"] == 4
    # every process is kept, so an outlier can be told apart from noise afterwards
    assert len(result["pair_ratios"]) == 4 and len(side["per_run"]) == 4
    secs = [r["seconds"] for r in side["per_run"]]
    assert round(min(secs), 4) == side["seconds"]["min"] and all(r["cpu_s"] > 0
                                                               for r in side["per_run"])
    assert statistics.median(result["pair_ratios"]) == pytest.approx(
        result["ratio"]["median"], abs=1e-3)
    assert markdown_table([result]).count("\n") == 3


def test_peak_rss_is_the_childs_own():
    small, big = run_side(_busy(10, 0)), run_side(_busy(10, 200))
    assert big["peak_rss_mib"] - small["peak_rss_mib"] > 150
    assert run_side(_busy(10, 0))["peak_rss_mib"] < big["peak_rss_mib"]


def test_a_failing_or_silent_side_is_named():
    bad = Side("broken", [sys.executable, "-c", "import sys; sys.exit('boom')"])
    with pytest.raises(RuntimeError, match="broken: exit 1"):
        run_side(bad)
    silent = Side("silent", [sys.executable, "-c", "print('no json')"])
    with pytest.raises(RuntimeError, match="silent: the last line"):
        run_side(silent)


def test_per_mac_cost_ratio_scales_the_time_ratio_by_the_work_ratio():
    """The incremental engine's cost per recomputed multiply-accumulate vs the forward's."""
    import suite

    result = {"baseline": "inc", "candidate": "fwd", "ratio": {"median": 0.2, "min": 0.1, "max": 0.4},
              "sides": {"inc": {"last": {"macs_per_image_m": 50.0}},
                        "fwd": {"last": {"macs_per_image_m": 150.0}}}}  # fmt: skip
    suite._per_mac(result)
    assert result["per_mac_cost_ratio"] == {"median": 0.6, "min": 0.3, "max": 1.2}
    del result["sides"]["inc"]["last"]["macs_per_image_m"]
    result.pop("per_mac_cost_ratio")
    suite._per_mac(result)
    assert "per_mac_cost_ratio" not in result
    assert "featurevis_step_vs_floor" in suite.comparisons("cpu", 1, True, None)
    argv = list(suite.comparisons("cpu", 1, True, None, 28)["occlusion_k1"][0].argv)
    assert argv[argv.index("--stride") + 1] == "28"


def test_the_peer_folder_is_prepended_to_the_callers_pythonpath(monkeypatch):
    """Lucent's side must import the same causalvis as ours (a worktree's src, say)."""
    import suite

    monkeypatch.setenv("PYTHONPATH", "/work/src")
    lucent, _, _ = suite.comparisons("cpu", 1, True, Path("/peers"))["featurevis_vs_lucent"]
    assert lucent.env["PYTHONPATH"].split(os.pathsep) == ["/peers", "/work/src"]
