"""The local executor: in-process on one device, or one process per GPU.

With several CUDA devices (and ``device`` set to cuda) each GPU gets its own worker
process pinned by ``CUDA_VISIBLE_DEVICES``, fed from one queue so a slow item never holds
up the others. ``workers=N`` forces N processes (on the CPU each gets its share of the
cores); otherwise the items run in this process, one after the other.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from causalvis.compute.base import Executor
from causalvis.compute.items import ItemResult, WorkItem
from causalvis.compute.worker import execute_item
from causalvis.errors import CausalvisError


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except ImportError:  # pragma: no cover
        return 0


def _init_worker(visible_devices: str | None, threads: int) -> None:
    """Runs first in a fresh (spawned) worker, before anything touches CUDA."""
    if visible_devices is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_devices
    import torch

    torch.set_num_threads(threads)


class LocalExecutor(Executor):
    """``workers=None``: one process per GPU when there are several, else in-process."""

    name = "local"

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 0:
            raise CausalvisError(f"workers must be >= 0, got {workers}")
        self.workers = workers

    def plan(self, device: str) -> list[str | None]:
        """One entry per worker process: its CUDA_VISIBLE_DEVICES (None: leave as is)."""
        cuda = device.startswith("cuda")
        n_gpus = cuda_device_count() if cuda else 0
        n = self.workers if self.workers is not None else (n_gpus if n_gpus > 1 else 0)
        if n == 0:
            return []
        if cuda and n_gpus:
            return [str(i % n_gpus) for i in range(n)]
        return [None] * n

    def map(
        self, root: str, items: Sequence[WorkItem], device: str, threads: int | None = None
    ) -> Iterator[ItemResult]:
        slots = self.plan(device)
        if not slots:
            for item in items:
                yield execute_item(root, item, device, threads)
            return
        worker_device = "cuda" if slots[0] is not None else device
        yield from self._map_processes(root, items, worker_device, slots, threads)

    def _map_processes(
        self,
        root: str,
        items: Sequence[WorkItem],
        device: str,
        slots: list[str | None],
        threads: int | None,
    ) -> Iterator[ItemResult]:
        todo: queue.Queue[WorkItem] = queue.Queue()
        for item in items:
            todo.put(item)
        done: queue.Queue[ItemResult | None] = queue.Queue()
        if threads is None:  # share the cores between the worker processes
            threads = max(1, (os.cpu_count() or 1) // len(slots))
        ctx = mp.get_context("spawn")  # fork after torch / CUDA init is unsafe

        def feed(visible: str | None) -> None:
            pool = ProcessPoolExecutor(1, ctx, _init_worker, (visible, threads))
            try:
                while True:
                    try:
                        item = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        done.put(pool.submit(execute_item, root, item, device, threads).result())
                    except BrokenProcessPool as exc:
                        done.put(ItemResult(item.name, False, 0.0, error=f"worker died: {exc}"))
                        pool.shutdown(cancel_futures=True)
                        pool = ProcessPoolExecutor(1, ctx, _init_worker, (visible, threads))
                    except Exception as exc:  # e.g. an unpicklable return value
                        done.put(ItemResult(item.name, False, 0.0, error=f"{exc!r}"))
            finally:
                pool.shutdown()
                done.put(None)

        feeders = [threading.Thread(target=feed, args=(s,), daemon=True) for s in slots]
        for t in feeders:
            t.start()
        running = len(feeders)
        while running:
            result = done.get()
            if result is None:
                running -= 1
            else:
                yield result
        for t in feeders:
            t.join()
