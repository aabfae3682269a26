"""A child process: executes messages the supervisor sends, one at a time.

Protocol over a duplex pipe (both ends are our own processes, forked from the
same image; only broker bodies, which stay opaque bytes here, come from outside):

    supervisor -> child   list[(seq, body, unrun)]  jobs in order; `unrun` is None (run
                                              it) or (reason, may_retry): settle without
                                              running (its run was lost, or it was
                                              delivered too often)
                          CANCEL              drop queued jobs, reply ("cancelled", seqs)
                          STOP                finish queued jobs, then exit 0
    child -> supervisor   ("limit", seq, s)   the job about to run has this hard time
                                              limit (sent only when it differs from
                                              QSCALE_HARD_TIME_LIMIT)
                          ("ran", seq, None)  a hard-limited task returned: what is left
                                              (recording its outcome) gets SETTLE_GRACE
                          ("done", seq, compact(Outcome), over_rss)
                          ("cancelled", seqs) jobs handed back unstarted (after CANCEL, or
                                              on its own once over max RSS)

The child decodes each body (the executor is the boundary); the supervisor never
does. A child leads its own process group, so a hard kill takes the processes its
task started with it.

The child reads everything waiting on the pipe before starting each job, so a
CANCEL sent during a long task stops the jobs queued behind it from starting.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import select
import signal
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Protocol

from worker.runtime.outcome import Outcome, Settle
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

CANCEL = "cancel"
STOP = "stop"
_PR_SET_PDEATHSIG = 1
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ExecutorLike(Protocol):
    def execute(self, body: bytes,
                report: Callable[[str, float | None], None] | None = None) -> Outcome: ...

    def settle_unrun(self, body: bytes, reason: str, *, may_retry: bool) -> Outcome: ...


Unrun = tuple[str, bool] | None  # (reason, may_retry): settle without running


ExecutorFactory = Callable[[WorkerSettings], ExecutorLike]


def compact(outcome: Outcome) -> Outcome | tuple[str, str, float, float | None, str | None]:
    """A plain ack travels as a tuple: pickling one is ~10x cheaper than an Outcome."""
    if outcome.settle is Settle.ACK and not outcome.follow_ups and not outcome.reason \
            and not outcome.detail and outcome.retry_body is None:
        return (outcome.task, outcome.status, outcome.runtime_s, outcome.queue_wait_s,
                outcome.task_id)
    return outcome


def expand(payload: Outcome | tuple[str, str, float, float | None, str | None]) -> Outcome:
    """The Outcome a `compact()` payload stands for."""
    if isinstance(payload, Outcome):
        return payload
    task, status, runtime_s, queue_wait_s, task_id = payload
    return Outcome(settle=Settle.ACK, status=status, task=task, task_id=task_id,
                   runtime_s=runtime_s, queue_wait_s=queue_wait_s)


def ready_check(conn: Connection) -> Callable[[], bool]:
    """A cheap "is a message waiting?" for `conn` (Connection.poll builds a selector per call).

    Connection reads exactly one message's bytes per recv (no user-space buffer), so
    the descriptor being readable means a message (or EOF) is waiting.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return lambda: bool(poller.poll(0))


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
    with contextlib.suppress(OSError):  # the supervisor sets it too; whoever is first
        os.setpgid(0, 0)
    # The supervisor's signal wake-up pipe is not ours to write (SIGALRM of the soft
    # time limit would wake it for nothing).
    signal.set_wakeup_fd(-1)
    # Terminal Ctrl-C reaches the whole process group; only the supervisor decides.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    executor = executor_factory(settings)
    max_rss = settings.max_rss_mb * 1024 * 1024
    queued: deque[tuple[int, bytes, Unrun]] = deque()
    stopping = False
    bloated = False  # over max RSS: run nothing more, hand queued work back

    def give_back() -> None:
        dropped = [seq for seq, _, _ in queued]
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

    waiting = ready_check(conn)
    running = 0  # seq of the job being executed, for its reports

    def report(what: str, value: float | None) -> None:
        conn.send((what, running, value))

    try:
        while True:
            if not queued:
                if stopping:
                    return
                take(conn.recv())
            while waiting():
                take(conn.recv())
            if not queued:
                continue
            seq, body, unrun = queued.popleft()
            if unrun is None:
                running = seq
                outcome = executor.execute(body, report)
            else:
                outcome = executor.settle_unrun(body, unrun[0], may_retry=unrun[1])
            over = max_rss > 0 and rss_bytes() > max_rss
            conn.send(("done", seq, compact(outcome), over))
            if over:
                bloated = True
                if queued:
                    give_back()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the supervisor is gone: its claims return to the queue without us
