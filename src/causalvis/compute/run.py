"""``run_items``: skip finished items, run the rest on an executor, retry, report by name.

Retries go in rounds: every pending item runs once, the failed ones run again, up to
``retries`` extra rounds. Only after all items had their chances does a failure raise,
so one broken item never costs the others' work (their outputs and stamps are on disk).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from causalvis.compute.base import Executor, make_executor
from causalvis.compute.items import ItemResult, WorkItem, item_done
from causalvis.errors import CausalvisError
from causalvis.store.layout import StudyPaths, read_stamp

log = logging.getLogger("causalvis.compute")
MAX_NAMED = 20  # failed items named in the error message (all are in the report)


@dataclass
class RunReport:
    """Counts and per-item seconds of one ``run_items`` call (throughput figures)."""

    executor: str
    total: int = 0
    skipped: int = 0
    done: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # name -> first error line
    seconds: dict[str, float] = field(default_factory=dict)  # name -> seconds (successes)
    attempts: dict[str, int] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # name -> item function's return
    workers: dict[str, int] = field(default_factory=dict)  # name -> pid that ran it
    wall_seconds: float = 0.0

    @property
    def items_per_second(self) -> float:
        """Wall-clock throughput of the items that ran (not the skipped ones)."""
        return self.done / self.wall_seconds if self.wall_seconds > 0 else 0.0

    @property
    def mean_item_seconds(self) -> float:
        return sum(self.seconds.values()) / len(self.seconds) if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed "
            f"of {self.total} items in {self.wall_seconds:.1f} s ({self.executor})"
        )


class WorkItemsFailed(CausalvisError):
    """Raised after a run when items still fail; ``report`` holds what did finish."""

    def __init__(self, message: str, report: RunReport) -> None:
        super().__init__(message)
        self.report = report


def _from_stamp(paths: StudyPaths, result: ItemResult) -> ItemResult:
    seconds = read_stamp(paths, result.name).get("seconds", 0.0)
    return ItemResult(result.name, True, float(seconds), pid=result.pid, host=result.host)


def _progress_bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="item", disable=not enabled or total == 0)


def run_items(
    study_root: str | Path,
    items: Sequence[WorkItem],
    executor: str | Executor = "local",
    retries: int = 2,
    progress: bool = True,
    *,
    device: str = "cpu",
    threads: int | None = None,
    desc: str | None = None,
    **options: Any,
) -> RunReport:
    """Run work items idempotently; raise :class:`WorkItemsFailed` naming what failed.

    ``options`` go to the executor (``workers`` for local; ``ray_address``, ``num_cpus``
    for ray; ``partition``, ``time_min``, ``gpus``, ``mem_gb``, ``folder`` for slurm).
    ``threads`` pins torch's CPU threads per item; CPU floats depend on it, so give every
    executor the same value when outputs must be bitwise identical across executors.
    """
    if threads is not None and threads < 1:
        raise CausalvisError(f"threads must be >= 1, got {threads}")
    if retries < 0:
        raise CausalvisError(f"retries must be >= 0, got {retries}")
    dupes = sorted(n for n, k in Counter(item.name for item in items).items() if k > 1)
    if dupes:
        raise CausalvisError(f"duplicate work item names: {', '.join(dupes[:5])}")
    root = Path(study_root).resolve()
    paths = StudyPaths(root)
    if isinstance(executor, Executor) and options:
        raise CausalvisError(f"options {', '.join(options)} given with a ready executor")
    exe = executor if isinstance(executor, Executor) else make_executor(executor, **options)
    report = RunReport(executor=exe.name, total=len(items))
    pending = [item for item in items if not item_done(paths, item)]
    report.skipped = len(items) - len(pending)
    label = desc or (items[0].name.split("/")[0] if items else "items")
    errors: dict[str, ItemResult] = {}
    t0 = time.perf_counter()
    try:
        with _progress_bar(len(pending), label, progress) as bar:
            for attempt in range(retries + 1):
                if not pending:
                    break
                if attempt:
                    log.warning(
                        "%s: retrying %d failed item(s) (attempt %d)",
                        label,
                        len(pending),
                        attempt + 1,
                    )
                by_name = {item.name: item for item in pending}
                failed: list[WorkItem] = []
                for result in exe.map(str(root), pending, device, threads):
                    report.attempts[result.name] = report.attempts.get(result.name, 0) + 1
                    if not result.ok and item_done(paths, by_name[result.name]):
                        # Its worker died after the stamp (e.g. a SLURM job killed later
                        # in its chunk): the item finished, do not redo it.
                        result = _from_stamp(paths, result)
                    if result.ok:
                        report.done += 1
                        report.seconds[result.name] = result.seconds
                        report.values[result.name] = result.value
                        report.workers[result.name] = result.pid
                        errors.pop(result.name, None)
                        bar.update(1)
                    else:
                        errors[result.name] = result
                        failed.append(by_name[result.name])
                    by_name.pop(result.name)
                for name, item in by_name.items():  # an executor must answer for every item
                    errors[name] = ItemResult(name, False, 0.0, error="no result from executor")
                    failed.append(item)
                pending = failed
    finally:
        report.wall_seconds = time.perf_counter() - t0
        if not isinstance(executor, Executor):
            exe.close()
    report.failed = {name: res.first_error_line for name, res in sorted(errors.items())}
    log.info("%s: %s", label, report.summary())
    if report.failed:
        shown = list(report.failed.items())[:MAX_NAMED]
        lines = "; ".join(f"{n}: {e}" for n, e in shown)
        if len(report.failed) > MAX_NAMED:
            lines += f"; and {len(report.failed) - MAX_NAMED} more (see the report)"
        raise WorkItemsFailed(
            f"{len(report.failed)} of {report.total} work items failed after "
            f"{retries + 1} attempt(s) ({report.done} finished, {report.skipped} were "
            f"already done): {lines}",
            report,
        )
    return report


def run_stage_items(ctx: Any, items: Sequence[WorkItem], desc: str | None = None) -> RunReport:
    """Run a stage's items with the build's executor settings (a ``StageContext``)."""
    options = dict(ctx.executor_options or {})
    retries = options.pop("retries", 2)
    threads = options.pop("threads", None)
    device = ctx.device or ctx.config.model.device
    return run_items(
        ctx.paths.root,
        items,
        ctx.executor,
        retries=retries if retries is not None else 2,
        progress=ctx.progress,
        device=device,
        threads=threads,
        desc=desc,
        **options,
    )
