"""The task bodies every framework runs, and how a finished task reports itself.

Completion is reported through a shared memory-mapped file with one byte per
task: a finished task increments the byte at its sequence number. That is a
plain memory write (no syscall, no broker, nothing that can block), so counting
costs every framework the same ~100 ns per task, and the benchmark process
sees progress, losses and duplicates by reading the file.
"""

from __future__ import annotations

import mmap
import os

COMPLETION_FILE_ENV = "BENCH_COMPLETION_FILE"
BROKER_URL_ENV = "BENCH_BROKER_URL"
QUEUE_ENV = "BENCH_QUEUE"

# A fixed amount of pure-Python work: ~10.5 ms of CPU per task on the dev machine.
# Fixed rather than calibrated per run, so every framework does identical work.
CPU_LOOP_ITERATIONS = 150_000

WORKLOADS = ("noop", "cpu")

_board: mmap.mmap | None = None


def _completion_board() -> mmap.mmap:
    """The shared file, mapped once per process (a mapping survives fork)."""
    global _board  # noqa: PLW0603 - a per-process cache is the point
    if _board is None:
        path = os.environ.get(COMPLETION_FILE_ENV)
        if not path:
            raise RuntimeError(f"{COMPLETION_FILE_ENV} is not set; run tasks via bench.run")
        with open(path, "r+b") as file:
            _board = mmap.mmap(file.fileno(), 0)
    return _board


def report_done(seq: int) -> None:
    """Tell the benchmark process that task `seq` has executed."""
    board = _completion_board()
    board[seq] = min(board[seq] + 1, 255)


def burn_cpu(iterations: int = CPU_LOOP_ITERATIONS) -> int:
    """Deterministic pure-Python arithmetic that holds the GIL the whole time."""
    acc = 0
    for k in range(iterations):
        acc = (acc + k * k) % 1_000_003
    return acc


def run_task(workload: str, seq: int) -> None:
    """The body shared by every framework's task function."""
    if workload == "cpu":
        burn_cpu()
    report_done(seq)


def broker_url() -> str:
    """The broker the framework under test uses, handed down by the harness."""
    return os.environ[BROKER_URL_ENV]


def queue_name() -> str:
    return os.environ[QUEUE_ENV]
