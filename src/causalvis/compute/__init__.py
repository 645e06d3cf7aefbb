"""Scale-out: stages as idempotent work items on local, Ray or SLURM executors.

A stage lists :class:`WorkItem` values (a ``module:function`` path, JSON kwargs and an
input digest) and hands them to :func:`run_items`, which skips stamped items, runs the
rest on the chosen executor, retries failures and reports the ones that still fail.
"""

from causalvis.compute.base import (
    EXECUTORS,
    Executor,
    build_options,
    check_options,
    make_executor,
)
from causalvis.compute.items import (
    ItemContext,
    ItemResult,
    WorkItem,
    file_digest,
    input_digest,
    item_done,
    npz_bytes,
)
from causalvis.compute.run import RunReport, WorkItemsFailed, run_items, run_stage_items
from causalvis.compute.worker import cached

__all__ = [
    "EXECUTORS",
    "Executor",
    "ItemContext",
    "ItemResult",
    "RunReport",
    "WorkItem",
    "WorkItemsFailed",
    "build_options",
    "cached",
    "check_options",
    "file_digest",
    "input_digest",
    "item_done",
    "make_executor",
    "npz_bytes",
    "run_items",
    "run_stage_items",
]
