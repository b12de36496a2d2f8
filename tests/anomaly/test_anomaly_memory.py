"""inspectkit.anomaly.memory: PeakMemory sees an allocation made and freed inside its block, measures that block
alone, and stops sampling when the block ends."""

from __future__ import annotations

import time

import numpy as np
import psutil

from inspectkit.anomaly.memory import PeakMemory

MB = 2**20


def test_peak_memory_sees_a_200_mb_allocation_freed_inside_the_block():
    with PeakMemory(interval=0.005) as peak:
        block = np.ones(200 * MB, dtype=np.uint8)  # ones, not zeros: every page is touched, so it is resident
        during = psutil.Process().memory_info().rss  # not "before + 200 MB": the heap may reuse freed pages
        time.sleep(0.1)  # many sampling intervals
        del block
    after = psutil.Process().memory_info().rss
    assert during - after >= 150 * MB  # the block was resident and was handed back (its own mapping)
    assert peak.peak_bytes >= during - 1 * MB  # the sampler saw it, though it was gone when the block ended
    assert peak.mb == peak.peak_bytes / MB
    assert peak.peak_bytes - after >= 150 * MB  # the peak is the block's, not what is left after it


def test_each_block_gets_its_own_peak_and_the_sampler_stops():
    with PeakMemory(interval=0.005) as big:
        block = np.ones(150 * MB, dtype=np.uint8)
        time.sleep(0.05)
        del block
    with PeakMemory(interval=0.005) as small:
        time.sleep(0.05)
    assert big.mb - small.mb >= 100  # the second block does not inherit the first one's peak
    assert not big._thread.is_alive() and not small._thread.is_alive()
