"""The Ray executor: one Ray task per work item, on a cluster or a local Ray instance.

Connects to ``ray_address`` (``auto`` or ``ray://host:10001``) or starts a local instance
with ``num_cpus`` CPUs. Tasks ask for ``cpus_per_item`` CPUs and, when the device is CUDA,
``gpus_per_item`` GPUs (fractions pack several workers on one GPU). Ray recycles a GPU
task's worker after every call by default; we set ``max_calls=0`` so worker processes
live on and :func:`causalvis.compute.worker.cached` keeps the model once per worker.
Ray's own task retries are off: the driver retries failed items itself, by name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence

from causalvis.compute.base import Executor
from causalvis.compute.items import ItemResult, WorkItem
from causalvis.compute.worker import execute_items
from causalvis.errors import CausalvisError


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise CausalvisError(
            "the ray executor needs the 'ray' package: pip install 'ray>=2.9' "
            "(or use --executor local / slurm)"
        ) from exc
    return ray


class RayExecutor(Executor):
    name = "ray"

    def __init__(
        self,
        ray_address: str | None = None,
        num_cpus: int | None = None,
        cpus_per_item: float = 1.0,
        gpus_per_item: float | None = None,
    ) -> None:
        if ray_address is not None and num_cpus is not None:
            raise CausalvisError("num_cpus only applies when starting a local Ray instance")
        if cpus_per_item <= 0:
            raise CausalvisError(f"cpus_per_item must be > 0, got {cpus_per_item}")
        self.ray_address = ray_address
        self.num_cpus = num_cpus
        self.cpus_per_item = cpus_per_item
        self.gpus_per_item = gpus_per_item
        self._started = False

    def _connect(self):
        ray = import_ray()
        if ray.is_initialized():
            return ray
        # Nothing may call home from a study build.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            if self.ray_address:
                ray.init(address=self.ray_address, log_to_driver=True)
            else:
                ray.init(num_cpus=self.num_cpus, include_dashboard=False, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.ray_address or "a local Ray instance"
            raise CausalvisError(f"could not connect to {where}: {exc}") from exc
        self._started = True
        return ray

    def map(
        self, root: str, items: Sequence[WorkItem], device: str, threads: int | None = None
    ) -> Iterator[ItemResult]:
        ray = self._connect()
        if threads is None:  # as many torch threads as CPUs the task reserved
            threads = max(1, int(self.cpus_per_item))
        cuda = device.startswith("cuda")
        gpus = (1.0 if cuda else 0.0) if self.gpus_per_item is None else self.gpus_per_item
        remote = ray.remote(num_cpus=self.cpus_per_item, num_gpus=gpus, max_calls=0, max_retries=0)(
            execute_items
        )
        worker_device = "cuda" if cuda else device  # Ray sets CUDA_VISIBLE_DEVICES per task
        sys_path = [p for p in sys.path if p]
        pending = {
            remote.remote(str(root), [item], worker_device, sys_path, threads): item
            for item in items
        }
        while pending:
            # Collect whatever finished within a second: O(items) per poll, not per result.
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=1.0)
            for ref in ready:
                item = pending.pop(ref)
                try:
                    yield from ray.get(ref)
                except ray.exceptions.RayError as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    yield ItemResult(item.name, False, 0.0, error=f"{type(exc).__name__}: {first}")

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
