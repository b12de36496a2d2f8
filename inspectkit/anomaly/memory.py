"""Peak resident memory of this process over a stretch of work, sampled in a background thread (psutil)."""

from __future__ import annotations

import threading

import psutil


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.mb``: the largest RSS seen while the block ran.

    Unlike ``getrusage``'s lifetime maximum, this measures one block, so each category of a benchmark run gets its
    own number. Sampled every ``interval`` seconds; a spike shorter than that can be missed.
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_bytes = 0
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> PeakMemory:
        self._sample()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    @property
    def mb(self) -> float:
        return self.peak_bytes / 2**20
