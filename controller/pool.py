"""What one pool is: queues, broker, target Deployment and policy, from a WorkerPool or env.

Both sources produce the same frozen `PoolSpec`, so the loop never knows where a
pool came from. The API server validates WorkerPools against the CRD schema; this
module re-checks what it relies on, so a bad object becomes a clear `SpecError`
(shown as a Warning event and a condition) instead of a crashed loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from controller.policy import PolicyConfig
from controller.settings import ControllerSettings, check_broker_url
from worker.errors import ConfigError

PAUSED_ANNOTATION = "qscale.io/paused"
GROUP = "qscale.io"
VERSION = "v1alpha1"
PLURAL = "workerpools"
KIND = "WorkerPool"


class SpecError(ValueError):
    """A WorkerPool whose spec cannot be acted on; `str(err)` names the field."""


@dataclass(frozen=True)
class SecretRef:
    """Where the broker URL lives when it is not written in the spec."""

    name: str
    key: str = "url"


@dataclass(frozen=True)
class PoolSpec:
    """One pool to scale, as the loop needs it."""

    namespace: str
    name: str
    queues: tuple[str, ...]
    deployment: str
    concurrency: int
    policy: PolicyConfig
    broker_url: str | None = None
    broker_secret: SecretRef | None = None
    poll_interval_seconds: float = 1.0
    drain_deadline_seconds: float = 900.0
    pod_state_port: int = 8080
    paused: bool = False
    generation: int = 0
    uid: str = ""
    from_crd: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _number(spec: Mapping[str, Any], name: str, default: float | None, *, minimum: float = 0.0,
            integer: bool = False) -> Any:
    value = spec.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SpecError(f"spec.{name}: must be a number, got {value!r}")
    if value < minimum:
        raise SpecError(f"spec.{name}: must be >= {minimum:g}, got {value!r}")
    if integer:
        if value != int(value):
            raise SpecError(f"spec.{name}: must be an integer, got {value!r}")
        return int(value)
    return float(value)


def policy_from_spec(spec: Mapping[str, Any]) -> PolicyConfig:
    """The PolicyConfig a WorkerPool spec asks for (field names camelCase as in the CRD).

    Unset fields take PolicyConfig's defaults, the one source the CRD and chart mirror."""
    default = PolicyConfig()
    mode = spec.get("mode", default.mode)
    if mode not in ("queue", "latency"):
        raise SpecError(f"spec.mode: must be queue or latency, got {mode!r}")
    on_error = spec.get("onError", default.on_error)
    if on_error not in ("hold", "fallback"):
        raise SpecError(f"spec.onError: must be hold or fallback, got {on_error!r}")
    min_replicas = _number(spec, "minReplicas", default.min_replicas, integer=True)
    max_replicas = _number(spec, "maxReplicas", default.max_replicas, minimum=1, integer=True)
    if min_replicas > max_replicas:
        raise SpecError(f"spec.minReplicas: {min_replicas} exceeds maxReplicas {max_replicas}")
    tolerance = _number(spec, "tolerance", default.tolerance)
    if tolerance >= 1:
        raise SpecError(f"spec.tolerance: must be below 1, got {tolerance!r}")
    fallback = _number(spec, "fallbackReplicas", None, integer=True)
    if on_error == "fallback" and fallback is None:
        raise SpecError("spec.fallbackReplicas: required when onError is fallback")
    target_per_slot = _number(spec, "targetPerSlot", default.target_per_slot)
    target_wait = _number(spec, "targetWaitSeconds", default.target_wait_seconds)
    if target_per_slot <= 0 or target_wait <= 0:
        raise SpecError("spec.targetPerSlot/targetWaitSeconds: must be positive")
    try:
        return PolicyConfig(
            mode=mode,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            target_per_slot=target_per_slot,
            target_wait_seconds=target_wait,
            activation_threshold=_number(spec, "activationThreshold",
                                         default.activation_threshold, integer=True),
            tolerance=tolerance,
            max_step_up=_number(spec, "maxStepUp", None, minimum=1, integer=True),
            scale_down_window_seconds=_number(spec, "scaleDownWindowSeconds",
                                              default.scale_down_window_seconds),
            scale_down_step=_number(spec, "scaleDownStep", None, minimum=1, integer=True),
            flap_backoff_max=_number(spec, "flapBackoffMax", default.flap_backoff_max,
                                     integer=True),
            cooldown_seconds=_number(spec, "cooldownSeconds", default.cooldown_seconds),
            on_error=on_error,
            fallback_replicas=fallback,
            fallback_failure_threshold=_number(spec, "fallbackFailureThreshold",
                                               default.fallback_failure_threshold,
                                               minimum=1, integer=True),
            pod_startup_seconds=_number(spec, "podStartupSeconds", default.pod_startup_seconds),
            batch_seconds=_number(spec, "batchSeconds", default.batch_seconds),
        )
    except ValueError as exc:  # the policy's own checks, e.g. fallbackReplicas >= 1
        raise SpecError(f"spec: {exc}") from None


