"""What runs inside a worker process, whichever executor started it.

:func:`execute_items` runs items one after the other, seeds every global generator from
the item name (so stray randomness is still reproducible), turns exceptions into failed
:class:`ItemResult` values, and writes the item's stamp only after its function returned.
:func:`cached` keeps per-process resources (the stages cache their model there), so a
Ray worker or a SLURM job loads the network once and reuses it for every item it runs.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from causalvis.compute.items import ItemContext, ItemResult, WorkItem
from causalvis.malloc import tune_malloc
from causalvis.store.layout import StudyPaths, write_stamp

T = TypeVar("T")
_CACHE: dict[Hashable, Any] = {}
_LOCK = threading.RLock()  # a builder may call `cached` again (a source needs its model)


def cached(key: Hashable, build: Callable[[], T]) -> T:
    """A per-process resource (a model, an image source, a parsed index): built once per
    key, so a Ray worker or a SLURM job loads it once for every item it runs."""
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def _seed_globals(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass


def set_threads(threads: int | None) -> int | None:
    """Pin torch's intra-op threads (CPU float results depend on it); returns the old value."""
    if threads is None:
        return None
    import torch

    old = torch.get_num_threads()
    if threads != old:
        torch.set_num_threads(int(threads))
    return old


def execute_item(
    root: str | Path, item: WorkItem, device: str = "cpu", threads: int | None = None
) -> ItemResult:
    """Run one item; never raises for the item's own errors (they become the result).

    ``threads`` pins torch's CPU threads for the item: reductions split differently with
    another thread count, so bitwise-equal CPU outputs need the same value everywhere.
    """
    ctx = ItemContext(Path(root), item, device)
    t0 = time.perf_counter()
    tune_malloc()  # every worker process, whichever executor started it
    old_threads = set_threads(threads)
    try:
        func = item.resolve()
        _seed_globals(ctx.seed)
        value = func(ctx, **item.kwargs)
        seconds = time.perf_counter() - t0
        write_stamp(
            StudyPaths(ctx.root),
            item.name,
            item.digest,
            func=item.func,
            outputs=sorted(set(ctx.outputs)),
            seconds=round(seconds, 6),
        )
    except Exception as exc:  # noqa: BLE001 - reported by name to the driver
        first = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return ItemResult(
            item.name,
            False,
            time.perf_counter() - t0,
            error=first + "\n" + traceback.format_exc(),
            pid=os.getpid(),
            host=socket.gethostname(),
        )
    finally:
        set_threads(old_threads)
    return ItemResult(
        item.name, True, seconds, value=value, pid=os.getpid(), host=socket.gethostname()
    )


def execute_items(
    root: str,
    items: Sequence[WorkItem],
    device: str = "cpu",
    sys_path: Sequence[str] | None = None,
    threads: int | None = None,
) -> list[ItemResult]:
    """Entry point of remote workers: run ``items`` in order in this process.

    ``sys_path`` carries the driver's import path, so item functions that live outside
    the installed package (a user's plugin module, the tests) resolve on local workers.
    """
    for entry in reversed(list(sys_path or [])):
        if entry not in sys.path and (entry == "" or os.path.isdir(entry)):
            sys.path.insert(0, entry)
    return [execute_item(root, item, device, threads) for item in items]
