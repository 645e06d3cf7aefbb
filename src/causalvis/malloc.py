"""glibc malloc settings for the numeric stages: the one owner of every ``mallopt`` call.

Why: PyTorch's CPU kernels allocate and free large buffers on every step of a feature
visualization and every batch of a sweep. glibc serves blocks above its dynamic mmap
threshold with fresh ``mmap``/``munmap`` calls and trims the top of its heap after large
frees, so each step pays page faults on memory it just gave back. Measured on the
feature-visualization stage here: a third of the CPU time was spent in the kernel
(benchmarks/bench_allocator.py). :func:`tune_malloc` (once per process: ``causalvis
build`` and every worker) raises the mmap threshold and the trim threshold so freed
memory stays in the heap for the next step. Blocks above glibc's largest mmap threshold
(32 MB; lite0 at batch 8 has 38 MB maps in ``blocks.1``) are still mapped fresh every
time: :func:`heap_allocations` switches ``mmap`` and heap trimming off for a render
loop, a sweep or a scan, so those are reused too (filling a fresh 38 MB buffer costs ~10×
filling a reused one). Results are bit-identical (only where the bytes live changes). The
price: up to ``TRIM_THRESHOLD`` of freed memory stays mapped after a loop, the loop's peak
inside it (RSS).

``CAUSALVIS_MALLOC_TUNING=0`` turns both off (also for benchmarks comparing both). No-op
off Linux/glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import sys
from collections.abc import Iterator

log = logging.getLogger("causalvis.malloc")

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024
GLIBC_MMAP_MAX = 65536  # glibc's default number of mmapped blocks
ENV = "CAUSALVIS_MALLOC_TUNING"

_TUNED = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
          (_M_TOP_PAD, TOP_PAD))
_applied: bool | None = None
_mallopt = None
_depth = 0  # open heap_allocations blocks (threads share malloc: one process-wide count)


def _get_mallopt():
    """glibc's ``mallopt``, or None (another libc, another OS, or switched off)."""
    global _mallopt
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return None
    if not sys.platform.startswith("linux"):
        return None
    if _mallopt is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            fn = libc.mallopt
        except (OSError, AttributeError):  # musl or another libc without mallopt
            _mallopt = False
            return None
        fn.argtypes, fn.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        _mallopt = fn
    return _mallopt or None


def tune_malloc() -> bool:
    """Apply the settings once per process (idempotent); True if glibc accepted them.
    A no-op returning False off Linux/glibc or when ``CAUSALVIS_MALLOC_TUNING=0``."""
    global _applied
    if _applied is not None:
        return _applied
    mallopt = _get_mallopt()
    _applied = bool(mallopt) and all(mallopt(p, v) == 1 for p, v in _TUNED)
    if mallopt and not _applied:
        log.debug("mallopt rejected a setting; glibc defaults stay in place")
    return _applied


@contextlib.contextmanager
def heap_allocations(enabled: bool = True) -> Iterator[bool]:
    """Serve all allocations from the heap inside the block; yields whether it applied.

    Nests (a sweep's probe inside a stage's block): mmap is allowed again when the
    outermost block ends. Afterwards the process keeps :func:`tune_malloc`'s settings
    (glibc cannot report the previous values to restore, and any ``mallopt`` call ends
    its dynamic threshold anyway)."""
    global _depth
    mallopt = _get_mallopt() if enabled else None
    if not mallopt or not tune_malloc():
        yield False
        return
    # no trimming either: a forward larger than the trim threshold (lite0 at batch 64 holds
    # > 1 GiB of maps) would otherwise hand its pages back after every pass and fault them
    # in again on the next one (measured: runs bimodal, 28 s or 63-71 s for the same scan)
    if _depth == 0 and not (mallopt(_M_MMAP_MAX, 0) == 1
                            and mallopt(_M_TRIM_THRESHOLD, -1) == 1):
        yield False
        return
    _depth += 1
    try:
        yield True
    finally:
        _depth -= 1
        if _depth == 0:
            mallopt(_M_MMAP_MAX, GLIBC_MMAP_MAX)
            mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
