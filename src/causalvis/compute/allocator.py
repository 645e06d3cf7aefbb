"""glibc malloc settings for the compute stages.

Why: PyTorch's CPU kernels allocate and free large buffers on every step of a feature
visualization (and every batch of a sweep). glibc serves blocks above its dynamic mmap
threshold with fresh ``mmap``/``munmap`` calls and trims the top of its heap after large
frees, so each step pays page faults on memory it just gave back. Measured on the
feature-visualization stage here: a third of the CPU time was spent in the kernel
(benchmarks/bench_allocator.py). Raising the mmap threshold and the trim threshold keeps
the freed memory in the heap for the next step; results are bit-identical (only where the
bytes live changes). The price: up to ``TRIM_THRESHOLD`` of freed memory stays mapped.

``CAUSALVIS_MALLOC_TUNING=0`` turns it off (also for benchmarks comparing both).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger("causalvis.compute")

# mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems
TRIM_THRESHOLD = 1024 * 1024 * 1024
TOP_PAD = 64 * 1024 * 1024
ENV = "CAUSALVIS_MALLOC_TUNING"

_applied: bool | None = None


def tune_malloc() -> bool:
    """Apply the settings once per process (idempotent); True if glibc accepted them.
    A no-op returning False off Linux/glibc or when ``CAUSALVIS_MALLOC_TUNING=0``."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get(ENV, "1").strip() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (_M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (_M_TOP_PAD, TOP_PAD),
        )
    )
    if not ok:
        log.debug("mallopt rejected a setting; glibc defaults stay in place")
    _applied = ok
    return ok
