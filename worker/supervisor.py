"""The supervisor: one broker connection, N forked children, and the loop joining them.

One thread does all the work (claim, dispatch, collect, settle, enforce limits),
so no state is shared under locks; the HTTP thread only reads `RuntimeState`.
A message is removed from the broker only after its Outcome is settled: a child
that dies, is hard-killed or is cut off by shutdown has its message retried
(via `outcome_for_lost`) or requeued, never dropped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import selectors
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from worker.brokers.base import Delivery
from worker.child import ExecutorFactory, expand
from worker.cordon import Cordon
from worker.link import BrokerLink
from worker.metrics import WorkerMetrics
from worker.outcome import Outcome
from worker.pool import Child, Job, Pool, capacity, read_ahead
from worker.settings import WorkerSettings
from worker.state import RuntimeState

log = logging.getLogger(__name__)

_BROKER_READABLE = "broker"  # selector data of the broker's descriptor

GAUGE_EVERY = 0.5          # seconds between gauge refreshes
IDLE_CLAIM_WAIT = 0.25     # a claim with nothing in flight blocks this long at most
MAX_POLL_DELAY = 0.05      # claim polling back-off while partly busy and the queue is empty
REAP_GRACE = 5.0           # seconds to wait for children to exit at shutdown


@dataclass(frozen=True)
class Hooks:
    """What the supervisor needs from the executor layer (injected for testability)."""

    executor_factory: ExecutorFactory
    outcome_for_lost: Callable[[bytes, str, WorkerSettings], Outcome]
    hard_limit_for: Callable[[bytes, WorkerSettings], float | None]
    # The smallest hard limit any message can have (None: no limits at all). A job
    # is looked up with `hard_limit_for` only after running this long, so short
    # tasks never pay for decoding their envelope in the supervisor.
    min_hard_limit: float | None


class Supervisor:
    def __init__(self, settings: WorkerSettings, hooks: Hooks, link: BrokerLink,
                 state: RuntimeState, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.hooks = hooks
        self.link = link
        self.state = state
        self.metrics = metrics
        self.pool = Pool(settings, hooks.executor_factory)
        self.pending: deque[Job] = deque()
        self._seq = 0
        self._stop_signals = 0
        self._deadline: float | None = None
        self.cordon = Cordon(state, link)  # POST /cordon: claim nothing, give back unstarted
        self._next_poll = 0.0
        self._poll_delay = 0.0
        self._next_gauges = 0.0
        self._shutting_down = False
        self._broker_readable = False  # RabbitMQ's socket woke the selector
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.pool.selector.register(self._wake_r, selectors.EVENT_READ, None)

    # -- signals --

    def install_signals(self) -> None:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stop_signals += 1

    # -- sizing --

    @property
    def in_flight(self) -> int:
        return len(self.pending) + self.pool.queued_jobs()

    def capacity(self) -> int:
        return capacity(self.settings, self.state.service_time)

    # -- the loop --

    def run(self) -> int:
        self.pool.fill(time.monotonic())
        self._publish(time.monotonic(), force_gauges=True)
        log.info("worker started pod=%s concurrency=%d queues=%s", self.settings.pod_name,
                 self.settings.concurrency, ",".join(self.settings.queues))
        while True:
            now = time.monotonic()
            self.state.loop_tick = now
            self._check_stop(now)
            if self._deadline is None and self.cordon.follow(now):
                self._give_back([self.pending.popleft().delivery for _ in range(len(self.pending))])
                self.pool.cancel_queued()  # queued behind running jobs: handed back too
            self.link.maintain(now)
            self.link.watch(self.pool.selector, _BROKER_READABLE)
            if self._deadline is None:
                self._claim(now)
            cap = self.capacity()
            self.pool.dispatch(self.pending, math.ceil(cap / self.settings.concurrency), now)
            self._collect(self._wait_timeout(now))
            if self._broker_readable:
                self._broker_readable = False
                if not self._claim_room():  # else the next claim reads it
                    self.link.receive()
            now = time.monotonic()
            self._enforce_hard_limits(now)
            self._recycle()
            if self._deadline is None:
                self.pool.fill(now)
            self.link.flush(now, force=self.in_flight == 0 or self._deadline is not None)
            self._publish(now)
            if self._deadline is not None and (self.in_flight == 0 or now >= self._deadline):
                break
        self._shutdown()
        return 0

    def _check_stop(self, now: float) -> None:
        if not self._stop_signals:
            return
        if self._deadline is None:
            self._deadline = now + self.settings.drain_seconds
            self.state.draining = True
            self._next_gauges = 0.0
            log.info("draining: finishing %d running tasks within %.0fs, requeueing %d "
                     "unstarted", self.pool.busy(), self.settings.drain_seconds,
                     self.in_flight - self.pool.busy())
            self._give_back([self.pending.popleft().delivery for _ in range(len(self.pending))])
            self.pool.cancel_queued()
        if self._stop_signals >= 2 and self._deadline > now:
            log.info("second stop signal: stopping now")
            self._deadline = now

    def _claim_room(self) -> int:
        """How many messages to claim now: 0 unless a child is idle or half the room is free.

        Waiting for half the room keeps claims (and acks) batched when tasks are short.
        """
        if self.cordon.active or self._deadline is not None or self.pending \
                or not self.link.connected:
            return 0
        cap = self.capacity()
        free = cap - self.in_flight
        if free <= 0:
            return 0
        if free * 2 >= cap or any(c.accepting and not c.jobs
                                  for c in self.pool.children.values()):
            return free
        return 0

    def _claim(self, now: float) -> None:
        free = self._claim_room()
        if not free:
            return
        if self.in_flight:
            # A broker we can watch is read whenever there is room: an empty claim only
            # means its frames are not here yet, and they wake the selector when they are.
            if not self.link.watched and now < self._next_poll:
                return
            timeout = 0.0
        else:
            timeout = min(IDLE_CLAIM_WAIT, self.settings.lease_seconds / 6)
        self.link.read_ahead(read_ahead(self.settings, self.state.service_time))
        deliveries = self.link.claim(self.settings.queues, free, timeout)
        if deliveries:
            self._poll_delay = 0.0
            self._add_jobs(deliveries)
        elif not self.link.watched:
            self._poll_delay = min(MAX_POLL_DELAY, max(0.002, self._poll_delay * 2))
            self._next_poll = time.monotonic() + self._poll_delay

    def _add_jobs(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            self._seq += 1
            self.pending.append(Job(self._seq, delivery))

    def _wait_timeout(self, now: float) -> float:
        if self._stop_signals and self._deadline is None:
            return 0.0
        timeout = 0.25  # results and deaths wake the selector earlier
        if self._claim_room():
            # Nothing in flight: the next claim blocks instead; messages already received
            # are claimed at once; a watched broker wakes the selector; else poll.
            if self.in_flight == 0 or self.link.buffered():
                timeout = 0.0
            elif not self.link.watched:
                timeout = max(0.0, self._next_poll - now)
        timeout = min(timeout, self.link.seconds_to_heartbeat(now),
                      self.pool.seconds_to_hard_limit(now, self.hooks.min_hard_limit))
        if self._deadline is not None:
            timeout = min(timeout, max(0.0, self._deadline - now))
        if self.link.unsettled and self.link.connected:
            timeout = min(timeout, 0.01)
        return timeout

    def _collect(self, timeout: float) -> None:
        """Wait for results or deaths, then process everything that is ready."""
        dead: list[Child] = []
        for key, _ in self.pool.selector.select(timeout):
            if key.data is _BROKER_READABLE:
                self._broker_readable = True
                continue
            child: Child | None = key.data
            if child is None:  # the signal wake-up pipe
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_r, 512)
                continue
            if child in dead or self.pool.children.get(child.slot) is not child:
                continue
            if key.fileobj is child.conn:
                if not self._drain_pipe(child):
                    dead.append(child)
            elif not child.process.is_alive():
                dead.append(child)
        for child in dead:
            self._reap(child)

    def _drain_pipe(self, child: Child) -> bool:
        """Handle every message waiting from `child`; False when its pipe is closed."""
        conn, waiting = child.conn, child.waiting
        try:
            while waiting():
                self._on_message(child, conn.recv())
        except (EOFError, OSError):
            return False
        return True

    def _on_message(self, child: Child, message: Any) -> None:
        kind = message[0]
        now = time.monotonic()
        if kind == "done":
            _, seq, payload, over_rss = message
            outcome = expand(payload)
            job = child.jobs.popleft()
            if job.seq != seq:  # protocol invariant; recover rather than mis-settle
                log.error("child %d reported job %d, expected %d", child.pid, seq, job.seq)
                child.jobs.appendleft(job)
                child.jobs = deque(j for j in child.jobs if j.seq != seq)
                return
            if child.jobs:
                child.jobs[0].started = now
            child.done += 1
            self._settled(job.delivery, outcome)
            limit = self.settings.max_tasks_per_child
            if over_rss:
                child.retire_cause = "max_rss"
            elif limit and child.done >= limit:
                child.retire_cause = child.retire_cause or "max_tasks"
        elif kind == "cancelled":
            self._give_back(child.take_back(set(message[1]), now))

    def _settled(self, delivery: Delivery, outcome: Outcome) -> None:
        self.link.settle(delivery, outcome)
        self.metrics.record(outcome)
        self.state.task_finished(outcome.task, outcome.runtime_s, time.time())

    def _give_back(self, deliveries: list[Delivery]) -> None:
        """Unstarted messages: to the broker when draining or cordoned, else local dispatch."""
        if not deliveries:
            return
        if self._deadline is not None or self.cordon.active:
            self.link.requeue(deliveries)
        else:
            for delivery in reversed(deliveries):
                self._seq += 1
                self.pending.appendleft(Job(self._seq, delivery))

    # -- deaths, limits, recycling --

    def _reap(self, child: Child) -> None:
        """A child exited or was killed: settle its running job, redistribute the rest."""
        self._drain_pipe(child)
        child.process.join(timeout=REAP_GRACE)
        if child.process.exitcode is None:
            self.pool.kill(child, child.kill_cause or "stuck")
            child.process.join()
        now = time.monotonic()
        cause = "shutdown" if self._shutting_down and child.kill_cause is None \
            else child.exit_cause()
        jobs = list(child.jobs)
        child.jobs.clear()
        had_job = bool(jobs) and jobs[0].started > 0.0
        if jobs:
            head, rest = jobs[0], jobs[1:]
            if cause == "shutdown":
                self.link.requeue([head.delivery])
            elif cause == "hard_time_limit" and head.seq != child.overdue_seq:
                rest.insert(0, head)  # the overdue job had just finished; this one barely ran
            else:
                self._settled(head.delivery, self.hooks.outcome_for_lost(
                    head.delivery.body, child.lost_reason(head), self.settings))
            self._give_back([job.delivery for job in rest])
        self.metrics.child_exited(child.pid)
        self.pool.forget(child, now, had_job)
        if cause in ("crash", "hard_time_limit"):
            log.warning("child replaced pid=%d slot=%d cause=%s (%s)", child.pid, child.slot,
                        cause, child.describe_exit())
        elif cause != "shutdown":
            log.info("child recycled pid=%d slot=%d cause=%s tasks=%d", child.pid,
                     child.slot, cause, child.done)
        if cause not in ("shutdown", "stopped"):
            self.metrics.child_replaced(cause)
            self.state.child_replaced(cause)

    def _enforce_hard_limits(self, now: float) -> None:
        def limit_for(body: bytes) -> float | None:
            return self.hooks.hard_limit_for(body, self.settings)

        for child, job in self.pool.overdue(now, self.hooks.min_hard_limit, limit_for):
            child.overdue_seq = job.seq
            log.warning("hard time limit: killing pid=%d after %.1fs", child.pid,
                        now - job.started)
            self.pool.kill(child, "hard_time_limit")

    def _recycle(self) -> None:
        """Replace children past their task or memory limit, one child at a time.

        The chosen child gets no new work and is stopped once idle (a bloated child
        hands its queued jobs back by itself); the next waits until it is replaced.
        """
        for child in list(self.pool.children.values()):
            if child.retiring:
                self.pool.stop_when_idle(child)
        if self._deadline is not None:
            return
        chosen = self.pool.next_to_retire()
        if chosen is not None:
            chosen.retiring = True
            self.pool.stop_when_idle(chosen)

    # -- state --

    def _publish(self, now: float, force_gauges: bool = False) -> None:
        state = self.state
        busy = self.pool.busy()
        in_flight = self.in_flight + self.link.unsettled
        state.busy = busy
        state.in_flight = in_flight
        state.prefetched = in_flight - busy
        state.children = self.pool.pids()
        changed = state.broker_connected != self.link.connected
        state.broker_connected = self.link.connected
        if force_gauges or changed or now >= self._next_gauges:
            self._next_gauges = now + GAUGE_EVERY
            self.metrics.set_gauges(in_flight=in_flight, busy=busy,
                                    processes=len(self.pool.children),
                                    connected=self.link.connected, draining=state.draining)

    # -- shutdown --

    def _shutdown(self) -> None:
        """Kill children still running (their messages go back), stop the idle ones."""
        self._shutting_down = True
        for child in list(self.pool.children.values()):
            if child.jobs:
                log.warning("drain deadline: killing pid=%d, its message is requeued",
                            child.pid)
                self.pool.kill(child, "shutdown")
            else:
                self.pool.stop_when_idle(child)
        self._give_back([self.pending.popleft().delivery for _ in range(len(self.pending))])
        deadline = time.monotonic() + REAP_GRACE
        while self.pool.children and time.monotonic() < deadline:
            self._collect(0.1)
        for child in list(self.pool.children.values()):
            self.pool.kill(child, "shutdown")
            self._reap(child)
        for _ in range(3):
            if not self.link.unsettled:
                break
            self.link.maintain(time.monotonic())
            self.link.flush(time.monotonic(), force=True)
        if self.link.unsettled:
            log.warning("%d settlements could not be sent; those messages run again after "
                        "their lease", self.link.unsettled)
        self.link.close()
        self.state.broker_connected = False
        log.info("worker stopped: %d tasks completed", self.state.completed)
