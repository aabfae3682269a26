"""Controller settings, parsed once from the environment (prefix QSCALE_CONTROLLER_).

Two ways to name the pools to scale: `pool_source=workerpools` (default) watches
WorkerPool resources; `pool_source=env` scales the one Deployment described by the
QSCALE_CONTROLLER_* variables below, for the smallest setups without the CRD.
`load_settings()` turns any problem into a one-line ConfigError naming the variable.
"""

from __future__ import annotations

import socket
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from controller.policyconfig import BOUNDS, PolicyConfig
from worker.errors import ConfigError

# Policy defaults and bounds come from PolicyConfig alone; the CRD and chart state the same.
_POLICY = PolicyConfig()


def _bound(name: str) -> Any:
    """The pydantic constraint for a policy field: PolicyConfig's bounds, so no env
    value can make the policy overflow (e.g. FLAP_BACKOFF_MAX=1100)."""
    low, high, exclusive = BOUNDS[name]
    return Field(gt=low, le=high) if exclusive else Field(ge=low, le=high)
ENV_PREFIX = "QSCALE_CONTROLLER_"
_BROKER_SCHEMES = ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp")


def _env_mode(text: str) -> str:
    return f"Env mode (POOL_SOURCE=env) only: {text}"


def _spec(field: str) -> str:
    """Env mode's copy of a WorkerPool field: one meaning, documented with the CRD."""
    return _env_mode(f"as WorkerPool `spec.{field}`.")


def _comma_list(value: object) -> object:
    """`a, b,c` from the environment -> ("a", "b", "c")."""
    if isinstance(value, str):
        return tuple(filter(None, (part.strip() for part in value.split(","))))
    return value


