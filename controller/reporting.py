"""What one pool says about each tick: the decision log line, metrics, status, Events.

Only the leader writes status and Events and exports the pool's gauges and counters
(a standby's numbers would double every dashboard sum); every replica logs its
decisions. Conditions: Ready, Active, ScalingLimited, MetricsAvailable and
InputsKnown (False while an input a scale-down rests on is unknown, with a
ScaleDownHeld Warning when that starts).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from importlib import metadata
from typing import TYPE_CHECKING, Any

from controller.crd import StatusWriter
from controller.events import Involved
from controller.policy import Decision, Observation
from controller.pool import PoolSpec

if TYPE_CHECKING:
    from controller.loop import LoopDeps

log = logging.getLogger(__name__)


def _controller_version() -> str:
    """The installed qscale version, written to status so `kubectl get wp` shows an upgrade
    has reached the controller (and a CRD that prunes the field shows it is older)."""
    try:
        return metadata.version("qscale")
    except metadata.PackageNotFoundError:
        return "unknown"


CONTROLLER_VERSION = _controller_version()

# The InputsKnown=False reason for each unknown input (the first one names it).
UNKNOWN_REASONS = {"pods": "PodListFailed", "in-flight": "InFlightUnknown",
                   "pod-state": "PodStateUnreadable", "scalers": "ScalersUnknown"}


class PoolReporter:
    """One pool's status, events, metrics and log line; remembers what it last said."""

    def __init__(self, deps: LoopDeps, status: StatusWriter | None,
                 involved: Callable[[], Involved]) -> None:
        self.deps = deps
        self.status = status
        self.involved = involved
        self._metrics_ok: bool | None = None
        self._target_ok: bool | None = None
        self._unknown: tuple[str, ...] | None = None
        self._tick_error: str | None = None
        self.last_scale_time = ""

    def _writes(self, leader: bool) -> bool:
        return leader and not self.deps.dry_run

    def event(self, leader: bool, kind: str, reason: str, message: str) -> None:
        if self._writes(leader) and self.deps.events is not None:
            self.deps.events.emit(self.involved(), kind, reason, message)

    # -- the target --

    def target_missing(self, spec: PoolSpec, leader: bool) -> None:
        if self._target_ok is not False:
            log.warning("pool=%s target deployment %s not found", spec.key, spec.deployment)
            self.event(leader, "Warning", "TargetNotFound",
                       f"deployment {spec.namespace}/{spec.deployment} not found")
        self._target_ok = False
        if self._writes(leader) and self.status is not None:
            self.status.condition("Ready", False, "TargetNotFound",
                                  f"deployment {spec.deployment} not found")
            self.status.write({"observedGeneration": spec.generation,
                               "lastDecisionReason": "error:target-not-found"})

    def target_found(self, spec: PoolSpec, leader: bool) -> None:
        self._target_ok = True
        self._tick_error = None
        if self._writes(leader) and self.status is not None:
            self.status.condition("Ready", True, "TargetFound",
                                  f"scaling deployment {spec.deployment}")

    def refused(self, spec: PoolSpec, leader: bool, why: str) -> None:
        """The pool's target is scaled by someone else: we act on nothing (never fight)."""
        if self._target_ok is not None or self._tick_error != why:
            log.warning("pool=%s refused: %s", spec.key, why)
            self.event(leader, "Warning", "TargetAlreadyScaled", why)
        self._target_ok, self._tick_error = None, why
        if self._writes(leader):
            self.deps.metrics.refused.labels(spec.namespace, spec.name).set(1)
            if self.status is not None:
                self.status.condition("Ready", False, "TargetAlreadyScaled", why)
                self.status.write({"observedGeneration": spec.generation,
                                   "lastDecisionReason": "refused:target-already-scaled"})

    # -- a tick that raised --

    def tick_failed(self, spec: PoolSpec, leader: bool, exc: BaseException) -> None:
        """A bug or an unexpected error: counted, a condition and an Event, not a log line
        alone (the pool would otherwise freeze silently)."""
        why = f"{type(exc).__name__}: {exc}"[:300]
        self.deps.metrics.tick_errors.labels(spec.namespace, spec.name).inc()
        if why != self._tick_error:
            self.event(leader, "Warning", "TickFailed", why)
        self._tick_error, self._target_ok = why, None
        if self._writes(leader) and self.status is not None:
            self.status.condition("Ready", False, "TickFailed", why)
            self.status.write({"observedGeneration": spec.generation,
                               "lastDecisionReason": "error:tick-failed"}, force=True)

    # -- unknown inputs --

    def inputs(self, spec: PoolSpec, unknown: Mapping[str, str], leader: bool) -> None:
        """Unknown is not zero: count each unknown input, and say when the set changes."""
        names = tuple(unknown)
        if self._writes(leader):
            for name in names:
                self.deps.metrics.unknown_inputs.labels(spec.namespace, spec.name, name).inc()
        if names != self._unknown and leader:
            self._unknown = names
            if names:
                detail = "; ".join(f"{k}: {v}" for k, v in unknown.items())
                log.warning("pool=%s scale-down held, unknown %s", spec.key, detail)
                self.event(leader, "Warning", "ScaleDownHeld",
                           f"scale-down held while unknown: {detail}")
        if self._writes(leader) and self.status is not None:
            if names:
                self.status.condition("InputsKnown", False, UNKNOWN_REASONS.get(
                    names[0], "InputUnknown"), "; ".join(f"{k}: {v}" for k, v in
                                                         unknown.items()))
            else:
                self.status.condition("InputsKnown", True, "AllRead", "")

    # -- the decision --

    def decision(self, spec: PoolSpec, obs: Observation, decision: Decision, current: int,
                 fields: dict[str, Any], *, leader: bool, acted: bool,
                 cordoned: int) -> None:
        """The log line always; metrics and status from the leader only."""
        deps = self.deps
        self._log(fields)
        labels = (spec.namespace, spec.name)
        if not leader:  # a standby's view would double the leader's in every sum
            deps.metrics.forget(*labels)
            return
        deps.metrics.pool_seen(*labels)
        if obs.ready is not None:
            deps.metrics.queue_ready.labels(*labels).set(obs.ready)
            deps.metrics.queue_in_flight.labels(*labels).set(obs.in_flight or 0)
        if obs.arrival_rate is not None:
            deps.metrics.arrival_rate.labels(*labels).set(obs.arrival_rate)
        deps.metrics.desired_replicas.labels(*labels).set(decision.desired)
        deps.metrics.current_replicas.labels(*labels).set(
            decision.desired if acted else current)
        deps.metrics.busy_pods.labels(*labels).set(obs.busy_pods)
        deps.metrics.refused.labels(*labels).set(0)
        deps.metrics.decisions.labels(*labels, decision.reason).inc()
        self._metrics_transition(spec, obs, leader)
        if self.status is not None and not deps.dry_run:
            self._write_status(spec, obs, decision, current, fields, acted=acted,
                               cordoned=cordoned)

    def _metrics_transition(self, spec: PoolSpec, obs: Observation, leader: bool) -> None:
        if obs.ok == self._metrics_ok:
            return
        self._metrics_ok = obs.ok
        if obs.ok:
            return
        policy = spec.policy
        held = ("holding replicas" if policy.on_error == "hold"
                else f"holding, then falling back to {policy.fallback_replicas} replicas "
                     f"after {policy.fallback_failure_threshold} failed reads")
        self.event(leader, "Warning", "MetricsUnavailable",
                   f"queue metrics unreadable, {held}: {obs.error}")

    def _write_status(self, spec: PoolSpec, obs: Observation, decision: Decision, current: int,
                      fields: Mapping[str, Any], *, acted: bool, cordoned: int) -> None:
        status = self.status
        assert status is not None
        status.condition("MetricsAvailable", obs.ok, "MetricsRead" if obs.ok else "ReadFailed",
                         "" if obs.ok else (obs.error or "metric read failed"))
        active = not spec.paused and decision.desired > 0
        status.condition("Active", active,
                         "Paused" if spec.paused else ("Scaling" if active else "ScaledToZero"),
                         "qscale.io/paused is true" if spec.paused else "")
        limited = decision.reason.startswith(("clamp:", "floor:", "hold:unknown-"))
        status.condition("ScalingLimited", limited, decision.reason if limited else "WithinLimits",
                         f"raw desired {decision.raw_desired}" if limited else "")
        replicas = decision.desired if acted else current
        status.write({
            "readyDepth": obs.ready, "inFlight": obs.in_flight,
            "arrivalRate": _round(obs.arrival_rate, 2),
            "serviceTimeSeconds": _round(obs.service_time_seconds, 3),
            "startingPods": obs.starting_pods, "cordonedPods": cordoned,
            "podStartupSeconds": fields.get("startup"),
            "desiredReplicas": decision.desired, "currentReplicas": replicas,
            "lastDecision": f"{current}->{decision.desired}" if decision.desired != current
            else f"hold {current}",
            "lastDecisionReason": fields["reason"],
            "lastScaleTime": self.last_scale_time or None,
            "observedGeneration": spec.generation,
            "controllerVersion": CONTROLLER_VERSION,
        }, force=acted)

    def _log(self, fields: Mapping[str, Any]) -> None:
        if self.deps.log_format == "json":
            log.info("decision %s", json.dumps(fields, sort_keys=False, default=str))
        else:
            log.info("decision %s", " ".join(f"{k}={_kv(v)}" for k, v in fields.items()))


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _kv(value: object) -> str:
    text = "-" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    return json.dumps(text) if " " in text or "=" in text else text
