"""A real local Ray runtime (2 CPUs, loopback): same bytes as local, one model per worker."""

from __future__ import annotations

import os

import pytest
from compute_helpers import array_items, output_bytes, probe_items

from causalvis.compute import WorkItem, WorkItemsFailed, run_items
from causalvis.compute.ray_executor import RayExecutor

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_runtime():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_matches_local_and_loads_the_model_once_per_worker(ray_runtime, tmp_path):
    items = array_items(3) + probe_items(4)
    report = run_items(tmp_path / "ray", items, "ray", progress=False)
    assert report.executor == "ray" and report.done == 7
    assert ray_runtime.is_initialized()  # the executor reused, and left, our runtime

    probes = {k: v for k, v in report.values.items() if k.startswith("probe/")}
    pids = {v["pid"] for v in probes.values()}
    assert os.getpid() not in pids  # ran in Ray workers, not the driver
    assert len(pids) < len(probes)  # workers were reused across items ...
    loads_by_pid: dict[int, int] = {}
    for value in probes.values():
        loads_by_pid[value["pid"]] = max(loads_by_pid.get(value["pid"], 0), value["loads"])
    assert set(loads_by_pid.values()) == {1}  # ... and each loaded lite0 exactly once

    # Ray tasks reserve 1 CPU -> 1 torch thread; CPU floats depend on the thread count,
    # so the in-process run pins the same count (run_items' `threads`).
    run_items(tmp_path / "local", items, "local", threads=1, progress=False)
    assert output_bytes(tmp_path / "ray") == output_bytes(tmp_path / "local")


def test_ray_retries_and_reports_failures_by_name(ray_runtime, tmp_path):
    items = [
        WorkItem("flaky/one", "compute_helpers:flaky"),
        WorkItem("broken/one", "compute_helpers:always_fails"),
        *array_items(2),
    ]
    with pytest.raises(WorkItemsFailed, match="broken/one: ValueError: corrupt input") as info:
        run_items(tmp_path, items, "ray", retries=1, progress=False)
    report = info.value.report
    assert report.done == 3 and list(report.failed) == ["broken/one"]
    assert report.attempts["flaky/one"] == 2


def test_ray_executor_rejects_contradictory_options():
    with pytest.raises(Exception, match="num_cpus only applies"):
        RayExecutor(ray_address="auto", num_cpus=2)
