"""One pool's control loop: read, decide, confirm, act, report. Only wiring.

Each tick: queue depth, pods' /state and rates (controller.observe, where anything
unreadable is unknown, never zero) -> `desired_replicas` (pure) -> for a scale-down,
the gate (controller.scaledown: the pods that would go are confirmed idle, and
cordoned, in this same tick) -> cordons (controller.cordon) -> the actuator
(deletion costs, then the scale patch) -> status, events, metrics and one log line
(controller.reporting). A standby replica still reads depth and decides (so its
history is warm when it takes over) but never acts, and exports nothing per pool.

The spec can change under a running tick (the WorkerPool watch calls `update` from
its own thread): a tick works on the spec and actuator it started with, and acts
only if its spec is still the current one, so a `targetRef` edit can never leave
the loop scaling the old Deployment.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from controller.actuator import ActuationError, Actuator, DeploymentView, TargetMissingError
from controller.conflicts import ConflictCheck, Conflicts
from controller.cordon import PodCordoner, PoolCordons
from controller.crd import StatusWriter
from controller.events import EventRecorder, Involved
from controller.metrics import ControllerMetrics
from controller.observe import POD_REFRESH_SECONDS, PoolInputs
from controller.podstate import deletion_costs
from controller.policy import Decision, History, desired_replicas
from controller.pool import KIND, PoolSpec
from controller.reporting import PoolReporter
from controller.scaledown import ScaleDownGate
from controller.sources import DepthSource

log = logging.getLogger(__name__)

__all__ = ["POD_REFRESH_SECONDS", "LoopDeps", "PoolLoop", "TickResult"]


@dataclass
class LoopDeps:
    """What a pool loop is wired to; shared between pools except the per-pool parts."""

    make_source: Callable[[PoolSpec], DepthSource]
    make_actuator: Callable[[PoolSpec], Actuator]
    pod_reader: Any  # controller.podreader.PodStateReader, or None
    events: EventRecorder | None
    make_status: Callable[[PoolSpec], StatusWriter | None] | None
    metrics: ControllerMetrics
    is_leader: Callable[[], bool] = lambda: True
    dry_run: bool = False
    log_format: str = "kv"
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], float] = time.time  # compared with pods' creation times
    cordoner: PodCordoner | None = None  # None: no control token, busy pods are not drained
    # Who else scales a Deployment (HPAs, other WorkerPools); None: nobody is checked.
    conflicts: Conflicts | None = None


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
        self._lock = threading.Lock()
        self._actuator: Actuator | None = None
        self._inputs = PoolInputs(lambda s: deps.make_source(s), deps.pod_reader,  # noqa: PLW0108 (late-bound)
                                  deps.wall_clock)
        status = deps.make_status(spec) if deps.make_status else None
        self.report = PoolReporter(deps, status, lambda: self.involved)
        self._gate = ScaleDownGate(deps.pod_reader, deps.cordoner)
        self._history: History | None = None
        self._backoff = 0.0
        self._hold_until = 0.0
        self._floor_since: float | None = None
        self._cordons = PoolCordons(deps.cordoner, deps.metrics)
        self.last_tick = deps.clock()  # when a tick last finished (for /healthz)

    @property
    def involved(self) -> Involved:
        """Events are about the WorkerPool, or the Deployment for an env-defined pool."""
        spec = self.spec
        if spec.from_crd:
            return Involved(KIND, spec.namespace, spec.name, spec.uid)
        return Involved("Deployment", spec.namespace, spec.deployment, api_version="apps/v1")

    def update(self, spec: PoolSpec) -> None:
        with self._lock:
            if spec.deployment != self.spec.deployment and self._actuator is not None:
                self._actuator.stop()
                self._actuator = None
            self.spec = spec

    def close(self) -> None:
        self._inputs.close()
        with self._lock:
            if self._actuator is not None:
                self._actuator.stop()

    def _current(self) -> tuple[PoolSpec, Actuator]:
        """The spec in force and its actuator, made for exactly that Deployment."""
        with self._lock:
            spec = self.spec
            if self._actuator is None:
                self._actuator = self.deps.make_actuator(spec).start()
            return spec, self._actuator

    def _still_current(self, spec: PoolSpec) -> bool:
        with self._lock:
            return self.spec.deployment == spec.deployment and self.spec.namespace == \
                spec.namespace

    # -- one tick --

    def tick(self) -> TickResult:
        spec, actuator = self._current()
        deps = self.deps
        started = deps.clock()
        leader = deps.is_leader()
        labels = (spec.namespace, spec.name)
        scalers = deps.conflicts.check(spec) if deps.conflicts else ConflictCheck()
        if scalers.refusal is not None:  # never fight: an HPA or another WorkerPool scales it
            self.report.refused(spec, leader, scalers.refusal)
            self._cordons.release(spec, acting=leader and not deps.dry_run)
            self.last_tick = deps.clock()
            return TickResult(None, None, error=scalers.refusal)
        try:
            target = actuator.current()
        except ActuationError as exc:
            if leader:
                deps.metrics.api_errors.labels(*labels).inc()
            self.last_tick = deps.clock()
            return TickResult(None, None, error=str(exc))
        if not target.exists:
            self.report.target_missing(spec, leader)
            self.last_tick = deps.clock()
            return TickResult(None, None, error="target deployment not found")
        self.report.target_found(spec, leader)
        current = target.spec_replicas

        sample, read_error = self._inputs.read_depth(spec)
        if read_error and leader:
            deps.metrics.metric_errors.labels(*labels).inc()
        fresh = leader and started - self._inputs.pods.at >= POD_REFRESH_SECONDS
        if fresh:
            self._inputs.read_pods(spec, target, started)
        decision, obs, unknown = self._decide(spec, target, sample, read_error, started,
                                              current, fresh=fresh, scalers=scalers)
        if leader and decision.desired < current and self._inputs.pods.at != started:
            # About to remove pods: decide again on a pod read of this very tick.
            self._inputs.read_pods(spec, target, started)
            decision, obs, unknown = self._decide(spec, target, sample, read_error, started,
                                                  current, fresh=False, scalers=scalers)
        acting = (leader and not deps.dry_run and not spec.paused
                  and self._still_current(spec))
        decision, leaving, unconfirmed = self._confirm(spec, decision, current, acting, obs)
        self._history = decision.history
        self._floor_since = (self._floor_since or started) \
            if decision.reason == "floor:busy-pods" else None
        self._cordons.update(spec, self._inputs.pods.live, decision, current,
                             acting=leader and not deps.dry_run and self._still_current(spec),
                             pods_read=self._inputs.pods.at == started, keep=leaving)
        acted, act_error = False, None
        if (acting and decision.desired != current and started >= self._hold_until
                and self._still_current(spec)):
            acted, act_error = self._act(spec, actuator, decision, current)
        result = TickResult(decision, current, acted, act_error or read_error)
        result.fields = self._fields(spec, obs, decision, current, result, leader=leader,
                                     unknown=unknown, unconfirmed=unconfirmed)
        self.report.inputs(spec, unknown, leader)
        self.report.decision(spec, obs, decision, current, result.fields, leader=leader,
                             acted=acted, cordoned=len(self._cordons.names))
        if leader:
            deps.metrics.loop_seconds.labels(*labels).observe(deps.clock() - started)
        self.last_tick = deps.clock()
        return result

    def _decide(self, spec: PoolSpec, target: DeploymentView, sample: Any,
                read_error: str | None, now: float, current: int, *, fresh: bool,
                scalers: ConflictCheck) -> tuple[Decision, Any, dict[str, str]]:
        unknown = self._inputs.unknown_inputs(spec, sample)
        if scalers.unknown:  # an HPA we cannot see could be scaling it too
            unknown["scalers"] = scalers.unknown
        deadline_passed = (self._floor_since is not None
                           and now - self._floor_since > spec.drain_deadline_seconds)
        obs = self._inputs.observe(spec, sample, read_error, now, fresh=fresh,
                                   deadline_passed=deadline_passed, unknown=tuple(unknown))
        lost = self._inputs.lost()  # not Ready in the Deployment's count, yet not starting
        obs = replace(obs, starting_pods=max(_starting_pods(target) - lost, 0), lost_pods=lost,
                      pod_startup_seconds=self._inputs.memory.startup_seconds())
        if self._history is None:  # fresh start: the window begins now, at the current size
            self._history = History(recommendations=((now, current),))
        decision = desired_replicas(obs, current, spec.concurrency, spec.policy,
                                    self._history, now)
        return decision, obs, unknown

    def _confirm(self, spec: PoolSpec, decision: Decision, current: int, acting: bool,
                 obs: Any) -> tuple[Decision, tuple[str, ...], int]:
        """A scale-down goes only as far as the pods it removes are confirmed idle."""
        pods = self._inputs.pods
        if not acting or decision.desired >= current or pods.pods is None:
            return decision, (), 0
        costs = deletion_costs(pods.live, self._cordons.names)
        gate = self._gate.check(spec.namespace, spec.pod_state_port, pods.live, current,
                                decision.desired, costs, cordoned=self._cordons.names,
                                deadline_passed=obs.draining_deadline_passed)
        self._cordons.hold(gate.cordoned)
        if gate.desired == decision.desired:
            return decision, gate.leaving, 0
        assert self._history is not None
        history = decision.history
        if gate.desired == current:  # nothing scaled down after all
            history = replace(history, last_scale_at=self._history.last_scale_at,
                              last_scale_down_at=self._history.last_scale_down_at)
        reason = "hold:unconfirmed-idle" if gate.desired == current else decision.reason
        return (replace(decision, desired=gate.desired, reason=reason, history=history),
                gate.leaving, gate.unconfirmed)

    def _act(self, spec: PoolSpec, actuator: Actuator, decision: Decision,
             current: int) -> tuple[bool, str | None]:
        deps = self.deps
        pods = self._inputs.pods.live
        try:
            if decision.desired < current and pods and spec.pod_state_port:
                costs = deletion_costs(pods, self._cordons.names)
                actuator.mark_deletion_costs(costs, {p.name: p.deletion_cost for p in pods})
            if not deps.is_leader() or not self._still_current(spec):
                return False, None  # lost the lease or the target while preparing
            changed = actuator.scale(decision.desired)
        except TargetMissingError as exc:
            self.report.target_missing(spec, True)
            return False, str(exc)
        except ActuationError as exc:
            deps.metrics.api_errors.labels(spec.namespace, spec.name).inc()
            self._backoff = min(max(self._backoff * 2, 1.0), 30.0)
            self._hold_until = deps.clock() + self._backoff
            log.warning("pool=%s scaling failed, holding for %.0fs: %s", spec.key,
                        self._backoff, exc)
            self.report.event(True, "Warning", "ScaleFailed", str(exc))
            return False, str(exc)
        self._backoff = 0.0
        if changed:
            direction = "up" if decision.desired > current else "down"
            deps.metrics.scale_events.labels(spec.namespace, spec.name, direction).inc()
            self.report.last_scale_time = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.report.event(True, "Normal", "ScaledUp" if direction == "up" else "ScaledDown",
                              f"{spec.deployment}: {current} -> {decision.desired} "
                              f"({decision.reason})")
        return changed, None

    def watcher_stalled(self) -> bool:
        """The actuator's Deployment watch is stuck (a fake actuator has none)."""
        with self._lock:
            watcher = getattr(self._actuator, "watcher", None)
        return bool(watcher is not None and watcher.stalled())

    def tick_failed(self, exc: BaseException) -> None:
        """Called by the runner when `tick` raised: counted, and said in status and Events."""
        self.report.tick_failed(self.spec, self.deps.is_leader(), exc)
        self.last_tick = self.deps.clock()

    def _fields(self, spec: PoolSpec, obs: Any, decision: Decision, current: int,
                result: TickResult, *, leader: bool, unknown: dict[str, str],
                unconfirmed: int) -> dict[str, Any]:
        """The decision log line's fields (structured: one key per fact)."""
        measured = obs.pod_startup_seconds
        startup = spec.policy.pod_startup_seconds if measured is None else measured
        fields: dict[str, Any] = {
            "pool": spec.key, "deployment": spec.deployment, "queues": ",".join(spec.queues),
            "depth": obs.ready, "in_flight": obs.in_flight,
            "arrival": _round(obs.arrival_rate), "completion": _round(obs.completion_rate),
            "service_time": _round(obs.service_time_seconds), "busy_pods": obs.busy_pods,
            "starting_pods": obs.starting_pods, "lost_pods": obs.lost_pods,
            "startup": _round(startup, 1),
            "current": current, "desired": decision.desired, "raw": decision.raw_desired,
            "reason": ("paused:" + decision.reason) if spec.paused else decision.reason,
            "acted": result.acted, "leader": leader, "drain": decision.drain_pods,
            "cordoned": ",".join(sorted(self._cordons.names)) or None,
            "unknown": ",".join(unknown) or None,
        }
        if unconfirmed:
            fields["unconfirmed"] = unconfirmed
        if result.error:
            fields["error"] = result.error
        if self.deps.dry_run:
            fields["dry_run"] = True
        return fields


def _starting_pods(target: DeploymentView) -> int:
    """Replicas asked for but not Ready: they count in `current` yet consume nothing.

    From the Deployment watch rather than the 5 s pod list, so pods just requested
    (not even created yet) count as starting at once."""
    return max(target.spec_replicas - target.ready_replicas, 0)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
