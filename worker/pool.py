"""The pool of child processes: spawning, job bookkeeping, dispatch and reaping.

The supervisor owns one Pool. Each child has a FIFO of jobs sent to it; the
head is the job it is running (the next one starts when the head's result
arrives, which is when the pool stamps its start time for the hard limit).
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
from worker.child import CANCEL, STOP, ExecutorFactory, child_main, ready_check
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
    hard_limit: float | None = None
    limit_known: bool = False  # hard_limit is looked up only once a job runs long


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

    def take_back(self, seqs: set[int], now: float) -> list[Delivery]:
        """Remove the jobs it handed back unstarted; the next one (if any) starts now."""
        dropped = [job.delivery for job in self.jobs if job.seq in seqs]
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

    # -- lifecycle --

    def spawn(self, slot: int) -> Child:
        parent_end, child_end = _FORK.Pipe(duplex=True)
        process = _FORK.Process(
            target=child_main, name=f"qscale-child-{slot}", daemon=False,
            args=(child_end, self.settings, os.getpid(), self.executor_factory))
        process.start()
        child_end.close()
        child = Child(slot=slot, process=process, conn=parent_end, born=time.monotonic(),
                      waiting=ready_check(parent_end))
        self.children[slot] = child
        self.selector.register(parent_end, selectors.EVENT_READ, child)
        self.selector.register(process.sentinel, selectors.EVENT_READ, child)
        log.debug("child started slot=%d pid=%d", slot, child.pid)
        return child

    def fill(self, now: float) -> list[Child]:
        """Start children for empty slots whose respawn back-off has passed."""
        started = []
        for slot in range(self.settings.concurrency):
            if slot not in self.children and self._respawn_at.get(slot, 0.0) <= now:
                started.append(self.spawn(slot))
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
        child.kill_cause = child.kill_cause or cause
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)

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

    def cancel_queued(self, children: Iterable[Child] | None = None) -> None:
        """Ask children (default: all) to drop the jobs queued behind their current one."""
        for child in self.children.values() if children is None else children:
            if len(child.jobs) > 1 and not child.kill_cause:
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
        unread = {c.slot: sum(len(j.delivery.body) for j in list(c.jobs)[1:])
                  for c in eligible if c.jobs}
        for level in range(per_child):
            for child in eligible:
                if not pending:
                    break
                batch = batches.get(child.slot, [])
                given = len(child.jobs) + len(batch)
                if given > level or (budget and child.done + given >= budget and not recycling):
                    continue
                size = len(pending[0].delivery.body)
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
                child.conn.send([(job.seq, job.delivery.body) for job in jobs])

    def overdue(self, now: float, floor: float | None,
                limit_for: Callable[[bytes], float | None]) -> list[tuple[Child, Job]]:
        """Children whose running job has passed its hard limit, with that job.

        `floor` is the smallest limit any task has (None: no limits); a job's own
        limit is looked up with `limit_for` only once it has run that long, so short
        tasks never pay for decoding their envelope here."""
        if floor is None:
            return []
        found = []
        for child in self.children.values():
            job = child.jobs[0] if child.jobs else None
            if job is None or child.kill_cause or now - job.started <= floor:
                continue
            if not job.limit_known:
                job.hard_limit = limit_for(job.delivery.body)
                job.limit_known = True
            if job.hard_limit and now - job.started > job.hard_limit:
                found.append((child, job))
        return found

    def seconds_to_hard_limit(self, now: float, floor: float | None) -> float:
        """Time until the first running job may pass its hard limit (inf: none can).

        `floor` is the smallest limit any task has; a job's own limit is known only
        once it has run that long (the supervisor looks it up then)."""
        soonest = math.inf
        if floor is None:
            return soonest
        for child in self.children.values():
            head = child.jobs[0] if child.jobs else None
            limit = None if head is None else head.hard_limit if head.limit_known else floor
            if head is not None and limit:
                soonest = min(soonest, max(0.0, head.started + limit - now))
        return soonest

    def busy(self) -> int:
        return sum(1 for c in self.children.values() if c.jobs)

    def queued_jobs(self) -> int:
        return sum(len(c.jobs) for c in self.children.values())

    def pids(self) -> tuple[int, ...]:
        return tuple(c.pid for c in self.children.values())
