"""A child process: executes messages the supervisor sends, one at a time.

Protocol over a duplex pipe (both ends are our own processes, forked from the
same image; only broker bodies, which stay opaque bytes here, come from outside):

    supervisor -> child   list[(seq, body)]   jobs to run in order
                          CANCEL              drop queued jobs, reply ("cancelled", seqs)
                          STOP                finish queued jobs, then exit 0
    child -> supervisor   ("done", seq, Outcome, over_rss)
                          ("cancelled", seqs) jobs handed back unstarted (after CANCEL, or
                                              on its own once over max RSS)

The child reads everything waiting on the pipe before starting each job, so a
CANCEL sent during a long task stops the jobs queued behind it from starting.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from worker.outcome import Outcome
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

CANCEL = "cancel"
STOP = "stop"
_PR_SET_PDEATHSIG = 1
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ExecutorLike(Protocol):
    def execute(self, delivery_body: bytes) -> Outcome: ...


ExecutorFactory = Callable[[WorkerSettings], ExecutorLike]


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size from /proc/<pid>/statm (second field, in pages)."""
    with open(f"/proc/{pid}/statm", "rb") as statm:
        return int(statm.read().split()[1]) * _PAGE_SIZE


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL us when the supervisor dies, so no orphan keeps running."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: rely on the pipe EOF instead
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def child_main(conn: Connection, settings: WorkerSettings, parent_pid: int,
               executor_factory: ExecutorFactory) -> None:
    """Entry point of a forked child; returns (exit 0) on STOP or when the pipe closes."""
    _die_with_parent(parent_pid)
    # Terminal Ctrl-C reaches the whole process group; only the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    executor = executor_factory(settings)
    max_rss = settings.max_rss_mb * 1024 * 1024
    queued: deque[tuple[int, bytes]] = deque()
    stopping = False
    bloated = False  # over max RSS: run nothing more, hand queued work back

    def give_back() -> None:
        dropped = [seq for seq, _ in queued]
        queued.clear()
        conn.send(("cancelled", dropped))

    def take(message: Any) -> None:
        nonlocal stopping
        if message == CANCEL:
            give_back()
        elif message == STOP:
            stopping = True
        else:
            queued.extend(message)
            if bloated:
                give_back()

    try:
        while True:
            if not queued:
                if stopping:
                    return
                take(conn.recv())
            while conn.poll():
                take(conn.recv())
            if not queued:
                continue
            seq, body = queued.popleft()
            outcome = executor.execute(body)
            over = max_rss > 0 and rss_bytes() > max_rss
            conn.send(("done", seq, outcome, over))
            if over:
                bloated = True
                if queued:
                    give_back()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the supervisor is gone: its claims return to the queue without us
