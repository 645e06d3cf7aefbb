"""Shared helpers for the benchmark scripts: timing and the one-JSON-line convention."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 5, warmup: int = 1,
            clock: Callable[[], float] = time.perf_counter) -> float:
    """Median time of ``fn`` on ``clock`` (wall by default; ``time.process_time`` for CPU
    seconds) over ``repeats`` runs after ``warmup`` runs (seconds)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def emit(result: dict) -> None:
    """Print the figures; the last line of every benchmark is one JSON object."""
    print(json.dumps(result, sort_keys=True))
