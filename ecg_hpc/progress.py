"""A dependency-free progress line for long work (conversion, generation, sweeps), printed to stderr."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts finished items and prints ``label: n/total (pct) rate ETA`` at most every ``interval`` s."""

    def __init__(self, total: int, label: str, unit: str = "it", interval: float = 1.0,
                 stream: TextIO | None = None) -> None:
        self.total, self.label, self.unit, self.interval = total, label, unit, interval
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self.nbytes = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1, nbytes: int = 0) -> None:
        """Record ``n`` more finished items (``nbytes`` of data moved, shown as MB/s) and print a line if the
        interval has passed or all are done."""
        self.done += n
        self.nbytes += nbytes
        now = time.monotonic()
        if now - self._last >= self.interval or self.done >= self.total:
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        elapsed = max(now - self._start, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta_txt = f"{eta:.0f}s" if eta != float("inf") else "?"
        end = "\n" if self.done >= self.total or not self.stream.isatty() else "\r"
        throughput = f" {self.nbytes / elapsed / 1e6:.1f} MB/s" if self.nbytes else ""
        self.stream.write(f"{self.label}: {self.done}/{self.total} ({pct:.0f}%) "
                          f"{rate:.1f} {self.unit}/s{throughput} ETA {eta_txt}{end}")
        self.stream.flush()
