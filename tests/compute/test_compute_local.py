"""run_items on the local executor: skipping, retries, failure reports, worker processes."""

from __future__ import annotations

import pytest
from compute_helpers import array_items, output_bytes

from causalvis.compute import WorkItem, WorkItemsFailed, local, run_items
from causalvis.compute.local import LocalExecutor


def test_run_writes_outputs_and_a_rerun_skips_everything(tmp_path):
    items = array_items(4)
    report = run_items(tmp_path, items, progress=False)
    assert (report.total, report.done, report.skipped, report.failed) == (4, 4, 0, {})
    assert set(report.seconds) == {i.name for i in items}
    assert all(s > 0 for s in report.seconds.values())
    first = output_bytes(tmp_path)
    assert len(first) == 8
    mtimes = {p: (tmp_path / "out" / p).stat().st_mtime_ns for p in first}

    again = run_items(tmp_path, items, progress=False)
    assert (again.done, again.skipped) == (0, 4)
    assert {p: (tmp_path / "out" / p).stat().st_mtime_ns for p in first} == mtimes

    # A changed input redoes only that item.
    changed = [*items[:3], WorkItem(items[3].name, items[3].func, {"n": 8, "sleep": 0.0})]
    third = run_items(tmp_path, changed, progress=False)
    assert (third.done, third.skipped) == (1, 3)


def test_outputs_depend_on_the_item_name_only(tmp_path):
    run_items(tmp_path / "a", array_items(3), progress=False)
    run_items(tmp_path / "b", list(reversed(array_items(3))), progress=False)
    a, b = output_bytes(tmp_path / "a"), output_bytes(tmp_path / "b")
    assert a == b
    assert a["arrays__shard-00000.npy"] != a["arrays__shard-00001.npy"]


def test_a_transient_failure_is_retried(tmp_path):
    items = [WorkItem("flaky/one", "compute_helpers:flaky"), *array_items(2)]
    report = run_items(tmp_path, items, retries=1, progress=False)
    assert report.attempts == {"flaky/one": 2, "arrays/shard-00000": 1, "arrays/shard-00001": 1}
    assert report.done == 3 and not report.failed
    assert (tmp_path / "out" / "flaky.txt").is_file()


def test_without_retries_the_transient_failure_is_reported(tmp_path):
    with pytest.raises(WorkItemsFailed, match="flaky/one: RuntimeError: transient failure"):
        run_items(
            tmp_path, [WorkItem("flaky/one", "compute_helpers:flaky")], retries=0, progress=False
        )


def test_permanent_failures_are_named_after_the_others_finish(tmp_path):
    items = [
        *array_items(2),
        WorkItem("broken/a", "compute_helpers:always_fails"),
        *array_items(4)[2:],
        WorkItem("broken/b", "compute_helpers:always_fails"),
    ]
    with pytest.raises(WorkItemsFailed) as info:
        run_items(tmp_path, items, retries=2, progress=False)
    message = str(info.value)
    assert "2 of 6 work items failed after 3 attempt(s)" in message
    assert "broken/a: ValueError: corrupt input for broken/a" in message
    assert "broken/b: ValueError: corrupt input for broken/b" in message
    report = info.value.report
    assert report.done == 4 and report.attempts["broken/a"] == 3
    assert len(output_bytes(tmp_path)) == 8  # every good item's outputs are on disk
    # The finished items are not redone when the failing ones are fixed or dropped.
    assert run_items(tmp_path, items[:2] + items[3:5], progress=False).skipped == 4


def test_one_worker_per_gpu_plan(monkeypatch):
    monkeypatch.setattr(local, "cuda_device_count", lambda: 3)
    assert LocalExecutor().plan("cuda") == ["0", "1", "2"]
    assert LocalExecutor(workers=4).plan("cuda:0") == ["0", "1", "2", "0"]
    assert LocalExecutor().plan("cpu") == []  # in-process
    assert LocalExecutor(workers=2).plan("cpu") == [None, None]
    monkeypatch.setattr(local, "cuda_device_count", lambda: 1)
    assert LocalExecutor().plan("cuda") == []  # one GPU: in-process


class _PinnedCPU(LocalExecutor):
    """Two worker processes pinned like GPUs 0 and 1, but computing on the CPU."""

    def plan(self, device):
        return ["0", "1"]

    def map(self, root, items, device, threads=None):
        return self._map_processes(root, items, "cpu", self.plan(device), threads)


def test_worker_processes_are_pinned_and_give_the_same_bytes(tmp_path):
    items = array_items(4)
    run_items(tmp_path / "inproc", items, progress=False)
    crash = WorkItem("crash/one", "compute_helpers:crash_once")  # kills its worker once
    report = run_items(tmp_path / "procs", [*items, crash], _PinnedCPU(), progress=False)
    assert report.done == 5 and report.attempts["crash/one"] == 2  # a fresh worker took over
    arrays = {k: v for k, v in report.values.items() if k.startswith("arrays/")}
    assert len({report.workers[k] for k in arrays}) == 2  # really two processes ...
    assert {v["visible"] for v in arrays.values()} == {"0", "1"}  # ... one per "GPU"
    procs = output_bytes(tmp_path / "procs")
    assert procs.pop("survivor.txt")
    assert procs == output_bytes(tmp_path / "inproc")


def test_stage_context_options_reach_run_items(tmp_path):
    from causalvis.compute import build_options, run_stage_items
    from causalvis.config import StudyConfig
    from causalvis.pipeline.build import StageContext
    from causalvis.store.layout import StudyPaths

    options = build_options("local", retries=0, threads=1, workers=None)
    ctx = StageContext(
        StudyPaths(tmp_path), StudyConfig(), progress=False, executor_options=options
    )
    with pytest.raises(WorkItemsFailed, match="after 1 attempt"):  # retries=0 arrived
        run_stage_items(ctx, [WorkItem("flaky/one", "compute_helpers:flaky")])
    report = run_stage_items(ctx, [WorkItem("flaky/one", "compute_helpers:flaky"), *array_items(1)])
    assert report.done == 2 and report.executor == "local"
