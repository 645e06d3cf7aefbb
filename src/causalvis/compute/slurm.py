"""The SLURM executor via submitit: one job array per round, ``items_per_job`` per task.

Each array task runs a chunk of items in one process, so the model is loaded once per
job (:func:`causalvis.compute.worker.cached`) and short items do not pay SLURM's
scheduling latency each.
``cluster="local"`` / ``"debug"`` select submitit's LocalExecutor / DebugExecutor (tests,
a workstation without SLURM); ``None`` lets submitit pick (SLURM when ``sbatch`` exists).
A job that dies (timeout, preemption, out of memory) fails every item of its chunk that
left no stamp; the driver retries them in the next round.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from causalvis.compute.base import Executor
from causalvis.compute.items import ItemResult, WorkItem
from causalvis.compute.worker import execute_items
from causalvis.errors import CausalvisError


def import_submitit():
    try:
        import submitit
    except ImportError as exc:
        raise CausalvisError(
            "the slurm executor needs the 'submitit' package: pip install submitit"
        ) from exc
    return submitit


class SlurmExecutor(Executor):
    name = "slurm"

    def __init__(
        self,
        partition: str | None = None,
        time_min: int = 60,
        gpus: int = 0,
        cpus_per_task: int = 4,
        mem_gb: float = 16,
        folder: str | None = None,
        items_per_job: int = 8,
        array_parallelism: int = 256,
        account: str | None = None,
        cluster: str | None = "slurm",
        poll_s: float = 1.0,
    ) -> None:
        if items_per_job < 1:
            raise CausalvisError(f"items_per_job must be >= 1, got {items_per_job}")
        if cluster not in {None, "slurm", "local", "debug"}:
            raise CausalvisError(f"cluster must be slurm, local or debug, got {cluster!r}")
        self.partition = partition
        self.time_min = time_min
        self.gpus = gpus
        self.cpus_per_task = cpus_per_task
        self.mem_gb = mem_gb
        self.folder = folder
        self.items_per_job = items_per_job
        self.array_parallelism = array_parallelism
        self.account = account
        self.cluster = cluster
        self.poll_s = poll_s

    def _executor(self, root: str):
        submitit = import_submitit()
        folder = Path(self.folder) if self.folder else Path(root) / "logs" / "slurm"
        if self.cluster == "slurm" and shutil.which("sbatch") is None:
            raise CausalvisError(
                "the slurm executor needs SLURM's sbatch on this machine (submit from a "
                "login node), or use --executor local / ray"
            )
        try:
            ex = submitit.AutoExecutor(folder=folder / "%j", cluster=self.cluster)
        except RuntimeError as exc:  # no sbatch on this machine
            raise CausalvisError(
                f"cannot submit to SLURM here ({exc}); use --executor local or ray"
            ) from exc
        params: dict = {
            "timeout_min": int(self.time_min),
            "gpus_per_node": int(self.gpus),
            "cpus_per_task": int(self.cpus_per_task),
            "mem_gb": self.mem_gb,
            "name": "causalvis",
            "slurm_array_parallelism": int(self.array_parallelism),
        }
        if self.partition:
            params["slurm_partition"] = self.partition
        if self.account:
            params["slurm_account"] = self.account
        ex.update_parameters(**params)
        return submitit, ex

    def map(
        self, root: str, items: Sequence[WorkItem], device: str, threads: int | None = None
    ) -> Iterator[ItemResult]:
        if not items:
            return
        threads = threads if threads is not None else max(1, int(self.cpus_per_task))
        submitit, ex = self._executor(str(root))
        worker_device = "cuda" if device.startswith("cuda") else device
        chunks = [
            list(items[i : i + self.items_per_job])
            for i in range(0, len(items), self.items_per_job)
        ]
        sys_path = [p for p in sys.path if p]
        n = len(chunks)
        jobs = ex.map_array(
            execute_items,
            [str(root)] * n,
            chunks,
            [worker_device] * n,
            [sys_path] * n,
            [threads] * n,
        )
        chunk_of = {id(job): chunk for job, chunk in zip(jobs, chunks, strict=True)}
        for job in submitit.helpers.as_completed(jobs, poll_frequency=self.poll_s):
            chunk = chunk_of[id(job)]
            try:
                yield from job.result()
            except Exception as exc:  # the job itself failed: timeout, OOM, node loss
                text = str(exc).strip()
                first = text.splitlines()[0] if text else repr(exc)
                for item in chunk:
                    yield ItemResult(
                        item.name,
                        False,
                        0.0,
                        error=f"job {job.job_id} failed: {first}\n{text}\nlogs: {ex.folder}",
                    )