class ControllerSettings(BaseSettings):
    """Everything the controller reads from its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True,
                                      populate_by_name=True)

    pool_source: Literal["workerpools", "env"] = Field(
        "workerpools", description="`workerpools`: scale the pools that WorkerPool resources "
                                   "describe (the chart's way); `env`: scale the one "
                                   "Deployment described by the env-mode variables below.")
    name: str = Field(
        "", description="Reconcile only the WorkerPools labelled `qscale.io/controller=<name>` "
                        "(empty: those without the label). The chart sets its release's "
                        "name, so two releases never act on each other's pools.")
    namespace: str = Field(
        "", description="WorkerPool mode: the namespace to watch (empty: all). Env mode: the "
                        "Deployment's namespace (empty: `default`).")
    dry_run: bool = Field(False, description="Log decisions, change nothing.")

    # -- single-pool (env) mode --
    pool_name: str = Field("default", description=_env_mode("the pool's name in logs and "
                                                            "metrics."))
    broker_url: str = Field("", description=_env_mode("the broker URL (required)."))
    queues: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list),
                      Field(min_length=1)] = Field(
        ("default",), description=_env_mode("comma-separated queues to measure."))
    deployment: str = Field("", description=_env_mode("the worker Deployment to scale "
                                                      "(required)."))
    concurrency: Annotated[int, Field(ge=1, le=1024)] = Field(
        1, description=_env_mode("the workers' QSCALE_CONCURRENCY."))
    mode: Literal["queue", "latency"] = Field(_POLICY.mode, description=_spec("mode"))
    min_replicas: Annotated[int, _bound("min_replicas")] = Field(
        _POLICY.min_replicas, description=_spec("minReplicas"))
    max_replicas: Annotated[int, _bound("max_replicas")] = Field(
        _POLICY.max_replicas, description=_spec("maxReplicas"))
    target_per_slot: Annotated[float, _bound("target_per_slot")] = Field(
        _POLICY.target_per_slot, description=_spec("targetPerSlot"))
    target_wait_seconds: Annotated[float, _bound("target_wait_seconds")] = Field(
        _POLICY.target_wait_seconds, description=_spec("targetWaitSeconds"))
    activation_threshold: Annotated[int, _bound("activation_threshold")] = Field(
        _POLICY.activation_threshold, description=_spec("activationThreshold"))
    tolerance: Annotated[float, _bound("tolerance")] = Field(
        _POLICY.tolerance, description=_spec("tolerance"))
    max_step_up: Annotated[int | None, _bound("max_step_up")] = Field(
        _POLICY.max_step_up, description=_spec("maxStepUp"))
    # Unset = automatic (see controller.policyconfig); a value is honoured as given.
    scale_down_window_seconds: Annotated[float | None, _bound("scale_down_window_seconds")
                                         ] = Field(_POLICY.scale_down_window_seconds,
                                                   description=_spec("scaleDownWindowSeconds"))
    scale_down_step: Annotated[int | None, _bound("scale_down_step")] = Field(
        _POLICY.scale_down_step, description=_spec("scaleDownStep"))
    flap_backoff_max: Annotated[int, _bound("flap_backoff_max")] = Field(
        _POLICY.flap_backoff_max, description=_spec("flapBackoffMax"))
    cooldown_seconds: Annotated[float | None, _bound("cooldown_seconds")] = Field(
        _POLICY.cooldown_seconds, description=_spec("cooldownSeconds"))
    pod_startup_seconds: Annotated[float, _bound("pod_startup_seconds")] = Field(
        _POLICY.pod_startup_seconds, description=_spec("podStartupSeconds"))
    batch_seconds: Annotated[float, _bound("batch_seconds")] = Field(
        _POLICY.batch_seconds, description=_spec("batchSeconds"))
    poll_interval_seconds: Annotated[float, Field(ge=0.1, le=300)] = Field(
        1.0, description=_spec("pollIntervalSeconds"))
    on_error: Literal["hold", "fallback"] = Field(_POLICY.on_error,
                                                  description=_spec("onError"))
    fallback_replicas: Annotated[int | None, _bound("fallback_replicas")] = Field(
        _POLICY.fallback_replicas, description=_spec("fallbackReplicas"))
    fallback_failure_threshold: Annotated[int, _bound("fallback_failure_threshold")] = Field(
        _POLICY.fallback_failure_threshold, description=_spec("fallbackFailureThreshold"))
    drain_deadline_seconds: Annotated[float, Field(ge=0)] = Field(
        900.0, description=_spec("drainDeadlineSeconds"))
    pod_state_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8080, description=_spec("podStatePort") + " 0: the pods serve no `/state`.")

    # -- how pods' /state is read --
    pod_state_access: Literal["direct", "apiserver-proxy"] = Field(
        "direct", description="Read a pod's `/state` at its IP (`direct`), or through the API "
                              "server's pod proxy (`apiserver-proxy`, for a controller "
                              "outside the cluster's network).")
    pod_state_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = Field(
        0.5, description="Timeout of one `/state` read; a pod that does not answer counts "
                         "as busy.")

    # -- cordoning busy pods the policy wants gone (controller.cordon) --
    # The workers' QSCALE_CONTROL_TOKEN (same variable, no CONTROLLER_ prefix); empty
    # turns cordoning off. Cordons last this long unless refreshed (every pod read).
    control_token: SecretStr = Field(
        default=SecretStr(""), validation_alias="QSCALE_CONTROL_TOKEN",
        description="The workers' control token (same variable, no CONTROLLER_ prefix), "
                    "sent to POST `/cordon`; empty turns cordoning off.")
    cordon_ttl_seconds: Annotated[float, Field(ge=15, le=3600)] = Field(
        120.0, description="A cordon lapses this long after the controller last refreshed "
                           "it (it refreshes on every pod read), so a controller that dies "
                           "leaves no pod cordoned for ever.")

    # -- leader election on a coordination.k8s.io Lease --
    leader_election: bool = Field(True, description="Elect a leader on a Lease; only the "
                                                    "leader acts (needed for 2 replicas).")
    lease_name: str = Field("qscale-controller", description="Name of the leader Lease.")
    lease_namespace: str = Field(
        "", description="Namespace of the Lease (empty: the pod's own in a cluster, else "
                        "`default`).")
    lease_duration_seconds: Annotated[float, Field(ge=1, le=600)] = Field(
        15.0, description="A leader that stops renewing is replaced after this long.")
    lease_renew_seconds: Annotated[float, Field(gt=0, le=300)] = Field(
        5.0, description="How often the leader renews the Lease (shorter than the duration).")
    identity: str = Field(default_factory=socket.gethostname,
                          description="This replica's name in the Lease.",
                          json_schema_extra={"doc_default": "the host name"})

    # -- plumbing --
    status_min_interval_seconds: Annotated[float, Field(ge=0)] = Field(
        1.0, description="Least time between two status writes of one WorkerPool (a write "
                         "that goes with a scale is never held back).")
    http_host: str = Field("0.0.0.0", description="Address of `/healthz`, `/readyz` and "
                                                  "`/metrics`.")
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8081, description="Port of `/healthz`, `/readyz` and `/metrics`.")
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                         BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
                         ] = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or "
                                                       "CRITICAL.")
    log_format: Literal["kv", "json"] = Field(
        "kv", description="Decision log lines as `key=value` pairs (`kv`) or JSON.")

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        if value:
            check_broker_url(value)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ControllerSettings:
        if self.lease_renew_seconds >= self.lease_duration_seconds:
            raise _FieldError("lease_renew_seconds", "must be shorter than the lease duration")
        if self.pool_source == "env":
            if not self.broker_url:
                raise _FieldError("broker_url", "required when pool_source=env")
            if not self.deployment:
                raise _FieldError("deployment", "required when pool_source=env")
        if self.min_replicas > self.max_replicas:
            raise _FieldError("min_replicas", "must not exceed max_replicas")
        if self.on_error == "fallback" and self.fallback_replicas is None:
            raise _FieldError("fallback_replicas", "required when on_error=fallback")
        return self

    @property
    def env_namespace(self) -> str:
        """The namespace of the single env-mode pool."""
        return self.namespace or "default"


class _FieldError(ValueError):
    """A cross-field problem attributed to one variable."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def check_broker_url(value: str) -> None:
    """Raise ValueError unless `value` is a broker URL the worker's brokers accept."""
    parts = urlsplit(value)
    if parts.scheme not in _BROKER_SCHEMES:
        raise ValueError(f"scheme must be redis:// or amqp://, got {value!r}")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError(f"no host in {value!r}")


def load_settings(**overrides: object) -> ControllerSettings:
    """Parse the environment (plus explicit overrides) or raise a one-line ConfigError."""
    try:
        return ControllerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, _FieldError):
            raise ConfigError(f"{ENV_PREFIX}{cause.field.upper()}: {cause.reason}") from None
        field = str(first["loc"][0]) if first["loc"] else "?"
        reason = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{ENV_PREFIX}{field.upper()}: {reason}") from None
