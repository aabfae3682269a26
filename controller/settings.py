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


def _comma_list(value: object) -> object:
    """`a, b,c` from the environment -> ("a", "b", "c")."""
    if isinstance(value, str):
        return tuple(filter(None, (part.strip() for part in value.split(","))))
    return value


class ControllerSettings(BaseSettings):
    """Everything the controller reads from its environment."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True,
                                      populate_by_name=True)

    pool_source: Literal["workerpools", "env"] = "workerpools"
    # This controller reconciles the WorkerPools labelled qscale.io/controller=<name>
    # ("": those without the label); the chart sets its release's fullname.
    name: str = ""
    # WorkerPool mode: "" watches all namespaces. Env mode: the Deployment's namespace.
    namespace: str = ""
    dry_run: bool = False

    # -- single-pool (env) mode --
    pool_name: str = "default"
    broker_url: str = ""
    queues: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_list),
                      Field(min_length=1)] = ("default",)
    deployment: str = ""
    concurrency: Annotated[int, Field(ge=1, le=1024)] = 1
    mode: Literal["queue", "latency"] = _POLICY.mode
    min_replicas: Annotated[int, _bound("min_replicas")] = _POLICY.min_replicas
    max_replicas: Annotated[int, _bound("max_replicas")] = _POLICY.max_replicas
    target_per_slot: Annotated[float, _bound("target_per_slot")] = _POLICY.target_per_slot
    target_wait_seconds: Annotated[float, _bound("target_wait_seconds")
                                   ] = _POLICY.target_wait_seconds
    activation_threshold: Annotated[int, _bound("activation_threshold")
                                    ] = _POLICY.activation_threshold
    tolerance: Annotated[float, _bound("tolerance")] = _POLICY.tolerance
    max_step_up: Annotated[int | None, _bound("max_step_up")] = _POLICY.max_step_up
    # Unset = automatic (see controller.policyconfig); a value is honoured as given.
    scale_down_window_seconds: Annotated[float | None, _bound("scale_down_window_seconds")
                                         ] = _POLICY.scale_down_window_seconds
    scale_down_step: Annotated[int | None, _bound("scale_down_step")] = _POLICY.scale_down_step
    flap_backoff_max: Annotated[int, _bound("flap_backoff_max")] = _POLICY.flap_backoff_max
    cooldown_seconds: Annotated[float | None, _bound("cooldown_seconds")
                                ] = _POLICY.cooldown_seconds
    pod_startup_seconds: Annotated[float, _bound("pod_startup_seconds")
                                   ] = _POLICY.pod_startup_seconds
    batch_seconds: Annotated[float, _bound("batch_seconds")] = _POLICY.batch_seconds
    poll_interval_seconds: Annotated[float, Field(ge=0.1, le=300)] = 1.0
    on_error: Literal["hold", "fallback"] = _POLICY.on_error
    fallback_replicas: Annotated[int | None, _bound("fallback_replicas")
                                 ] = _POLICY.fallback_replicas
    fallback_failure_threshold: Annotated[int, _bound("fallback_failure_threshold")
                                          ] = _POLICY.fallback_failure_threshold
    drain_deadline_seconds: Annotated[float, Field(ge=0)] = 900.0
    pod_state_port: Annotated[int, Field(ge=0, le=65535)] = 8080  # 0: pods serve no /state

    # -- how pods' /state is read --
    pod_state_access: Literal["direct", "apiserver-proxy"] = "direct"
    pod_state_timeout_seconds: Annotated[float, Field(gt=0, le=30)] = 0.5

    # -- cordoning busy pods the policy wants gone (controller.cordon) --
    # The workers' QSCALE_CONTROL_TOKEN (same variable, no CONTROLLER_ prefix); empty
    # turns cordoning off. Cordons last this long unless refreshed (every pod read).
    control_token: SecretStr = Field(default=SecretStr(""),
                                     validation_alias="QSCALE_CONTROL_TOKEN")
    cordon_ttl_seconds: Annotated[float, Field(ge=15, le=3600)] = 120.0

    # -- leader election on a coordination.k8s.io Lease --
    leader_election: bool = True
    lease_name: str = "qscale-controller"
    lease_namespace: str = ""  # "": the pod's own namespace in-cluster, else "default"
    lease_duration_seconds: Annotated[float, Field(ge=1, le=600)] = 15.0
    lease_renew_seconds: Annotated[float, Field(gt=0, le=300)] = 5.0
    identity: str = Field(default_factory=socket.gethostname)

    # -- plumbing --
    status_min_interval_seconds: Annotated[float, Field(ge=0)] = 1.0
    http_host: str = "0.0.0.0"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8081
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                         BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)
                         ] = "INFO"
    log_format: Literal["kv", "json"] = "kv"

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
