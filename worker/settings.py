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

    broker_url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="Broker URL: `redis://[:PASSWORD@]HOST:PORT/DB`, `rediss://` (TLS), "
                    "`unix://`, or `amqp://USER:PASSWORD@HOST:5672/VHOST` (`amqps://`).")
    result_url: str = Field(
        "", description="Redis holding results, checkpoints and chord state. Empty: the "
                        "broker when it is Redis; with RabbitMQ and no result URL, results "
                        "are disabled (`.get()` raises ResultsDisabled).")
    result_ttl: Annotated[int, Field(gt=0, le=10 * 365 * 86_400)] = Field(
        86_400, description="Seconds a result or checkpoint is kept.")
    queues: Annotated[tuple[str, ...], NoDecode] = Field(
        ("default",), description="Comma-separated queues a worker consumes (the first is "
                                  "also the CLI's default queue).")
    imports: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="Comma-separated modules imported at start so their `@task` "
                        "functions register (e.g. `myapp.tasks`). The CLI imports them too.")
    concurrency: Annotated[int, Field(ge=1, le=1024)] = Field(
        default_factory=lambda: os.cpu_count() or 1,
        description="Child processes per worker, each running one task at a time. Default: "
                    "`os.cpu_count()`, the CPUs of the machine; in a container that is the "
                    "node's count, not the container's CPU limit, so set it there (the "
                    "chart does: `worker.concurrency`, default 2).",
        json_schema_extra={"doc_default": "os.cpu_count()"})
    prefetch: Annotated[int, Field(ge=0, le=10_000)] = Field(
        0, description="Messages a worker claims beyond its free processes; 0 = automatic.")
    max_priority: Annotated[int, Field(ge=0, le=9)] = Field(
        0, description="RabbitMQ: declare queues with `x-max-priority` = this (0 = plain "
                       "queues, priorities ignored; priority queues cost throughput). Redis "
                       "always honours priorities. Producers, workers and the controller "
                       "must agree: RabbitMQ refuses to redeclare a queue with other "
                       "arguments.")
    max_redeliveries: Annotated[int, Field(ge=0)] = Field(
        5, description="A message whose worker died running it more often than this (e.g. "
                       "the pod was OOM-killed) is dead-lettered; 0 = redeliver forever. Redis "
                       "counts itself; RabbitMQ only with quorum queues (`x-delivery-limit`).")
    amqp_queue_type: Literal["classic", "quorum"] = Field(
        "classic", description="RabbitMQ work queues: `classic` or `quorum` (replicated, "
                               "with the delivery limit above, no priorities). Every declarer "
                               "must agree, as for MAX_PRIORITY.")
    max_tasks_per_child: Annotated[int, Field(ge=0)] = Field(
        0, description="Replace a child process after this many tasks; 0 = never.")
    max_rss_mb: Annotated[int, Field(ge=0)] = Field(
        0, description="Replace a child process whose memory (RSS) passes this many MB after "
                       "a task; 0 = never.")
    # Durations are finite and bounded: an infinite time limit or back-off parsed, then
    # broke every task (setitimer refuses it).
    soft_time_limit: Annotated[float, _seconds(ge=0, le=WEEK)] = Field(
        0.0, description="Seconds after which a task gets SoftTimeLimitExceeded raised inside "
                         "it (a task's own `soft_time_limit` wins); 0 = none.")
    hard_time_limit: Annotated[float, _seconds(ge=0, le=WEEK)] = Field(
        0.0, description="Seconds after which the child running a task is killed with its "
                         "process group and the task fails (a task's own `hard_time_limit` "
                         "wins); 0 = none.")
    drain_seconds: Annotated[float, _seconds(ge=0, le=DAY)] = Field(
        25.0, description="On SIGTERM: seconds running tasks may finish; unstarted messages "
                          "go back at once. Keep it below the pod's grace period.")
    lease_seconds: Annotated[float, _seconds(gt=0.5, le=3600)] = Field(
        10.0, description="Redis: a worker's claims return to the queue this long after it "
                          "stopped renewing them (died, or partitioned away).")
    max_message_bytes: Annotated[int, Field(ge=256, le=512 << 20)] = Field(
        1 << 20, description="Largest message body producers send; a larger one is refused "
                             "before sending, and dead-lettered if it arrives anyway.")
    publish_retry_seconds: Annotated[float, _seconds(ge=0, le=DAY)] = Field(
        10.0, description="Producers: how long a publish keeps retrying while the broker "
                          "cannot be reached (refused, reset, timed out; e.g. a broker "
                          "restarting, or a network policy not yet programmed for a new "
                          "pod), with back-off from 0.1 to 1 s; then it raises "
                          "BrokerUnavailable. 0 = no retry. A retry after a publish that "
                          "reached the broker may send it twice (at-least-once).")
    default_max_retries: Annotated[int, Field(ge=0, le=1_000_000)] = Field(
        3, description="Retries of a failing task that sets no `max_retries`: a task that "
                       "raises runs at most 1 + this many times, then is dead-lettered with "
                       "FAILURE.")
    retry_backoff_base: Annotated[float, _seconds(gt=0, le=DAY)] = Field(
        1.0, description="Retry delay: uniform in [0, min(max, base * 2^(attempt-1))] seconds "
                         "(exponential back-off with full jitter).")
    retry_backoff_max: Annotated[float, _seconds(gt=0, le=WEEK)] = Field(
        300.0, description="Longest retry delay, seconds.")
    http_host: str = Field("0.0.0.0", description="Address of the worker's HTTP server.")
    http_port: Annotated[int, Field(ge=0, le=65535)] = Field(
        8080, description="Port of `/healthz`, `/readyz`, `/metrics`, `/state` and `/cordon`; "
                          "0 = any free port (logged at start). A port in use exits 2.")
    rabbitmq_api: str = Field(
        "", description="RabbitMQ management API (`http://USER:PASSWORD@HOST:15672`), read "
                        "for in-flight counts by `status` and the controller. Empty: the AMQP "
                        "URL's host on port 15672 with its credentials.")
    # Part of every consumer's name (an AMQP consumer tag holds at most 255 bytes).
    pod_name: Annotated[str, Field(min_length=1, max_length=200)] = Field(
        default_factory=socket.gethostname,
        description="This worker's name in claims, consumer tags, logs and `/state` "
                    "(the chart sets the pod name).",
        json_schema_extra={"doc_default": "the host name"})
    control_token: SecretStr = Field(
        SecretStr(""), description="Bearer token the controller must send to POST/DELETE "
                                   "`/cordon`; empty: those endpoints answer 403.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING, ERROR or CRITICAL.")

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

    @field_validator("rabbitmq_api")
    @classmethod
    def _api_scheme(cls, value: str) -> str:
        return check_url(value, ("http", "https"), "http:// or https://") if value else value

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
