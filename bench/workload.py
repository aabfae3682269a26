"""The task bodies every framework runs, and how a finished task reports itself.

Completion is reported over a Unix datagram socket to the benchmark process: one
tiny send per task, no round trip and no broker involved, so counting costs every
framework the same couple of microseconds. A full socket buffer blocks the sender
instead of dropping, so no completion is ever lost. The task's sequence number
travels in the datagram, which lets the receiver count duplicates and losses.
"""

from __future__ import annotations

import os
import socket

SIGNAL_SOCKET_ENV = "BENCH_SIGNAL_SOCKET"
BROKER_URL_ENV = "BENCH_BROKER_URL"
QUEUE_ENV = "BENCH_QUEUE"

# A fixed amount of pure-Python work, about 20 ms on one idle core of the dev machine.
# Fixed rather than calibrated per run so every framework does identical work.
CPU_LOOP_ITERATIONS = 150_000

WORKLOADS = ("noop", "cpu")

_sender: socket.socket | None = None
_sender_pid = 0


def _signal_socket() -> socket.socket:
    """One connected datagram socket per process (re-created after a fork)."""
    global _sender, _sender_pid
    if _sender is None or _sender_pid != os.getpid():
        path = os.environ.get(SIGNAL_SOCKET_ENV)
        if not path:
            raise RuntimeError(f"{SIGNAL_SOCKET_ENV} is not set; run tasks via bench.run")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.connect(path)
        _sender, _sender_pid = sock, os.getpid()
    return _sender


def report_done(seq: int) -> None:
    """Tell the benchmark process that task `seq` has executed."""
    _signal_socket().send(seq.to_bytes(4, "little"))


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