def pool_from_workerpool(obj: Mapping[str, Any]) -> PoolSpec:
    """Parse one WorkerPool object (as the API returns it) or raise SpecError."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    queues = spec.get("queues") or []
    if not isinstance(queues, list) or not queues or not all(
            isinstance(q, str) and q for q in queues):
        raise SpecError("spec.queues: need a non-empty list of queue names")
    target = (spec.get("targetRef") or {}).get("name")
    if not isinstance(target, str) or not target:
        raise SpecError("spec.targetRef.name: the Deployment to scale is required")
    broker = spec.get("broker") or {}
    url = broker.get("url")
    secret_ref = broker.get("secretRef")
    secret: SecretRef | None = None
    if url:
        try:
            check_broker_url(str(url))
        except ValueError as exc:
            raise SpecError(f"spec.broker.url: {exc}") from None
    elif secret_ref and secret_ref.get("name"):
        secret = SecretRef(name=str(secret_ref["name"]), key=str(secret_ref.get("key") or "url"))
    else:
        raise SpecError("spec.broker: set url or secretRef.name")
    annotations = meta.get("annotations") or {}
    return PoolSpec(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name")),
        queues=tuple(queues),
        deployment=target,
        concurrency=_number(spec, "concurrency", 1, minimum=1, integer=True),
        policy=policy_from_spec(spec),
        broker_url=str(url) if url else None,
        broker_secret=secret,
        poll_interval_seconds=max(0.1, _number(spec, "pollIntervalSeconds", 1.0)),
        drain_deadline_seconds=_number(spec, "drainDeadlineSeconds", 900.0),
        pod_state_port=_number(spec, "podStatePort", 8080, integer=True),
        paused=str(annotations.get(PAUSED_ANNOTATION, "")).lower() == "true",
        generation=int(meta.get("generation") or 0),
        uid=str(meta.get("uid") or ""),
        from_crd=True,
    )


def pool_from_settings(settings: ControllerSettings) -> PoolSpec:
    """The single pool described by QSCALE_CONTROLLER_* (pool_source=env)."""
    try:
        policy = _policy_from_settings(settings)
    except ValueError as exc:
        raise ConfigError(f"QSCALE_CONTROLLER_*: {exc}") from None
    return PoolSpec(
        namespace=settings.env_namespace,
        name=settings.pool_name,
        queues=settings.queues,
        deployment=settings.deployment,
        concurrency=settings.concurrency,
        policy=policy,
        broker_url=settings.broker_url,
        poll_interval_seconds=settings.poll_interval_seconds,
        drain_deadline_seconds=settings.drain_deadline_seconds,
        pod_state_port=settings.pod_state_port,
    )


def _policy_from_settings(settings: ControllerSettings) -> PolicyConfig:
    return PolicyConfig(
        mode=settings.mode,
        min_replicas=settings.min_replicas,
        max_replicas=settings.max_replicas,
        target_per_slot=settings.target_per_slot,
        target_wait_seconds=settings.target_wait_seconds,
        activation_threshold=settings.activation_threshold,
        tolerance=settings.tolerance,
        max_step_up=settings.max_step_up,
        scale_down_window_seconds=settings.scale_down_window_seconds,
        scale_down_step=settings.scale_down_step,
        flap_backoff_max=settings.flap_backoff_max,
        cooldown_seconds=settings.cooldown_seconds,
        on_error=settings.on_error,
        fallback_replicas=settings.fallback_replicas,
        fallback_failure_threshold=settings.fallback_failure_threshold,
        pod_startup_seconds=settings.pod_startup_seconds,
        batch_seconds=settings.batch_seconds,
    )
