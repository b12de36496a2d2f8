"""glibc's malloc, tuned by one policy: freed memory goes back to the system, at the latest when the stretch of
work that reuses it ends, so that a long run's peak memory does not grow with the number of images it has seen.

glibc's default lets the mmap threshold (the size from which a block gets a mapping of its own, returned when
freed) rise after each large free, up to 32 MiB; blocks below it come from the heap, whose freed memory glibc keeps.
- A streamed run (the detector's fit and scoring) fixes the threshold at 32 MiB (``fixed_mmap_threshold``): each
  large block is returned when freed.
- A stretch that makes the same large blocks over and over (the classifier trunk's batches of up to 300 MB) may
  instead keep them on the heap while it runs, and trims the heap when it ends: ``evaluation.heap_reuse``, which
  moves here with the inference engine (it stays beside its one caller until then).
Every function here is a no-op elsewhere than glibc (macOS, Windows, musl), where the allocator keeps its own policy.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD = 32 * 2**20  # blocks from 32 MiB up (feature batches, distance matrices) get their own mapping


def fixed_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold at 32 MiB instead of letting it rise after each large free (its default).

    With the rising threshold, the many large same-sized blocks of a streamed fit end up on the heap, which glibc
    keeps: peak RSS grew with the number of training images. Fixed, each block of 32 MiB or more is its own
    mapping, returned when freed. Measured on 400 synthetic images at 320 px: peak 1.69 GB (default) vs 1.61 GB,
    features 9.1 s vs 9.9 s; a 128 KiB threshold made feature extraction 1.7x slower (page faults on every
    activation). Setting it again changes nothing, so every run may call it. Returns whether it took effect."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
