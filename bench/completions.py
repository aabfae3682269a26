"""Counts task completions reported by `bench.workload.report_done`.

A background thread reads datagrams (4-byte sequence numbers) from a Unix socket
and records when the first and the n-th distinct task finished. Repeats of a
sequence number are counted separately: they are re-executions, not progress.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time


class CompletionCounter:
    """Listens on a fresh Unix datagram socket for the duration of one run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self._dir = tempfile.mkdtemp(prefix="qscale-bench-")
        self.path = os.path.join(self._dir, "done.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self._sock.bind(self.path)
        self._sock.settimeout(0.2)
        self._seen = bytearray(expected)
        self.distinct = 0
        self.duplicates = 0
        self.out_of_range = 0
        self.first_at: float | None = None
        self.all_done_at: float | None = None
        self._finished = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="completions", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        recv = self._sock.recv
        while not self._stop.is_set():
            try:
                data = recv(16)
            except TimeoutError:
                continue
            except OSError:
                return
            now = time.perf_counter()
            seq = int.from_bytes(data[:4], "little")
            if seq >= self.expected:
                self.out_of_range += 1
                continue
            if self._seen[seq]:
                self.duplicates += 1
                continue
            self._seen[seq] = 1
            self.distinct += 1
            if self.first_at is None:
                self.first_at = now
            if self.distinct == self.expected:
                self.all_done_at = now
                self._finished.set()

    def wait_all(self, timeout: float) -> bool:
        """Block until every task reported, or `timeout` seconds passed."""
        return self._finished.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._sock.close()
        try:
            os.unlink(self.path)
            os.rmdir(self._dir)
        except OSError:
            pass
