"""inspectkit.allocator: on glibc, the mmap threshold is fixed (the call takes effect, and again when repeated) and
a large block goes back to the system when freed; elsewhere the call is a no-op that says so."""

from __future__ import annotations

import platform
import sys

import numpy as np
import psutil

from inspectkit.allocator import MMAP_THRESHOLD, fixed_mmap_threshold

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
