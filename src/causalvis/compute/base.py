"""The executor interface and the name -> executor registry.

An executor takes a batch of items and yields one :class:`ItemResult` per item as they
finish. It never raises for an item's failure (a crashed worker, a killed job, an
exception in the function all become failed results), so the driver can retry and
report by name without losing the other items' work.
"""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

from causalvis.compute.items import ItemResult, WorkItem
from causalvis.errors import CausalvisError

# name -> "module:class"; imported lazily so that ray / submitit stay optional.
EXECUTORS: dict[str, str] = {
    "local": "causalvis.compute.local:LocalExecutor",
    "ray": "causalvis.compute.ray_executor:RayExecutor",
    "slurm": "causalvis.compute.slurm:SlurmExecutor",
}


class Executor(ABC):
    """Runs work items somewhere; ``with`` it to release workers / clusters afterwards."""

    name: str = "executor"

    @abstractmethod
    def map(
        self, root: str, items: Sequence[WorkItem], device: str, threads: int | None = None
    ) -> Iterator[ItemResult]:
        """Run ``items`` (study folder ``root``) and yield results as they finish.

        ``threads``: torch CPU threads per item (``None``: the executor's default).
        """

    def close(self) -> None:
        """Release what the executor started (processes, a local Ray instance)."""
        return None

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def executor_class(name: str) -> type[Executor]:
    if name not in EXECUTORS:
        raise CausalvisError(f"unknown executor {name!r}: choose from {', '.join(EXECUTORS)}")
    module_name, cls_name = EXECUTORS[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


def executor_options(name: str) -> list[str]:
    """The keyword options an executor accepts (for validation and error messages)."""
    params = inspect.signature(executor_class(name).__init__).parameters
    return [p for p in params if p != "self"]


def check_options(name: str, options: dict[str, Any], labels: dict[str, str] | None = None) -> None:
    """Fail early, naming the option (``labels``: how the user spelled it), when it does
    not apply to executor ``name``."""
    allowed = executor_options(name)
    unknown = sorted(k for k, v in options.items() if v is not None and k not in allowed)
    if unknown:
        labels = labels or {}
        shown = ", ".join(labels.get(k, k) for k in unknown)
        takes = ", ".join(labels.get(k, k) for k in allowed if k in labels or not labels)
        raise CausalvisError(
            f"option(s) {shown} do not apply to the {name} executor "
            f"(it takes: {takes or 'no options'})"
        )


def make_executor(name: str, **options: Any) -> Executor:
    """Build executor ``name`` with its options (``None`` values mean 'default')."""
    check_options(name, options)
    return executor_class(name)(**{k: v for k, v in options.items() if v is not None})


def build_options(
    name: str,
    *,
    retries: int = 2,
    threads: int | None = None,
    labels: dict[str, str] | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Validated ``executor_options`` for a build: run options plus the executor's own.

    Unset (``None``) values are dropped; options of another executor fail here, before any
    stage runs (``--slurm-partition`` with ``--executor ray`` is a mistake, not a no-op).
    """
    if retries < 0:
        raise CausalvisError(f"--retries must be >= 0, got {retries}")
    if threads is not None and threads < 1:
        raise CausalvisError(f"--threads must be >= 1, got {threads}")
    check_options(name, options, labels)
    chosen = {k: v for k, v in options.items() if v is not None}
    return {"retries": retries, "threads": threads, **chosen}
