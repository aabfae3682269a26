"""One pool's inputs: queue depth, its pods and their /state, rates, and what is unknown.

The loop asks for the depth every tick and for the pods every POD_REFRESH_SECONDS
(and again right before a scale-down). Whatever could not be read is *unknown*,
never zero or empty: a failed pod list is `PodRead(pods=None)`, a broker that
cannot tell in-flight is "in-flight", a Ready pod whose /state is unreadable or
garbage is "pod-state". `unknown_inputs` names them; the policy holds scale-downs
while any is unknown.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.actuator import ActuationError, DeploymentView
from controller.podmemory import PodMemory
from controller.podstate import PodState
from controller.policy import Observation
from controller.pool import PoolSpec
from controller.sources import DepthSample, DepthSource, MetricReadError, RateEstimator

log = logging.getLogger(__name__)

# Pod /state is read this often for busy counts, counters and service times, and at
# once whenever a scale-down is about to be decided (so the busy floor is current).
POD_REFRESH_SECONDS = 5.0


@dataclass(frozen=True)
class PodRead:
    """One pod list with /state: `pods` is None when the list failed (unknown)."""

    pods: list[PodState] | None
    at: float
    error: str | None = None

    @property
    def live(self) -> list[PodState]:
        return [p for p in self.pods or () if not p.terminating]


NOT_READ = PodRead(None, -1e18, "not read yet")


class PoolInputs:
    """Reads one pool's queues and pods; keeps rates and pod memory between ticks."""

    def __init__(self, make_source: Callable[[PoolSpec], DepthSource], pod_reader: Any,
                 wall_clock: Callable[[], float]) -> None:
        self._make_source = make_source
        self.pod_reader = pod_reader
        self._source: DepthSource | None = None
        self._source_key: tuple[Any, ...] = ()
        self.rates = RateEstimator()
        self.memory = PodMemory(wall_clock)  # start-up and service times
        self.pods: PodRead = NOT_READ

    def close(self) -> None:
        if self._source is not None:
            self._source.close()

    def _source_for(self, spec: PoolSpec) -> DepthSource:
        key = (spec.broker_url, spec.broker_secret, spec.queues)
        if self._source is None or key != self._source_key:
            if self._source is not None:
                self._source.close()
            self._source = self._make_source(spec)
            self._source_key = key
        return self._source

    def read_depth(self, spec: PoolSpec) -> tuple[DepthSample | None, str | None]:
        try:
            return self._source_for(spec).sample(), None
        except (MetricReadError, ActuationError) as exc:
            return None, str(exc)
        except Exception as exc:  # e.g. a broker secret that cannot be read
            self._source = None
            return None, f"{type(exc).__name__}: {exc}"

    def read_pods(self, spec: PoolSpec, target: DeploymentView, now: float) -> PodRead:
        """List the target's pods by its full selector; a failure is unknown, not []."""
        reader = self.pod_reader
        if reader is None:
            self.pods = PodRead(None, now, "no pod reader")
        elif not target.selector:
            self.pods = PodRead(None, now, f"deployment {spec.deployment} has no usable "
                                           "label selector")
        else:
            try:
                pods = reader.read(spec.namespace, target.selector, spec.pod_state_port)
                self.pods = PodRead(list(pods), now)
                self.memory.remember_startups(pods)
            except Exception as exc:
                log.warning("pool=%s listing pods failed: %s", spec.key, exc)
                self.pods = PodRead(None, now, f"listing pods: {_api_error(exc)}")
        return self.pods

    def unknown_inputs(self, spec: PoolSpec, sample: DepthSample | None) -> dict[str, str]:
        """Inputs a scale-down rests on that are unknown now, with why (ordered)."""
        unknown: dict[str, str] = {}
        if self.pods.pods is None:
            unknown["pods"] = self.pods.error or "pod list unknown"
        if sample is not None and not sample.in_flight_known:
            unknown["in-flight"] = ("the broker cannot tell in-flight work (RabbitMQ "
                                    "management API unreachable?)")
        if spec.pod_state_port:
            silent = [p for p in self.pods.live if p.state_unknown]
            if silent:
                first = silent[0]
                unknown["pod-state"] = (f"{len(silent)} Ready pod(s) without a usable /state, "
                                        f"e.g. {first.name}: {first.state_error or 'no answer'}")
        return unknown

    def busy(self, spec: PoolSpec) -> int:
        """Busy pods that can work (lost ones are apart: see lost())."""
        if not spec.pod_state_port:
            return 0
        return sum(1 for p in self.pods.live if p.counts_as_busy and not p.node_lost)

    def lost(self) -> int:
        """Pods whose node stopped reporting: replicas that supply nothing now."""
        return sum(1 for p in self.pods.live if p.node_lost)

    def observe(self, spec: PoolSpec, sample: DepthSample | None, error: str | None,
                now: float, *, fresh: bool, deadline_passed: bool,
                unknown: tuple[str, ...]) -> Observation:
        live = self.pods.live
        busy = self.busy(spec)
        service = self.memory.remember_service_time(live)
        counters = {p.name: c for p in live if (c := p.completed) is not None}
        if not fresh:  # counters are only comparable at the moment they were read
            counters = {}
        if sample is None:
            return Observation(ok=False, busy_pods=busy, service_time_seconds=service,
                               draining_deadline_passed=deadline_passed, error=error,
                               unknown=unknown)
        if sample.in_flight_known:
            rates = self.rates.update(
                now, sample.backlog, completed=counters or None, in_flight=sample.in_flight,
                service_time=service if fresh and not counters else None)
        else:  # arrivals from a backlog that misses in-flight would be wrong: keep the last
            rates = self.rates.current()
        return Observation(
            ok=True, ready=sample.ready,
            in_flight=sample.in_flight if sample.in_flight_known else None,
            arrival_rate=rates.arrival, completion_rate=rates.completion,
            service_time_seconds=service, busy_pods=busy,
            draining_deadline_passed=deadline_passed, unknown=unknown)


def _api_error(exc: BaseException) -> str:
    status, reason = getattr(exc, "status", None), getattr(exc, "reason", None)
    if status is not None:
        return f"{status} {reason or ''}".strip()
    return f"{type(exc).__name__}: {exc}"[:200]
