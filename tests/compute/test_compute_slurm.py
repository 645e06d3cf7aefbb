"""The slurm executor through submitit's local cluster (real job subprocesses)."""

from __future__ import annotations

import shutil

import pytest
from compute_helpers import array_items, output_bytes

from causalvis.compute import WorkItem, WorkItemsFailed, run_items
from causalvis.errors import CausalvisError

pytest.importorskip("submitit")


def test_submitit_local_jobs_match_in_process_bytes(tmp_path):
    # Job 1 runs two array items, then its process dies; job 2 has a transient failure.
    items = [
        *array_items(2),
        WorkItem("crash/one", "compute_helpers:crash_once"),
        *array_items(4)[2:],
        WorkItem("flaky/one", "compute_helpers:flaky"),
    ]
    logs = tmp_path / "slurm-logs"
    report = run_items(
        tmp_path / "slurm",
        items,
        "slurm",
        cluster="local",
        items_per_job=3,
        folder=str(logs),
        cpus_per_task=1,
        poll_s=0.2,
        retries=1,
        progress=False,
    )
    assert report.executor == "slurm" and report.done == 6 and not report.failed
    assert report.attempts["flaky/one"] == 2 and report.attempts["crash/one"] == 2
    # The dead job's finished items were recognised by their stamps, not rerun:
    assert report.attempts["arrays/shard-00000"] == report.attempts["arrays/shard-00001"] == 1
    assert len({report.workers[i.name] for i in items[3:5]}) == 1  # one job ran a chunk
    assert any(logs.rglob("*.out")) or any(logs.rglob("*.err"))  # submitit's job logs
    run_items(tmp_path / "local", array_items(4), threads=1, progress=False)
    slurm_out = output_bytes(tmp_path / "slurm")
    assert slurm_out.pop("flaky.txt") and slurm_out.pop("survivor.txt")
    assert slurm_out == output_bytes(tmp_path / "local")


def test_submitit_debug_cluster_reports_failures_by_name(tmp_path):
    items = [*array_items(2), WorkItem("broken/x", "compute_helpers:always_fails")]
    with pytest.raises(WorkItemsFailed, match="broken/x: ValueError"):
        run_items(
            tmp_path,
            items,
            "slurm",
            cluster="debug",
            folder=str(tmp_path / "l"),
            retries=0,
            progress=False,
        )
    assert len(output_bytes(tmp_path)) == 4


@pytest.mark.skipif(shutil.which("sbatch") is not None, reason="SLURM is installed here")
def test_real_slurm_without_sbatch_is_a_clear_error(tmp_path):
    with pytest.raises(CausalvisError, match="needs SLURM's sbatch"):
        run_items(tmp_path, array_items(1), "slurm", progress=False)
