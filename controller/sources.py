"""Metric sources: how deep a pool's queues are, and how fast work arrives and leaves.

Depth comes from the worker's own broker inspection API (`Broker.stats`), so the
controller counts exactly what workers claim: ready *and* in-flight, unlike a
scaler that reads only the list length. Rates are estimated from successive
samples (arrivals = d(ready + in_flight)/dt + completions) and smoothed with a
time-constant EWMA, so an uneven poll interval does not skew them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from worker.brokers import Broker, open_broker

log = logging.getLogger(__name__)


class MetricReadError(Exception):
    """The queue metrics could not be read this tick; `str(err)` says why."""


@dataclass(frozen=True)
class DepthSample:
    """Ready and in-flight totals over a pool's queues, plus the per-queue split."""

    ready: int
    in_flight: int
    per_queue: Mapping[str, tuple[int, int]]
    in_flight_known: bool = True

    @property
    def backlog(self) -> int:
        return self.ready + self.in_flight


class DepthSource(Protocol):
    """Anything that can report a pool's queue depth."""

    def sample(self) -> DepthSample: ...

    def close(self) -> None: ...


class BrokerDepthSource:
    """Reads depth through `open_broker(url).stats(queue)`, reconnecting after failures."""

    def __init__(self, url: str, queues: Sequence[str],
                 opener: Callable[[str], Broker] = open_broker) -> None:
        self.url = url
        self.queues = tuple(queues)
        self._opener = opener
        self._broker: Broker | None = None
        self._lock = threading.Lock()

    def sample(self) -> DepthSample:
        with self._lock:
            try:
                if self._broker is None:
                    self._broker = self._opener(self.url)
                per_queue: dict[str, tuple[int, int]] = {}
                known = True
                for queue in self.queues:
                    stats = self._broker.stats(queue)
                    if stats.in_flight is None:
                        known = False
                    per_queue[queue] = (stats.ready, stats.in_flight or 0)
            except Exception as exc:
                self._drop()
                raise MetricReadError(f"{type(exc).__name__}: {exc}".strip()) from exc
        return DepthSample(
            ready=sum(r for r, _ in per_queue.values()),
            in_flight=sum(f for _, f in per_queue.values()),
            per_queue=per_queue,
            in_flight_known=known,
        )

    def _drop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            try:
                broker.close()
            except Exception:
                log.debug("closing a failed broker connection failed", exc_info=True)

    def close(self) -> None:
        with self._lock:
            self._drop()


@dataclass(frozen=True)
class Rates:
    """Smoothed rates in tasks per second (None until two samples exist)."""

    arrival: float | None
    completion: float | None


class Ewma:
    """Exponentially weighted mean with a time constant, robust to uneven intervals."""

    def __init__(self, tau_seconds: float) -> None:
        self.tau = tau_seconds
        self.value: float | None = None

    def update(self, sample: float, dt: float) -> float:
        if self.value is None or dt <= 0:
            self.value = sample if self.value is None else self.value
            return self.value
        alpha = 1.0 - math.exp(-dt / self.tau)
        self.value += alpha * (sample - self.value)
        return self.value


class RateEstimator:
    """Arrival and completion rates from successive depth samples and worker counters.

    Completions come from per-pod `completed` counters when workers publish them
    (a vanished pod or a restarted counter contributes nothing, never a negative
    rate); otherwise from Little's law: busy tasks / mean service time.
    """

    def __init__(self, tau_seconds: float = 10.0) -> None:
        self._arrival = Ewma(tau_seconds)
        self._completion = Ewma(tau_seconds)
        self._last_time: float | None = None
        self._last_backlog: int | None = None
        self._counters: dict[str, int] = {}
        self._counters_time: float | None = None
        self._completions_expected = False  # workers report them: wait for the first

    def update(self, now: float, backlog: int, *, completed: Mapping[str, int] | None = None,
               in_flight: int = 0, service_time: float | None = None) -> Rates:
        """Feed one sample taken at `now`; returns the smoothed rates after it.

        `completed` (per-pod counters) may be given on some ticks only: completions are
        measured between two counter readings, arrivals between two depth samples.
        """
        prev_time, prev_backlog = self._last_time, self._last_backlog
        if prev_time is not None and now <= prev_time:
            return self.current()
        self._last_time, self._last_backlog = now, backlog
        completion: float | None = None
        if completed is not None:
            since = self._counters_time
            if since is not None and now > since:
                done = sum(max(0, count - self._counters[pod])
                           for pod, count in completed.items() if pod in self._counters)
                completion = done / (now - since)
                self._completion.update(completion, now - since)
            self._counters, self._counters_time = dict(completed), now
        elif service_time is not None and service_time > 0 and prev_time is not None:
            completion = in_flight / service_time
            self._completion.update(completion, now - prev_time)
        self._completions_expected |= completed is not None or service_time is not None
        if prev_time is None or prev_backlog is None:
            return self.current()
        if completion is None and self._completion.value is None and self._completions_expected:
            # Completions are coming but not measured yet (counters need two readings):
            # backlog growth alone would read a steady load as ~0 arrivals and seed the
            # EWMA there (measured: 22% low 20 s after a controller start at 5/s).
            return self.current()
        dt = now - prev_time
        finished = completion if completion is not None else (self._completion.value or 0.0)
        arrival = max(0.0, (backlog - prev_backlog) / dt + finished)
        self._arrival.update(arrival, dt)
        return self.current()

    def current(self) -> Rates:
        return Rates(arrival=self._arrival.value, completion=self._completion.value)
