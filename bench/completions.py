"""Watches the completion file written by `bench.workload.report_done`.

The file holds one byte per task; a task that ran increments its byte. A
background thread scans the file every few milliseconds and records when the
first and the last distinct task finished. Bytes above 1 are re-executions.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import tempfile
import threading
import time

SCAN_SECONDS = 0.002


class CompletionCounter:
    """A fresh completion file and its watcher, for the duration of one run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        fd, self.path = tempfile.mkstemp(prefix="qscale-bench-", suffix=".done")
        os.ftruncate(fd, expected)
        self._map = mmap.mmap(fd, expected)
        os.close(fd)
        self.distinct = 0
        self.duplicates = 0
        self.first_at: float | None = None
        self.all_done_at: float | None = None
        self._finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="completions", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.perf_counter()
            self.distinct = self.expected - self._map[:].count(0)
            if self.distinct and self.first_at is None:
                self.first_at = now
            if self.distinct == self.expected:
                self.all_done_at = now
                self._finished.set()
                return
            time.sleep(SCAN_SECONDS)

    def wait_all(self, timeout: float) -> bool:
        """Block until every task reported, or `timeout` seconds passed."""
        return self._finished.wait(timeout)

    def close(self) -> None:
        """Stop watching; counts stay readable, the file is removed."""
        self._stop.set()
        self._thread.join(timeout=2)
        snapshot = self._map[:]
        self.distinct = self.expected - snapshot.count(0)
        self.duplicates = sum(snapshot) - self.distinct  # executions beyond each task's first
        self._map.close()
        with contextlib.suppress(OSError):
            os.unlink(self.path)
