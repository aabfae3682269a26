"""One pool's control loop: read metrics, ask the policy, act, report. Only wiring.

Each tick: queue depth, pods' /state and rates -> `desired_replicas` (pure) -> cordons
(controller.cordon) -> the actuator (deletion costs, then the scale patch) -> status,
events, metrics and one log line. A standby replica still reads and decides (so its
history is warm when it takes over) but never acts.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from controller.actuator import ActuationError, Actuator, DeploymentView, TargetMissingError
from controller.cordon import PodCordoner, PoolCordons
from controller.crd import StatusWriter
from controller.events import EventRecorder, Involved
from controller.metrics import ControllerMetrics
from controller.podmemory import PodMemory
from controller.podstate import PodState, PodStateReader, deletion_costs
from controller.policy import Decision, History, Observation, desired_replicas
from controller.pool import KIND, PoolSpec
from controller.sources import DepthSample, DepthSource, MetricReadError, RateEstimator

log = logging.getLogger(__name__)

# Pod /state is read this often for busy counts, counters and service times, and at
# once whenever a scale-down is about to be decided (so the busy floor is current).
POD_REFRESH_SECONDS = 5.0


@dataclass
class LoopDeps:
    """What a pool loop is wired to; shared between pools except the per-pool parts."""

    make_source: Callable[[PoolSpec], DepthSource]
    make_actuator: Callable[[PoolSpec], Actuator]
    pod_reader: PodStateReader | None
    events: EventRecorder | None
    make_status: Callable[[PoolSpec], StatusWriter | None] | None
    metrics: ControllerMetrics
    is_leader: Callable[[], bool] = lambda: True
    dry_run: bool = False
    log_format: str = "kv"
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # compared with pods' creation times
    cordoner: PodCordoner | None = None  # None: no control token, busy pods are not drained


@dataclass
class TickResult:
    """What one tick saw and did (returned for tests and --once)."""

    decision: Decision | None
    current: int | None
    acted: bool = False
    error: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


class PoolLoop:
    """Drives one WorkerPool; `update(spec)` takes effect on the next tick."""

    def __init__(self, spec: PoolSpec, deps: LoopDeps) -> None:
        self.deps = deps
        self.spec = spec
        self._source: DepthSource | None = None
        self._source_key: tuple[Any, ...] = ()
        self._actuator: Actuator | None = None
        self._status: StatusWriter | None = deps.make_status(spec) if deps.make_status else None
        self._rates = RateEstimator()
        self._history: History | None = None
        self._backoff = 0.0
        self._hold_until = 0.0
        self._floor_since: float | None = None
        self._pods: list[PodState] = []
        self._pods_read_at = -1e18
        self._memory = PodMemory(deps.wall_clock)  # start-up and service times
        self._metrics_ok: bool | None = None
        self._target_ok: bool | None = None
        self._last_scale_time = ""
        self._cordons = PoolCordons(deps.cordoner, deps.metrics)

    @property
    def involved(self) -> Involved:
        """Events are about the WorkerPool, or the Deployment for an env-defined pool."""
        if self.spec.from_crd:
            return Involved(KIND, self.spec.namespace, self.spec.name, self.spec.uid)
        return Involved("Deployment", self.spec.namespace, self.spec.deployment,
                        api_version="apps/v1")

    def update(self, spec: PoolSpec) -> None:
        if spec.deployment != self.spec.deployment and self._actuator is not None:
            self._actuator.stop()
            self._actuator = None
        self.spec = spec

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
        if self._actuator is not None:
            self._actuator.stop()

    def _source_for(self, spec: PoolSpec) -> DepthSource:
        key = (spec.broker_url, spec.broker_secret, spec.queues)
        if self._source is None or key != self._source_key:
            if self._source is not None:
                self._source.close()
            self._source = self.deps.make_source(spec)
            self._source_key = key
        return self._source

    def _actuator_for(self, spec: PoolSpec) -> Actuator:
        if self._actuator is None:
            self._actuator = self.deps.make_actuator(spec).start()
        return self._actuator

    # -- one tick --

    def tick(self) -> TickResult:
        spec, deps = self.spec, self.deps
        started = deps.clock()
        leader = deps.is_leader()
        acting = leader and not deps.dry_run and not spec.paused
        try:
            target = self._actuator_for(spec).current()
        except ActuationError as exc:
            deps.metrics.api_errors.labels(spec.namespace, spec.name).inc()
            return TickResult(None, None, error=str(exc))
        if not target.exists:
            self._target_missing(leader)
            return TickResult(None, None, error="target deployment not found")
        self._target_found(leader)
        current = target.spec_replicas

        sample, read_error = self._read_depth(spec)
        fresh = leader and started - self._pods_read_at >= POD_REFRESH_SECONDS
        if fresh:
            self._pods = self._read_pods(spec, target, started)
            self._memory.remember_startups(self._pods)
        obs = self._observe(spec, sample, read_error, self._pods, started, fresh=fresh)
        obs = replace(obs, starting_pods=_starting_pods(target),
                      pod_startup_seconds=self._memory.startup_seconds())
        if self._history is None:  # fresh start: the window begins now, at the current size
            self._history = History(recommendations=((started, current),))
        decision = desired_replicas(obs, current, spec.concurrency, spec.policy,
                                    self._history, started)
        if leader and not fresh and decision.desired < current:
            # About to remove pods: decide again on fresh busy counts (same inputs otherwise).
            self._pods = self._read_pods(spec, target, started)
            obs = replace(obs, busy_pods=self._busy(spec, self._pods))
            decision = desired_replicas(obs, current, spec.concurrency, spec.policy,
                                        self._history, started)
        self._history = decision.history
        self._floor_since = (self._floor_since or started) \
            if decision.reason == "floor:busy-pods" else None
        self._cordons.update(spec, self._pods, decision, current, acting=leader and not
                             deps.dry_run, pods_read=self._pods_read_at == started)

        acted, act_error = False, None
        if acting and decision.desired != current and started >= self._hold_until:
            acted, act_error = self._act(spec, decision, current, self._pods)
        result = TickResult(decision, current, acted, act_error or read_error)
        result.fields = self._report(spec, obs, decision, current, result, leader=leader)
        deps.metrics.loop_seconds.labels(spec.namespace, spec.name).observe(
            deps.clock() - started)
        return result

    def _read_depth(self, spec: PoolSpec) -> tuple[DepthSample | None, str | None]:
        try:
            return self._source_for(spec).sample(), None
        except (MetricReadError, ActuationError) as exc:
            self.deps.metrics.metric_errors.labels(spec.namespace, spec.name).inc()
            return None, str(exc)
        except Exception as exc:  # e.g. a broker secret that cannot be read
            self.deps.metrics.metric_errors.labels(spec.namespace, spec.name).inc()
            self._source = None
            return None, f"{type(exc).__name__}: {exc}"

    def _read_pods(self, spec: PoolSpec, target: DeploymentView, now: float) -> list[PodState]:
        reader = self.deps.pod_reader
        self._pods_read_at = now
        if reader is None or not target.match_labels:
            return []
        try:
            return reader.read(spec.namespace, target.match_labels, spec.pod_state_port)
        except Exception as exc:
            log.warning("pool=%s listing pods failed: %s", spec.key, exc)
            return []

    @staticmethod
    def _busy(spec: PoolSpec, pods: list[PodState]) -> int:
        if not spec.pod_state_port:
            return 0
        return sum(1 for p in pods if p.counts_as_busy)

    def _observe(self, spec: PoolSpec, sample: DepthSample | None, error: str | None,
                 pods: list[PodState], now: float, *, fresh: bool) -> Observation:
        live = [p for p in pods if not p.terminating]
        busy = self._busy(spec, live)
        service = self._memory.remember_service_time(live)
        counters = {p.name: c for p in live if (c := p.completed) is not None}
        if not fresh:  # counters are only comparable at the moment they were read
            counters = {}
        deadline_passed = (self._floor_since is not None
                           and now - self._floor_since > spec.drain_deadline_seconds)
        if sample is None:
            return Observation(ok=False, busy_pods=busy, service_time_seconds=service,
                               draining_deadline_passed=deadline_passed, error=error)
        rates = self._rates.update(
            now, sample.backlog, completed=counters or None, in_flight=sample.in_flight,
            service_time=service if fresh and not counters else None)
        return Observation(
            ok=True, ready=sample.ready, in_flight=sample.in_flight,
            arrival_rate=rates.arrival, completion_rate=rates.completion,
            service_time_seconds=service, busy_pods=busy,
            draining_deadline_passed=deadline_passed)

    def _act(self, spec: PoolSpec, decision: Decision, current: int,
             pods: list[PodState]) -> tuple[bool, str | None]:
        deps, actuator = self.deps, self._actuator_for(spec)
        try:
            if decision.desired < current and pods and spec.pod_state_port:
                costs = deletion_costs(pods, self._cordons.names)
                actuator.mark_deletion_costs(costs, {p.name: p.deletion_cost for p in pods})
            if not deps.is_leader():  # lost the lease while preparing: do not write
                return False, None
            changed = actuator.scale(decision.desired)
        except TargetMissingError as exc:
            self._target_missing(True)
            return False, str(exc)
        except ActuationError as exc:
            deps.metrics.api_errors.labels(spec.namespace, spec.name).inc()
            self._backoff = min(max(self._backoff * 2, 1.0), 30.0)
            self._hold_until = deps.clock() + self._backoff
            log.warning("pool=%s scaling failed, holding for %.0fs: %s", spec.key,
                        self._backoff, exc)
            if deps.events:
                deps.events.emit(self.involved, "Warning", "ScaleFailed", str(exc))
            return False, str(exc)
        self._backoff = 0.0
        if changed:
            direction = "up" if decision.desired > current else "down"
            deps.metrics.scale_events.labels(spec.namespace, spec.name, direction).inc()
            self._last_scale_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            if deps.events:
                reason = "ScaledUp" if direction == "up" else "ScaledDown"
                deps.events.emit(self.involved, "Normal", reason,
                                 f"{spec.deployment}: {current} -> {decision.desired} "
                                 f"({decision.reason})")
        return changed, None

    # -- reporting --

    def _target_missing(self, leader: bool) -> None:
        spec = self.spec
        if self._target_ok is not False:
            log.warning("pool=%s target deployment %s not found", spec.key, spec.deployment)
            if leader and self.deps.events and not self.deps.dry_run:
                self.deps.events.emit(self.involved, "Warning", "TargetNotFound",
                                      f"deployment {spec.namespace}/{spec.deployment} not found")
        self._target_ok = False
        if leader and self._status is not None and not self.deps.dry_run:
            self._status.condition("Ready", False, "TargetNotFound",
                                   f"deployment {spec.deployment} not found")
            self._status.write({"observedGeneration": spec.generation,
                                "lastDecisionReason": "error:target-not-found"})

    def _target_found(self, leader: bool) -> None:
        self._target_ok = True
        if leader and self._status is not None:
            self._status.condition("Ready", True, "TargetFound",
                                   f"scaling deployment {self.spec.deployment}")

    def _report(self, spec: PoolSpec, obs: Observation, decision: Decision, current: int,
                result: TickResult, *, leader: bool) -> dict[str, Any]:
        deps = self.deps
        labels = (spec.namespace, spec.name)
        reason = ("paused:" + decision.reason) if spec.paused else decision.reason
        fields: dict[str, Any] = {
            "pool": spec.key, "queues": ",".join(spec.queues),
            "depth": obs.ready, "in_flight": obs.in_flight,
            "arrival": _round(obs.arrival_rate), "completion": _round(obs.completion_rate),
            "service_time": _round(obs.service_time_seconds), "busy_pods": obs.busy_pods,
            "starting_pods": obs.starting_pods,
            "startup": _round(_startup_in_use(obs, spec), 1),
            "current": current, "desired": decision.desired, "raw": decision.raw_desired,
            "reason": reason, "acted": result.acted, "leader": leader,
            "drain": decision.drain_pods, "cordoned": ",".join(sorted(self._cordons.names)) or None,
        }
        if result.error:
            fields["error"] = result.error
        if deps.dry_run:
            fields["dry_run"] = True
        self._log(fields)
        if obs.ready is not None:
            deps.metrics.queue_ready.labels(*labels).set(obs.ready)
            deps.metrics.queue_in_flight.labels(*labels).set(obs.in_flight or 0)
        if obs.arrival_rate is not None:
            deps.metrics.arrival_rate.labels(*labels).set(obs.arrival_rate)
        deps.metrics.desired_replicas.labels(*labels).set(decision.desired)
        deps.metrics.current_replicas.labels(*labels).set(
            decision.desired if result.acted else current)
        deps.metrics.busy_pods.labels(*labels).set(obs.busy_pods)
        deps.metrics.decisions.labels(*labels, decision.reason).inc()
        self._metrics_transition(obs, leader)
        if leader and self._status is not None and not deps.dry_run:
            self._write_status(spec, obs, decision, current, result, reason=reason)
        return fields

    def _metrics_transition(self, obs: Observation, leader: bool) -> None:
        if obs.ok == self._metrics_ok:
            return
        self._metrics_ok = obs.ok
        if obs.ok or not leader or self.deps.dry_run or self.deps.events is None:
            return
        policy = self.spec.policy
        held = ("holding replicas" if policy.on_error == "hold"
                else f"falling back to {policy.fallback_replicas} replicas")
        self.deps.events.emit(self.involved, "Warning", "MetricsUnavailable",
                              f"queue metrics unreadable, {held}: {obs.error}")

    def _write_status(self, spec: PoolSpec, obs: Observation, decision: Decision, current: int,
                      result: TickResult, *, reason: str) -> None:
        status = self._status
        assert status is not None
        status.condition("MetricsAvailable", obs.ok, "MetricsRead" if obs.ok else "ReadFailed",
                         "" if obs.ok else (obs.error or "metric read failed"))
        active = not spec.paused and decision.desired > 0
        status.condition("Active", active,
                         "Paused" if spec.paused else ("Scaling" if active else "ScaledToZero"),
                         "qscale.io/paused is true" if spec.paused else "")
        limited = decision.reason.startswith(("clamp:", "floor:"))
        status.condition("ScalingLimited", limited, decision.reason if limited else "WithinLimits",
                         f"raw desired {decision.raw_desired}" if limited else "")
        replicas = decision.desired if result.acted else current
        status.write({
            "readyDepth": obs.ready, "inFlight": obs.in_flight,
            "arrivalRate": _round(obs.arrival_rate, 2),
            "serviceTimeSeconds": _round(obs.service_time_seconds, 3),
            "startingPods": obs.starting_pods, "cordonedPods": len(self._cordons.names),
            "podStartupSeconds": _round(_startup_in_use(obs, spec), 1),
            "desiredReplicas": decision.desired, "currentReplicas": replicas,
            "lastDecision": f"{current}->{decision.desired}" if decision.desired != current
            else f"hold {current}",
            "lastDecisionReason": reason,
            "lastScaleTime": self._last_scale_time or None,
            "observedGeneration": spec.generation,
        }, force=result.acted)

    def _log(self, fields: dict[str, Any]) -> None:
        if self.deps.log_format == "json":
            log.info("decision %s", json.dumps(fields, sort_keys=False, default=str))
        else:
            log.info("decision %s", " ".join(f"{k}={_kv(v)}" for k, v in fields.items()))


def _starting_pods(target: DeploymentView) -> int:
    """Replicas asked for but not Ready: they count in `current` yet consume nothing.

    From the Deployment watch rather than the 5 s pod list, so pods just requested
    (not even created yet) count as starting at once."""
    return max(target.spec_replicas - target.ready_replicas, 0)


def _startup_in_use(obs: Observation, spec: PoolSpec) -> float:
    """The pod start-up time the policy works with: measured, else configured."""
    measured = obs.pod_startup_seconds
    return spec.policy.pod_startup_seconds if measured is None else measured


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _kv(value: object) -> str:
    text = "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(text) if " " in text or "=" in text else text
