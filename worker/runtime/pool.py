"""The pool of child processes: spawning, job bookkeeping, dispatch and reaping.

The supervisor owns one Pool. Each child has a FIFO of jobs sent to it; the
head is the job it is running (the next one starts when the head's result
arrives, which is when the pool stamps its start time for the hard limit).
Each child leads its own process group: a kill takes the task's own processes
too. A child that cannot be started (no memory, no descriptors, no pids: EAGAIN,
ENOMEM, EMFILE) leaves its slot empty for a back-off; the supervisor lives on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from worker.brokers.base import Delivery
from worker.runtime.child import CANCEL, STOP, ExecutorFactory, Unrun, child_main, ready_check
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_FORK = multiprocessing.get_context("fork")
PIPE_SAFE_BYTES = 64 * 1024  # well under the Linux socketpair buffer (~208 KiB)


@dataclass
class Job:
    """One claimed delivery on its way through a child."""

    seq: int
    delivery: Delivery
    started: float = 0.0  # monotonic; set when it becomes the head of a child's FIFO
    hard_limit: float | None = None   # QSCALE_HARD_TIME_LIMIT unless the child reports one
    unrun: Unrun = None   # settle without running: (reason, may_retry)
    unrun_deaths: int = 0  # children that died settling it unrun
    # Handed back to the broker while queued in a child (drain, cordon): the child was
    # told to drop it; if it had started it already, its outcome is ignored.
    given_back: bool = False
    head_only: bytes | None = None  # oversized: the child gets (and the DLQ keeps) this head

    @property
    def payload(self) -> bytes:
        return self.delivery.body if self.head_only is None else self.head_only


@dataclass(eq=False)  # identity semantics: children are compared as objects
class Child:
    slot: int
    process: BaseProcess
    conn: Connection
    born: float
    jobs: deque[Job] = field(default_factory=deque)
    done: int = 0
    retire_cause: str | None = None   # set when it should be replaced (max_tasks, max_rss)
    retiring: bool = False            # no new work; STOP sent once idle
    stop_sent: bool = False
    kill_cause: str | None = None     # set when the supervisor SIGKILLed it
    overdue_seq: int | None = None    # the job that ran past its hard limit
    waiting: Callable[[], bool] = lambda: False  # a message is ready on `conn`

    @property
    def pid(self) -> int:
        return self.process.pid or 0

    @property
    def accepting(self) -> bool:
        # A child past its task budget keeps working until its turn to be replaced comes
        # (recycling is one child at a time, so capacity never drops by more than one);
        # a bloated one (max_rss) runs nothing more: it hands queued work back.
        return not (self.retire_cause == "max_rss" or self.retiring or self.stop_sent
                    or self.kill_cause)

    def take_back(self, seqs: set[int], now: float) -> list[Job]:
        """Remove the jobs it handed back unstarted (returning those not given back
        already); the next one (if any) starts now."""
        dropped = [job for job in self.jobs if job.seq in seqs and not job.given_back]
        self.jobs = deque(job for job in self.jobs if job.seq not in seqs)
        if self.jobs and self.jobs[0].started == 0.0:
            self.jobs[0].started = now
        return dropped

    def exit_cause(self) -> str:
        """Why it exited: the supervisor's kill cause, a recycle cause, or a crash."""
        if self.kill_cause:
            return self.kill_cause
        if self.stop_sent:
            return self.retire_cause or "stopped"
        return "crash"

    def lost_reason(self, job: Job) -> str:
        """The reason recorded for `job`, which was running when this child died."""
        if self.kill_cause == "hard_time_limit":
            return f"hard time limit exceeded after {job.hard_limit:g}s"
        return f"child process died while running the task ({self.describe_exit()})"

    def describe_exit(self) -> str:
        code = self.process.exitcode
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exited with code {code}"


def capacity(settings: WorkerSettings, service_time: float | None) -> int:
    """Messages to hold at once: one per child plus a prefetch sized by service time.

    Short tasks get deep per-child queues (claims, acks and pipe writes are batched);
    long ones get none, so work stays in the broker for other pods to take.
    """
    n = settings.concurrency
    if settings.prefetch:
        return n + settings.prefetch
    if service_time is None:
        return 2 * n
    if service_time < 0.002:
        return 32 * n
    if service_time < 0.02:
        return 8 * n
    if service_time < 0.2:
        return 2 * n
    return n


