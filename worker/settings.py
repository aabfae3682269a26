"""Worker and producer settings, parsed once from the environment (prefix QSCALE_).

`load_settings()` turns any validation problem into a ConfigError whose text is
one line naming the variable, so `python -m worker` can exit with that reason.
"""

from __future__ import annotations

import os
import socket
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from worker.envelope import check_name
from worker.errors import BadMessage, ConfigError

_BROKER_SCHEMES = ("redis", "rediss", "unix", "amqp", "amqps", "pyamqp")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
DAY, WEEK = 86_400.0, 7 * 86_400.0


def _seconds(*, ge: float | None = None, gt: float | None = None, le: float) -> Any:
    """A finite duration in seconds within the bounds (inf and nan are refused)."""
    return Field(allow_inf_nan=False, ge=ge, gt=gt, le=le)


def check_url(value: str, schemes: tuple[str, ...], what: str) -> str:
    """A URL a client can connect with: a known scheme, a host, a numeric port in range,
    and for Redis a numeric database; ValueError says what is wrong."""
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"scheme must be {what}, got {value!r}")
    if parts.scheme == "unix":
        return value
    if not parts.hostname:
        raise ValueError(f"no host in {value!r}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError(f"port must be a number 0-65535 in {value!r}") from None
    database = parts.path.strip("/")
    if parts.scheme in _REDIS_SCHEMES and database and not database.isdigit():
        raise ValueError(f"database must be a number in {value!r}, got {database!r}")
    return value


class WorkerSettings(BaseSettings):
    """Everything a worker or producer reads from its environment."""

    model_config = SettingsConfigDict(env_prefix="QSCALE_", extra="ignore", frozen=True)

    broker_url: str = "redis://127.0.0.1:6379/0"
    # Results, checkpoints and chord counters live in Redis; defaults to the broker
    # when that is Redis. Empty with an AMQP broker means results are disabled.
    result_url: str = ""
    result_ttl: Annotated[int, Field(gt=0, le=10 * 365 * 86_400)] = 86_400
    queues: Annotated[tuple[str, ...], NoDecode] = ("default",)
    imports: Annotated[tuple[str, ...], NoDecode] = ()
    concurrency: Annotated[int, Field(ge=1, le=1024)] = Field(
        default_factory=lambda: os.cpu_count() or 1)
    prefetch: Annotated[int, Field(ge=0, le=10_000)] = 0  # 0 = automatic
    # RabbitMQ only: queues are declared with x-max-priority when > 0. Priority queues
    # cost RabbitMQ throughput, so they are opt-in; with 0 a message's priority is
    # ignored there (Redis always honours priorities). Publishers, workers and the
    # controller must agree: RabbitMQ refuses to redeclare a queue with other arguments.
    max_priority: Annotated[int, Field(ge=0, le=9)] = 0
    # A message reclaimed from dead workers more often than this (its run took the
    # whole pod down, e.g. OOM) is dead-lettered; 0 = redeliver forever. Redis counts
    # itself; on RabbitMQ only quorum queues count (their x-delivery-limit).
    max_redeliveries: Annotated[int, Field(ge=0)] = 5
    # RabbitMQ only: "classic" (default) or "quorum" work queues (replicated, with the
    # delivery limit above; no priorities). Every declarer must agree, as for priority.
    amqp_queue_type: Literal["classic", "quorum"] = "classic"
    max_tasks_per_child: Annotated[int, Field(ge=0)] = 0   # 0 = unlimited
    max_rss_mb: Annotated[int, Field(ge=0)] = 0             # 0 = unlimited
    # Durations are finite and bounded: an infinite time limit or back-off parsed, then
    # broke every task (setitimer refuses it).
    soft_time_limit: Annotated[float, _seconds(ge=0, le=WEEK)] = 0.0   # 0 = none
    hard_time_limit: Annotated[float, _seconds(ge=0, le=WEEK)] = 0.0   # 0 = none
    drain_seconds: Annotated[float, _seconds(ge=0, le=DAY)] = 25.0
    lease_seconds: Annotated[float, _seconds(gt=0.5, le=3600)] = 10.0
    max_message_bytes: Annotated[int, Field(ge=256, le=512 << 20)] = 1 << 20
    default_max_retries: Annotated[int, Field(ge=0, le=1_000_000)] = 3
    retry_backoff_base: Annotated[float, _seconds(gt=0, le=DAY)] = 1.0
    retry_backoff_max: Annotated[float, _seconds(gt=0, le=WEEK)] = 300.0
    http_host: str = "0.0.0.0"
    http_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    # Part of every consumer's name (an AMQP consumer tag holds at most 255 bytes).
    pod_name: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        default_factory=socket.gethostname)
    # Bearer token for POST/DELETE /cordon (the controller's "stop taking new tasks").
    # Empty: those endpoints answer 403, nobody can change the worker's behaviour.
    control_token: SecretStr = SecretStr("")
    log_level: str = "INFO"

    @field_validator("queues", "imports", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("queues")
    @classmethod
    def _queues_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("at least one queue is required")
        for name in value:
            try:
                check_name(name, f"queue {name[:40]!r}")
            except BadMessage as exc:
                raise ValueError(exc.reason) from None
        return value

    @field_validator("amqp_queue_type", mode="before")
    @classmethod
    def _queue_type_case(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        return check_url(value, _BROKER_SCHEMES, "redis:// or amqp://")

    @field_validator("result_url")
    @classmethod
    def _result_scheme(cls, value: str) -> str:
        return check_url(value, _REDIS_SCHEMES, "redis://") if value else value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"unknown log level {value!r}")
        return level

    @property
    def effective_result_url(self) -> str | None:
        """Where results live: QSCALE_RESULT_URL, else the broker if it is Redis, else none."""
        if self.result_url:
            return self.result_url
        if urlsplit(self.broker_url).scheme in ("redis", "rediss", "unix"):
            return self.broker_url
        return None


def load_settings(**overrides: object) -> WorkerSettings:
    """Parse the environment (plus explicit overrides) or raise a one-line ConfigError."""
    try:
        settings = WorkerSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        reason = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"QSCALE_{field.upper()}: {reason}") from None
    amqp = urlsplit(settings.broker_url).scheme in ("amqp", "amqps", "pyamqp")
    if settings.amqp_queue_type == "quorum" and settings.max_priority and amqp:
        raise ConfigError("QSCALE_AMQP_QUEUE_TYPE: quorum queues have no message priorities "
                          "(RabbitMQ 3.x); set QSCALE_MAX_PRIORITY=0 or use classic queues")
    reserved = [q for q in settings.queues if q.startswith("amq.")]
    if amqp and reserved:
        raise ConfigError(f"QSCALE_QUEUES: RabbitMQ reserves names starting with 'amq.', "
                          f"got {reserved[0]!r}")
    return settings
