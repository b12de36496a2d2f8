"""inspectkit.allocator: on glibc, the mmap threshold is fixed (the call takes effect, and again when repeated) and
a large block goes back to the system when freed; inside ``heap_reuse`` freed blocks stay for reuse and are returned
when it ends; elsewhere the calls are no-ops."""

from __future__ import annotations

import platform
import sys

import numpy as np
import psutil
import pytest

from inspectkit.allocator import MMAP_THRESHOLD, fixed_mmap_threshold, heap_reuse

MB = 2**20
ON_GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def test_the_threshold_is_fixed_on_glibc_only():
    assert fixed_mmap_threshold() is ON_GLIBC
    assert fixed_mmap_threshold() is ON_GLIBC  # every run may call it again


def test_a_block_above_the_threshold_is_returned_when_freed():
    fixed_mmap_threshold()
    process = psutil.Process()
    before = process.memory_info().rss
    block = np.ones(2 * MMAP_THRESHOLD, dtype=np.uint8)
    held = process.memory_info().rss
    del block
    freed = process.memory_info().rss
    assert held - before >= 60 * MB
    assert held - freed >= 60 * MB  # not kept on a heap for later: the run's peak cannot creep up with it


def _rss_after_a_freed_block() -> tuple[int, int]:
    """RSS while a block of twice the threshold is held, and after it is freed."""
    process = psutil.Process()
    block = np.ones(2 * MMAP_THRESHOLD, dtype=np.uint8)
    held = process.memory_info().rss
    del block
    return held, process.memory_info().rss


@pytest.mark.skipif(not ON_GLIBC, reason="heap_reuse changes nothing outside glibc")
def test_heap_reuse_keeps_freed_blocks_while_it_runs_and_returns_them_after():
    process = psutil.Process()
    with heap_reuse():
        held, freed = _rss_after_a_freed_block()
        assert held - freed < 8 * MB  # kept on the heap for the next batch
        again_held, _ = _rss_after_a_freed_block()
        assert again_held - held < 8 * MB  # the next block reuses those pages instead of growing
    after = process.memory_info().rss
    assert freed - after >= 60 * MB  # trimmed when the stretch ends
    held, freed = _rss_after_a_freed_block()
    assert held - freed >= 60 * MB  # and the default comes back: a large block is its own mapping again
