"""benchmarks/bench_scan_scale.py on a tiny folder: both sides run and report memory."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import bench_scan_scale  # noqa: E402


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_the_folder_is_deterministic_and_cached(tmp_path):
    a = bench_scan_scale.generate_folder(tmp_path / "a", 30, size=32, seed=5)
    assert not bench_scan_scale.generate_folder(tmp_path / "b", 30, size=32, seed=5)["cached"]
    assert a["written"] == 30 and not a["cached"]
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jpg"))
    assert len(files) == 30 and all(
        (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert bench_scan_scale.generate_folder(tmp_path / "a", 30, size=32, seed=5)["cached"]
    assert not bench_scan_scale.generate_folder(tmp_path / "a", 30, size=32, seed=6)["cached"]
    imgs = bench_scan_scale._chunk_images(5, 0, 4, 32)
    assert imgs.shape == (4, 32, 32, 3) and len({im.tobytes() for im in imgs}) == 4


def test_scan_and_bare_sides_report_throughput_and_rss(tmp_path, capsys):
    common = ["--images", "20", "--folder", str(tmp_path / "f"), "--batch-size", "8",
              "--shard-size", "12", "--threads", "1", "--layer", "blocks.0.0"]  # fmt: skip
    out = {}
    for side in ("scan", "bare"):
        assert bench_scan_scale.main([*common, "--side", side]) == 0
        out[side] = _last_json(capsys)
    for side, res in out.items():
        assert res["side"] == side and res["n_images"] == 20 and res["n_scanned"] == 20
        assert res["seconds"] > 0 and res["img_s"] > 0 and res["cpu_timed_s"] >= 0
        assert set(res["rss_at_mib"]) == {"10%", "50%", "90%"}
        assert res["peak_rss_sampled_mib"] >= max(res["rss_at_mib"].values())
        assert {"torch", "pillow", "python"} <= set(res["versions"])
    assert out["scan"]["generated"]["written"] == 20 and out["bare"]["generated"]["cached"]


def test_the_suite_lists_the_comparison_with_its_size():
    import suite

    bare, scan, _ = suite.comparisons("cpu", 1, True, None, scale_images=123)["scan_scale_vs_bare"]
    for side, name in ((bare, "bare"), (scan, "scan")):
        argv = list(side.argv)
        assert argv[argv.index("--images") + 1] == "123" and argv[-1] == name
