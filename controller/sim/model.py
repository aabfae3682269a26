"""Event-driven model of one worker pool: a FIFO queue, pods with slots, a scaler.

What it models, and why each part matters for the comparison:

* Tasks arrive from a `Trace` into one FIFO queue; each task needs its own
  service time on one slot. Interrupted tasks go back to the head of the queue
  and start over (their wait is counted from the first arrival).
* A pod has `concurrency` slots and consumes only after `startup_seconds`.
* A free slot takes the next task; among idle slots the one idle longest wins
  (Redis BLPOP serves the longest-blocked client first).
* A scaler is asked for a replica count every `scaler.interval` seconds. On
  scale-in the scaler's `removal` rule picks victims: "idle-first" (qscale: pods
  not ready yet, then idle pods; a busy pod only drains, never loses its task)
  or "arbitrary" (a ReplicaSet: pods not ready yet, then random ready pods; a
  busy victim gets `grace_seconds` to finish, then its tasks are interrupted).
* Pod-seconds are charged from pod creation to removal, start-up and draining
  included — that is what the cluster pays for.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np

from controller.sim.traces import FloatArray, Trace

Removal = Literal["idle-first", "arbitrary"]

# Event kinds, ordered so simultaneous events resolve deterministically:
# completions free slots before new pods join, and both before the scaler looks.
_COMPLETE, _POD_READY, _KILL, _TICK, _SAMPLE = range(5)
_STARTING, _READY, _TERMINATING, _GONE = range(4)


@dataclass(frozen=True)
class SimConfig:
    """Pool shape shared by every scaler so the comparison is like for like."""

    concurrency: int = 4                 # slots per pod
    startup_seconds: float = 10.0        # pod scheduled -> consuming
    rate_window_seconds: float = 30.0    # trailing window for arrival/completion rates
    service_sample: int = 200            # mean service time over the last N completions
    sample_seconds: float = 5.0          # timeline resolution for the plots


@dataclass(frozen=True)
class ClusterView:
    """What a scaler may look at on a tick (a metrics source would report these)."""

    now: float
    ready: int                # tasks waiting in the queue
    in_flight: int            # tasks running on a slot
    replicas: int             # spec replicas (starting + ready pods, not terminating)
    busy_pods: int            # non-terminating pods running >= 1 task
    arrival_rate: float       # tasks/s over the trailing window
    completion_rate: float    # tasks/s over the trailing window
    service_time: float | None  # mean service time of the last N finished tasks
    starting_pods: int = 0    # spec pods created but not consuming yet
    pod_startup_seconds: float | None = None  # measured creation -> consuming


@dataclass(frozen=True)
class Order:
    """A scaler's instruction: the replica count, and how many busy pods to drain.

    A drained (cordoned) pod finishes what it runs but claims nothing new, so it
    turns idle and can be removed without interrupting anything.
    """

    replicas: int
    drain: int = 0


class Scaler(Protocol):
    """Anything that turns a ClusterView into an Order."""

    @property
    def name(self) -> str: ...
    @property
    def interval(self) -> float: ...          # seconds between decisions
    @property
    def removal(self) -> Removal: ...         # how scale-in picks its victims
    @property
    def grace_seconds(self) -> float: ...     # busy victim's time before its tasks die

    def decide(self, view: ClusterView) -> Order: ...


@dataclass
class _Pod:
    created: float
    state: int = _STARTING
    cordoned: bool = False                                    # draining: claims nothing new
    running: dict[int, float] = field(default_factory=dict)  # task -> finish time


@dataclass
class SimResult:
    """Outcome of one (trace, scaler) run."""

    trace: str
    scaler: str
    arrived: int
    completed: int
    queued_at_end: int
    in_flight_at_end: int
    interrupted: int
    pod_seconds: float
    max_replicas: int
    scale_events: int          # ticks that changed the replica count
    reversals: int             # scale events opposite to the previous one (flapping)
    work_floor: float          # pod-seconds of pure service time / concurrency
    waits: FloatArray
    timeline: dict[str, FloatArray]

    def wait_percentile(self, q: float) -> float:
        return float(np.percentile(self.waits, q)) if len(self.waits) else math.nan


class PoolModel:
    """One simulation run; call `run()` once."""

    def __init__(self, trace: Trace, scaler: Scaler, config: SimConfig, seed: int = 0) -> None:
        self.trace, self.scaler, self.config = trace, scaler, config
        self.rng = np.random.default_rng([seed, 99])
        self.now = 0.0
        self.events: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.queue: deque[int] = deque()
        self.idle_slots: deque[int] = deque()    # pod ids, one entry per free slot
        self.pods: dict[int, _Pod] = {}
        self.next_pod = 0
        self.first_arrival = np.asarray(trace.arrivals, dtype=np.float64)
        self.start_time = np.full(len(trace.arrivals), math.nan)
        self.finished: deque[float] = deque()  # finish times inside the rate window
        self.recent_service: deque[float] = deque(maxlen=config.service_sample)
        self.completed = self.interrupted = self.max_replicas = 0
        self.scale_events = self.reversals = self.last_direction = 0
        self.pod_seconds = 0.0
        self.samples: dict[str, list[float]] = {
            k: [] for k in ("t", "ready", "in_flight", "replicas", "pods")}

    # -- event plumbing ---------------------------------------------------------
    def _push(self, when: float, kind: int, a: int = 0, b: int = 0) -> None:
        self.seq += 1
        heapq.heappush(self.events, (when, kind, self.seq, a, b))

    def run(self) -> SimResult:
        arrivals, n = self.first_arrival, len(self.first_arrival)
        horizon = self.trace.duration
        self._push(0.0, _TICK)
        self._push(0.0, _SAMPLE)
        i = 0
        while True:
            next_event = self.events[0][0] if self.events else math.inf
            if i < n and arrivals[i] < next_event:  # arrivals come after same-time events
                self.now = float(arrivals[i])
                self._arrive(i)
                i += 1
                continue
            if next_event > horizon:
                break
            when, kind, _, a, b = heapq.heappop(self.events)
            self.now = when
            if kind == _COMPLETE:
                self._complete(a, b, when)
            elif kind == _POD_READY:
                self._pod_ready(a)
            elif kind == _KILL:
                self._kill(a)
            elif kind == _TICK:
                self._tick()
                self._push(when + self.scaler.interval, _TICK)
            else:
                self._sample()
                self._push(when + self.config.sample_seconds, _SAMPLE)
        return self._result(horizon)

    # -- tasks ------------------------------------------------------------------
    def _arrive(self, task: int) -> None:
        self.queue.append(task)
        self._dispatch()

    def _dispatch(self) -> None:
        """Hand queued tasks to idle slots (longest-idle slot first)."""
        while self.queue and self.idle_slots:
            pod_id = self.idle_slots.popleft()
            pod = self.pods.get(pod_id)
            if (pod is None or pod.state != _READY or pod.cordoned
                    or len(pod.running) >= self.config.concurrency):
                continue  # stale slot: the pod left, drains, or the entry is a duplicate
            self._start(self.queue.popleft(), pod_id, pod)

    def _start(self, task: int, pod_id: int, pod: _Pod) -> None:
        finish = self.now + float(self.trace.service_times[task])
        pod.running[task] = finish
        self.start_time[task] = self.now
        self._push(finish, _COMPLETE, pod_id, task)

    def _complete(self, pod_id: int, task: int, when: float) -> None:
        pod = self.pods.get(pod_id)
        if pod is None or pod.running.get(task) != when:
            return  # the execution was interrupted; this completion never happens
        del pod.running[task]
        self.completed += 1
        self.finished.append(when)
        self.recent_service.append(float(self.trace.service_times[task]))
        if pod.state == _TERMINATING:
            if not pod.running:
                self._remove(pod_id)
            return
        if pod.cordoned:
            return
        self.idle_slots.append(pod_id)
        self._dispatch()

    # -- pods -------------------------------------------------------------------
    def _pod_ready(self, pod_id: int) -> None:
        pod = self.pods.get(pod_id)
        if pod is None or pod.state != _STARTING:
            return
        pod.state = _READY
        self.idle_slots.extend([pod_id] * self.config.concurrency)
        self._dispatch()

    def _remove(self, pod_id: int) -> None:
        pod = self.pods.pop(pod_id)
        pod.state = _GONE
        self.pod_seconds += self.now - pod.created

    def _kill(self, pod_id: int) -> None:
        """Grace period over: interrupt whatever still runs and requeue it at the head."""
        pod = self.pods.get(pod_id)
        if pod is None:
            return
        for task in sorted(pod.running, reverse=True):
            self.queue.appendleft(task)
            self.start_time[task] = math.nan  # it will start again; wait runs from arrival
            self.interrupted += 1
        pod.running.clear()
        self._remove(pod_id)
        self._dispatch()

    def _spec_pods(self) -> list[int]:
        return [pid for pid, p in self.pods.items() if p.state in (_STARTING, _READY)]

    def _tick(self) -> None:
        spec = self._spec_pods()
        order = self.scaler.decide(self._view(spec))
        desired = max(0, order.replicas)
        if desired > len(spec):
            for _ in range(desired - len(spec)):
                pod_id, self.next_pod = self.next_pod, self.next_pod + 1
                self.pods[pod_id] = _Pod(created=self.now)
                self._push(self.now + self.config.startup_seconds, _POD_READY, pod_id)
        elif desired < len(spec):
            for pod_id in self._victims(spec, len(spec) - desired):
                self._retire(pod_id)
        self._cordon(order.drain)
        self.max_replicas = max(self.max_replicas, desired)
        if desired != len(spec):
            direction = 1 if desired > len(spec) else -1
            self.scale_events += 1
            self.reversals += int(direction == -self.last_direction)
            self.last_direction = direction

    def _cordon(self, count: int) -> None:
        """Keep exactly `count` busy pods draining; everything else takes work."""
        ready = [p for p in self._spec_pods() if self.pods[p].state == _READY]
        ready.sort(key=lambda p: (not self.pods[p].running, not self.pods[p].cordoned,
                                  len(self.pods[p].running), p))
        reopened = False
        for rank, pod_id in enumerate(ready):
            pod = self.pods[pod_id]
            drain = rank < count and bool(pod.running)
            if pod.cordoned and not drain:
                self.idle_slots.extend([pod_id] * (self.config.concurrency - len(pod.running)))
                reopened = True
            pod.cordoned = drain
        if reopened:
            self._dispatch()

    def _victims(self, spec: list[int], count: int) -> list[int]:
        starting = sorted((p for p in spec if self.pods[p].state == _STARTING), reverse=True)
        ready = [p for p in spec if self.pods[p].state == _READY]
        if self.scaler.removal == "idle-first":
            # Pod-deletion-cost semantics: idle pods first, then the least busy.
            ready.sort(key=lambda p: (len(self.pods[p].running), not self.pods[p].cordoned, -p))
        else:
            self.rng.shuffle(ready)  # a ReplicaSet does not know which pods are busy
        return (starting + ready)[:count]

    def _retire(self, pod_id: int) -> None:
        pod = self.pods[pod_id]
        if not pod.running:
            self._remove(pod_id)
            return
        pod.state = _TERMINATING  # stops taking tasks; its stale idle slots are skipped
        if math.isfinite(self.scaler.grace_seconds):
            self._push(self.now + self.scaler.grace_seconds, _KILL, pod_id)

    # -- observation ------------------------------------------------------------
    def _view(self, spec: list[int]) -> ClusterView:
        window = self.config.rate_window_seconds
        while self.finished and self.finished[0] <= self.now - window:
            self.finished.popleft()
        lo, hi = np.searchsorted(self.first_arrival, [self.now - window, self.now], side="right")
        in_flight = sum(len(p.running) for p in self.pods.values())
        busy = sum(1 for pid in spec if self.pods[pid].running)
        # Kept across idle spells (like a worker-side histogram would be), so a cold
        # start after a quiet period still knows roughly how long tasks take.
        service = (sum(self.recent_service) / len(self.recent_service)
                   if self.recent_service else None)
        return ClusterView(
            now=self.now, ready=len(self.queue), in_flight=in_flight, replicas=len(spec),
            busy_pods=busy, arrival_rate=float(hi - lo) / window,
            completion_rate=len(self.finished) / window, service_time=service,
            starting_pods=sum(1 for pid in spec if self.pods[pid].state == _STARTING),
            pod_startup_seconds=self.config.startup_seconds)

    def _sample(self) -> None:
        s = self.samples
        s["t"].append(self.now)
        s["ready"].append(len(self.queue))
        s["in_flight"].append(sum(len(p.running) for p in self.pods.values()))
        s["replicas"].append(len(self._spec_pods()))
        s["pods"].append(len(self.pods))

    def _result(self, horizon: float) -> SimResult:
        self.now = horizon
        for pod in self.pods.values():
            self.pod_seconds += horizon - pod.created
        started = ~np.isnan(self.start_time)
        waits = (self.start_time - self.first_arrival)[started]
        in_flight = sum(len(p.running) for p in self.pods.values())
        return SimResult(
            trace=self.trace.name, scaler=self.scaler.name, arrived=len(self.first_arrival),
            completed=self.completed, queued_at_end=len(self.queue),
            in_flight_at_end=in_flight, interrupted=self.interrupted,
            pod_seconds=self.pod_seconds, max_replicas=self.max_replicas,
            scale_events=self.scale_events, reversals=self.reversals,
            work_floor=float(self.trace.service_times.sum()) / self.config.concurrency,
            waits=waits,
            timeline={k: np.asarray(v, dtype=np.float64) for k, v in self.samples.items()})


def simulate(trace: Trace, scaler: Scaler, config: SimConfig | None = None,
             seed: int = 0) -> SimResult:
    """Replay `trace` against `scaler` and return the measured result."""
    return PoolModel(trace, scaler, config or SimConfig(), seed).run()
