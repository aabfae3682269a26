"""The supervisor: one broker connection, N forked children, and the loop joining them.

One thread does all the work (claim, dispatch, collect, settle, enforce limits),
so no state is shared under locks; the HTTP thread only reads `RuntimeState`.
A message is removed from the broker only after its Outcome is settled: a child
that dies, is hard-killed or is cut off by shutdown has its message retried or
requeued, never dropped.

A fortress: the supervisor never parses a body (children decode; a message whose
run was lost goes back to a child to be settled unrun), so nothing a body contains
can raise out of its loop. Handling one message may fail only that message. If
the loop itself fails, the children are killed and the process exits non-zero at
once (exit code 70), so Kubernetes restarts it instead of a half-dead pod holding
its claims. Every RECONCILE_EVERY the deliveries the broker says this worker holds
are compared with the ones it knows; the others (an ack lost with a crashed Redis,
a settle given up on) are handed back.
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
from collections.abc import Iterator
from dataclasses import replace
from types import FrameType
from typing import Any

from worker.api import registry
from worker.brokers.base import Delivery
from worker.envelope import SIZE_HEADROOM
from worker.runtime.child import ExecutorFactory, expand
from worker.runtime.cordon import Cordon
from worker.runtime.link import BrokerLink
from worker.runtime.metrics import WorkerMetrics
from worker.runtime.outcome import Outcome, Settle
from worker.runtime.pool import Child, Job, Pool, capacity, kill_group, read_ahead
from worker.runtime.reaping import REAP_GRACE, ChildDeaths
from worker.runtime.reconcile import Reconciler
from worker.runtime.state import RuntimeState
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

_BROKER_READABLE = "broker"  # selector data of the broker's descriptor

GAUGE_EVERY = 0.5          # seconds between gauge refreshes
IDLE_CLAIM_WAIT = 0.25     # a claim with nothing in flight blocks this long at most
MAX_POLL_DELAY = 0.05      # claim polling back-off while partly busy and the queue is empty
EXIT_LOOP_FAILED = 70      # EX_SOFTWARE: the supervisor's own loop failed
SETTLE_GRACE = 60.0        # seconds a task that returned has to record its outcome
OVERSIZED_HEAD = 512       # bytes of an oversized body a child sees and the DLQ keeps
UNREGISTERED = "unregistered"  # the metrics label of task names no module registered


class LoopFailed(Exception):
    """The supervisor loop raised; the children were killed, the process must exit."""


def task_label(name: str) -> str:
    """Task names as metric labels and /state keys: only registered names, so hostile
    messages cannot grow the series or the state without bound."""
    return name if registry.lookup(name) is not None else UNREGISTERED


class Supervisor(ChildDeaths, Reconciler):
    def __init__(self, settings: WorkerSettings, executor_factory: ExecutorFactory,
                 link: BrokerLink, state: RuntimeState, metrics: WorkerMetrics) -> None:
        self.settings = settings
        self.link = link
        self.state = state
        self.metrics = metrics
        self.pool = Pool(settings, executor_factory)
        self.pending: deque[Job] = deque()
        self._seq = 0
        self._default_limit = settings.hard_time_limit or None
        self._stop_signals = 0
        self._deadline: float | None = None
        self.cordon = Cordon(state, link)  # POST /cordon: claim nothing, give back unstarted
        self._next_poll = 0.0
        self._poll_delay = 0.0
        self._next_gauges = 0.0
        self._reconcile_every = max(5.0, 3 * settings.lease_seconds)
        self._next_reconcile = time.monotonic() + self._reconcile_every
        self._reconciled_epoch = 0  # the link's epoch counts its failures
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
        """Run until stopped and drained; LoopFailed if the loop itself broke."""
        try:
            self.pool.fill(time.monotonic())
            self._publish(time.monotonic(), force_gauges=True)
            log.info("worker started pod=%s concurrency=%d queues=%s", self.settings.pod_name,
                     self.settings.concurrency, ",".join(self.settings.queues))
            while self._turn():
                pass
        except Exception as exc:
            self._emergency_stop(exc)
            raise LoopFailed(f"{type(exc).__name__}: {exc}") from exc
        self._shutdown()
        return 0

    def _turn(self) -> bool:
        """One turn of the loop; False once draining is over."""
        now = time.monotonic()
        self.state.loop_tick = now
        self._check_stop(now)
        if self._deadline is None and self.cordon.follow(now):
            self._give_back(self._take_pending())
            self.link.requeue(self.pool.cancel_queued())  # queued behind running jobs too
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
        if now >= self._next_reconcile or (self.link.connected and
                                           self.link.epoch != self._reconciled_epoch):
            self._next_reconcile = now + self._reconcile_every
            self._reconciled_epoch = self.link.epoch
            self._reconcile()
        self._publish(now)
        return not (self._deadline is not None and (self.in_flight == 0 or now >= self._deadline))

    def _emergency_stop(self, exc: Exception) -> None:
        """The loop broke: kill every child (and its task's processes) so the process can
        exit now instead of hanging in exit on its children, holding its claims."""
        log.critical("supervisor loop failed, exiting: %s: %s", type(exc).__name__, exc,
                     exc_info=exc)
        for child in list(self.pool.children.values()):
            kill_group(child.pid)
        for child in list(self.pool.children.values()):
            with contextlib.suppress(Exception):
                child.process.join(timeout=1.0)
        with contextlib.suppress(Exception):
            self.link.close()

    @contextlib.contextmanager
    def _one_message(self, delivery: Delivery, what: str) -> Iterator[None]:
        """Handling one message may fail only that message: it is dead-lettered with the
        reason (the loop goes on)."""
        try:
            yield
        except Exception as exc:
            log.exception("internal error while %s; dead-lettering the message", what)
            reason = f"internal error while {what}: {type(exc).__name__}: {exc}"
            self.link.settle(delivery, Outcome(settle=Settle.DEAD, status="dead",
                                               reason=reason))

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
            # First, or RabbitMQ pushes the requeued messages straight back to us.
            self.link.pause_consuming()
            self._give_back(self._take_pending())
            self.link.requeue(self.pool.cancel_queued())
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
        idle_child = any(c.accepting and not c.jobs for c in self.pool.children.values())
        return free if free * 2 >= cap or idle_child else 0

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
        limit = self.settings.max_message_bytes + SIZE_HEADROOM
        for delivery in deliveries:
            self._seq += 1
            # A message the broker says must not run (delivered too often), or too large
            # to run, is settled dead by a child without running it (recording FAILURE
            # for the id its head names); an oversized body never goes to a child whole.
            unrun = (delivery.dead_reason, False) if delivery.dead_reason else None
            head = None
            size = delivery.size or len(delivery.body)
            if size > limit:
                head = delivery.body[:OVERSIZED_HEAD]
                unrun = (f"payload of {size} bytes exceeds the {limit}-byte limit", False)
            self.pending.append(Job(self._seq, delivery, hard_limit=self._default_limit,
                                    unrun=unrun, head_only=head))

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
                      self.pool.seconds_to_hard_limit(now))
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
            job = child.jobs.popleft() if child.jobs else None
            if job is None or job.seq != seq:  # protocol invariant; recover, never mis-settle
                log.error("child %d reported job %d, expected %s", child.pid, seq,
                          job.seq if job else "none")
                if job is not None:
                    child.jobs.appendleft(job)
                child.jobs = deque(j for j in child.jobs if j.seq != seq)
                return
            if child.jobs:
                child.jobs[0].started = now
            child.done += 1
            if not job.given_back:  # else it runs again elsewhere (at-least-once)
                with self._one_message(job.delivery, "settling its outcome"):
                    outcome = expand(payload)
                    if job.head_only is not None:
                        outcome = replace(outcome, dead_body=job.head_only)
                    self._settled(job.delivery, outcome)
            limit = self.settings.max_tasks_per_child
            if over_rss:
                child.retire_cause = "max_rss"
            elif limit and child.done >= limit:
                child.retire_cause = child.retire_cause or "max_tasks"
        elif kind == "limit":  # the running job's own hard time limit
            _, seq, seconds = message
            if child.jobs and child.jobs[0].seq == seq:
                child.jobs[0].hard_limit = seconds
        elif kind == "ran":  # its task returned: recording the outcome gets a grace period
            _, seq, _ = message
            if child.jobs and child.jobs[0].seq == seq and child.jobs[0].hard_limit:
                head = child.jobs[0]
                head.hard_limit = now - head.started + SETTLE_GRACE
        elif kind == "cancelled":
            self._give_back(child.take_back(set(message[1]), now))

    def _settled(self, delivery: Delivery, outcome: Outcome) -> None:
        self.link.settle(delivery, outcome)
        label = task_label(outcome.task)
        self.metrics.record(outcome, label)
        self.state.task_finished(label, outcome.runtime_s, time.time())

    def _take_pending(self) -> list[Job]:
        jobs = list(self.pending)
        self.pending.clear()
        return jobs

    def _give_back(self, jobs: list[Job]) -> None:
        """Unstarted jobs: to the broker when draining or cordoned, else first in line here
        (a job to settle unrun stays one: it must not run)."""
        if not jobs:
            return
        if self._deadline is not None or self.cordon.active:
            self.link.requeue([job.delivery for job in jobs])
            return
        for job in reversed(jobs):
            job.started, job.hard_limit, job.given_back = 0.0, self._default_limit, False
            self.pending.appendleft(job)

    # -- state --

    def _publish(self, now: float, force_gauges: bool = False) -> None:
        state = self.state
        busy = self.pool.busy()
        # Received but not claimed yet (RabbitMQ pushed them) is held here too.
        in_flight = self.in_flight + self.link.unsettled + self.link.received()
        state.busy = busy
        state.in_flight = in_flight
        state.prefetched = in_flight - busy
        state.children = self.pool.pids()
        changed = state.broker_connected != self.link.connected
        state.broker_connected = self.link.connected
        if self.pool.spawn_failures:
            state.child_restarts["spawn_failed"] = self.pool.spawn_failures
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
        self._give_back(self._take_pending())
        deadline = time.monotonic() + REAP_GRACE
        while self.pool.children and time.monotonic() < deadline:
            self._collect(0.1)
        for child in list(self.pool.children.values()):
            self.pool.kill(child, "shutdown")
            self._reap(child)
        # Runs lost during the drain came back here: they go to the broker too.
        self.link.requeue([self.pending.popleft().delivery for _ in range(len(self.pending))])
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