def read_ahead(settings: WorkerSettings, service_time: float | None) -> int:
    """Messages a push broker (RabbitMQ) may send beyond our capacity.

    Tiny tasks finish a whole capacity in less than the broker's round trip on a
    busy host, so the next batch must already be on its way; longer ones get none,
    so work stays in the broker for other pods.
    """
    if settings.prefetch or service_time is None or service_time >= 0.002:
        return 0
    return capacity(settings, service_time)


class Pool:
    """Children indexed by slot (0..concurrency-1); at most one child per slot."""

    def __init__(self, settings: WorkerSettings, executor_factory: ExecutorFactory) -> None:
        self.settings = settings
        self.executor_factory = executor_factory
        self.children: dict[int, Child] = {}
        # Children's pipes and exit sentinels, registered once (not per wait).
        self.selector = selectors.DefaultSelector()
        self._quick_deaths: dict[int, int] = {}
        self._respawn_at: dict[int, float] = {}
        self.spawn_failures = 0

    # -- lifecycle --

    def spawn(self, slot: int, now: float) -> Child | None:
        """Start the child of `slot`; None (and a back-off for the slot) when the system
        refuses a pipe or a process right now."""
        try:
            parent_end, child_end = _FORK.Pipe(duplex=True)
        except OSError as exc:
            self._spawn_failed(slot, now, exc)
            return None
        process = _FORK.Process(
            target=child_main, name=f"qscale-child-{slot}", daemon=False,
            args=(child_end, self.settings, os.getpid(), self.executor_factory))
        try:
            process.start()
        except OSError as exc:
            parent_end.close()
            child_end.close()
            self._spawn_failed(slot, now, exc)
            return None
        child_end.close()
        with contextlib.suppress(OSError):  # the child does the same; whoever is first
            os.setpgid(process.pid or 0, process.pid or 0)
        child = Child(slot=slot, process=process, conn=parent_end, born=time.monotonic(),
                      waiting=ready_check(parent_end))
        self.children[slot] = child
        self.selector.register(parent_end, selectors.EVENT_READ, child)
        self.selector.register(process.sentinel, selectors.EVENT_READ, child)
        log.debug("child started slot=%d pid=%d", slot, child.pid)
        return child

    def _spawn_failed(self, slot: int, now: float, exc: OSError) -> None:
        count = self._quick_deaths.get(slot, 0) + 1
        self._quick_deaths[slot] = count
        delay = min(10.0, 0.25 * 2 ** count)
        self._respawn_at[slot] = now + delay
        self.spawn_failures += 1
        log.warning("could not start a child process slot=%d (%s); retrying in %.1fs",
                    slot, exc, delay)

    def fill(self, now: float) -> list[Child]:
        """Start children for empty slots whose respawn back-off has passed."""
        started = []
        for slot in range(self.settings.concurrency):
            if slot not in self.children and self._respawn_at.get(slot, 0.0) <= now:
                child = self.spawn(slot, now)
                if child is not None:
                    started.append(child)
        return started

    def forget(self, child: Child, now: float, had_job: bool) -> None:
        """Remove a dead child; back off respawning a slot whose children die at start-up.

        A child that died running a task is replaced at once (the task is to blame,
        and outcome_for_lost bounds its retries); one that dies before its first task
        is broken by itself, and respawning it in a tight loop would only burn CPU.
        """
        self.children.pop(child.slot, None)
        for source in (child.conn, child.process.sentinel):
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(source)
        child.conn.close()
        child.process.join(timeout=0)
        died_young = now - child.born < 1.0 and child.done == 0 and not child.stop_sent
        if died_young and not had_job and child.kill_cause is None:
            count = self._quick_deaths.get(child.slot, 0) + 1
            self._quick_deaths[child.slot] = count
            self._respawn_at[child.slot] = now + min(10.0, 0.25 * 2 ** count)
        else:
            self._quick_deaths.pop(child.slot, None)
            self._respawn_at.pop(child.slot, None)

    def kill(self, child: Child, cause: str) -> None:
        """SIGKILL the child and every process its task started (its process group)."""
        child.kill_cause = child.kill_cause or cause
        kill_group(child.pid)

    def next_to_retire(self) -> Child | None:
        """The child to replace next: none while another is still being replaced;
        bloated children (max_rss) before those past their task budget."""
        children = list(self.children.values())
        if any(c.retiring for c in children):
            return None
        due = [c for c in children if c.retire_cause and not c.kill_cause]
        if not due:
            return None
        return max(due, key=lambda c: (c.retire_cause == "max_rss", c.done))

    def stop_when_idle(self, child: Child) -> None:
        if not child.stop_sent and not child.jobs:
            child.stop_sent = True
            with contextlib.suppress(OSError):  # dying anyway: the sentinel will tell
                child.conn.send(STOP)

    def cancel_queued(self, children: Iterable[Child] | None = None) -> list[Delivery]:
        """Take back the jobs queued behind each child's running one (default: all
        children), at once: returns their deliveries.

        The child is told to drop them (CANCEL) and replies once its running task ends;
        they stay in its FIFO until then, marked `given_back`, so its bookkeeping and
        hard limit still hold. One it started before the CANCEL arrived runs to its
        end and its outcome is ignored (the message runs again elsewhere)."""
        taken: list[Delivery] = []
        for child in list(self.children.values()) if children is None else children:
            queued = [job for job in list(child.jobs)[1:] if not job.given_back]
            if queued and not child.kill_cause:
                with contextlib.suppress(OSError):
                    child.conn.send(CANCEL)
                for job in queued:
                    job.given_back = True
                    taken.append(job.delivery)
        return taken

    def drop_queued(self, child: Child, jobs: Iterable[Job]) -> None:
        """Never start these jobs queued in `child` (their messages are not ours any more):
        CANCEL makes it hand back all its queued jobs; the others come back through
        "cancelled" and are dispatched again."""
        for job in jobs:
            job.given_back = True
        with contextlib.suppress(OSError):
            child.conn.send(CANCEL)

    # -- work --

    def dispatch(self, pending: deque[Job], per_child: int, now: float) -> None:
        """Spread pending jobs over accepting children, least loaded first."""
        eligible = sorted((c for c in self.children.values() if c.accepting),
                          key=lambda c: len(c.jobs))
        if not eligible or not pending:
            return
        budget = self.settings.max_tasks_per_child
        # While another child is being replaced, one at its task budget keeps going.
        recycling = any(c.retiring for c in self.children.values())
        batches: dict[int, list[Job]] = {}
        # Bytes a busy child may have waiting unread in its pipe: more could fill the
        # socket buffer and block the supervisor until that child's current task ends.
        unread = {c.slot: sum(len(j.payload) for j in list(c.jobs)[1:])
                  for c in eligible if c.jobs}
        for level in range(per_child):
            for child in eligible:
                if not pending:
                    break
                batch = batches.get(child.slot, [])
                given = len(child.jobs) + len(batch)
                if given > level or (budget and child.done + given >= budget and not recycling):
                    continue
                size = len(pending[0].payload)
                if child.jobs or batch:  # busy: it reads this only between tasks
                    if unread.get(child.slot, 0) + size > PIPE_SAFE_BYTES:
                        continue
                    unread[child.slot] = unread.get(child.slot, 0) + size
                batches.setdefault(child.slot, batch).append(pending.popleft())
        for slot, jobs in batches.items():
            child = self.children[slot]
            if not child.jobs:
                jobs[0].started = now
            child.jobs.extend(jobs)
            with contextlib.suppress(OSError):  # died meanwhile: recovered when reaped
                child.conn.send([(job.seq, job.payload, job.unrun) for job in jobs])

    def overdue(self, now: float) -> list[tuple[Child, Job]]:
        """Children whose running job has passed its hard limit, with that job."""
        found = []
        for child in self.children.values():
            job = child.jobs[0] if child.jobs else None
            if job is None or child.kill_cause or not job.hard_limit:
                continue
            if now - job.started > job.hard_limit:
                found.append((child, job))
        return found

    def seconds_to_hard_limit(self, now: float) -> float:
        """Time until the first running job may pass its hard limit (inf: none can)."""
        soonest = math.inf
        for child in self.children.values():
            head = child.jobs[0] if child.jobs else None
            if head is not None and head.hard_limit:
                soonest = min(soonest, max(0.0, head.started + head.hard_limit - now))
        return soonest

    def busy(self) -> int:
        return sum(1 for c in self.children.values() if c.jobs)

    def queued_jobs(self) -> int:
        """Jobs the children hold for us (not those already handed back)."""
        return sum(1 for c in self.children.values() for job in c.jobs if not job.given_back)

    def pids(self) -> tuple[int, ...]:
        return tuple(c.pid for c in self.children.values())


def kill_group(pid: int) -> None:
    """SIGKILL process group `pid` (a child and what its task started), else the pid."""
    if pid <= 0:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
