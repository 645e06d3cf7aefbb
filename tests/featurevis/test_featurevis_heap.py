"""The render loop's buffers come from the malloc heap (no fresh mmap pages per step):
large blocks stop being mmapped inside the block, mmap comes back after it, the switch
turns it off, and a render's results are bit-identical either way."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import pytest
import torch

from causalvis.featurevis import FourierParam, RenderSettings, TransformSpec, render, unit_objective
from causalvis.malloc import ENV, heap_allocations


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mmapped_blocks():
    """glibc's count of live mmapped blocks (``mallinfo2().hblks``), or skip."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc only")
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    fn = getattr(libc, "mallinfo2", None)
    if fn is None:
        pytest.skip("no mallinfo2 (glibc < 2.33 or another libc)")
    fn.restype = _Mallinfo2
    return lambda: fn().hblks


def test_large_blocks_come_from_the_heap_inside_and_from_mmap_after(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    hblks = _mmapped_blocks()
    with heap_allocations() as applied:
        assert applied
        before = hblks()
        inside = torch.empty(80 * 2**20, dtype=torch.uint8)  # above any mmap threshold
        assert hblks() == before
        del inside
    # more than the heap keeps free (trim threshold 1 GiB); never touched, so never paged in
    before = hblks()
    after = torch.empty(2 * 2**30, dtype=torch.uint8)
    assert hblks() == before + 1
    del after


def test_the_switch_leaves_malloc_alone(monkeypatch):
    monkeypatch.setenv(ENV, "0")
    with heap_allocations() as applied:
        assert not applied
    with heap_allocations(enabled=False) as applied:
        assert not applied


def test_a_render_is_bit_identical_with_and_without(lite0):
    spec = TransformSpec(jitter=4, scales=(1.0, 0.95), rotate_degrees=5, jitter_after=2,
                         out_size=48)
    runs = []
    for heap in (True, False):
        settings = RenderSettings(steps=2, transforms=spec, crop=2, heap_allocations=heap)
        runs.append(render(lite0, unit_objective("blocks.1.1", [1, 2], 1),
                           FourierParam([5, 6], 40), [5, 6], settings))
    assert runs[0].history == runs[1].history
    assert torch.equal(runs[0].images, runs[1].images)
    assert torch.equal(runs[0].values, runs[1].values)


def test_blocks_nest_and_mmap_returns_after_the_outermost(monkeypatch):
    """A probe's block inside a sweep's: the inner end must not switch mmap back on."""
    monkeypatch.delenv(ENV, raising=False)
    hblks = _mmapped_blocks()
    with heap_allocations(), heap_allocations() as inner:
        assert inner
    with heap_allocations():
        with heap_allocations():
            pass
        before = hblks()
        still_heap = torch.empty(80 * 2**20, dtype=torch.uint8)
        assert hblks() == before  # the inner block's end left mmap off
        del still_heap
    before = hblks()
    after = torch.empty(2 * 2**30, dtype=torch.uint8)
    assert hblks() == before + 1
    del after
