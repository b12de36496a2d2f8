"""CPU thread control: run many small sequential tensor steps on one thread, where synchronising threads costs more
than it saves (measured: batched 152x152 inverses and greedy coreset steps ran 10-20x slower on 2 busy cores)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch single-threaded inside the block, then restore the thread count."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
