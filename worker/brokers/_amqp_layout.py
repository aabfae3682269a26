"""RabbitMQ queue layout shared by every qscale client: names, declaration arguments,
delay buckets and dead-letter records (see amqp.py for how they are used).

Queue type (QSCALE_AMQP_QUEUE_TYPE): `classic` (default) flags a message as
redelivered without counting, so one whose run gets the whole pod killed (OOM)
keeps coming back. `quorum` declares work queues as quorum queues (replicated,
fsynced) with x-delivery-limit = QSCALE_MAX_REDELIVERIES (0 = none): RabbitMQ
counts every return of a delivery - the consumer's connection or channel closing
(the worker died) and basic.reject/nack with requeue - and past the limit
dead-letters the message into `<queue>.dead` itself (at-least-once; `dlq list`
reads the reason from x-death). A dying worker costs one delivery to every message
it held, prefetched ones included. Our own give-backs (requeue() on drain or
shutdown, pause_consuming() on cordon, unclaimed deliveries at close()) cancel the
consumers, then republish, confirm and ack instead of rejecting, so they cost
nothing (the copy goes to the back of the queue) - except a delivery RabbitMQ was
sending at the instant of the cancel, which it returns with one count spent.
Quorum queues have no priorities (refused with QSCALE_MAX_PRIORITY > 0); delay
buckets and `.dead` stay classic queues.
"""

from __future__ import annotations

import datetime as dt
import math
import os
from typing import Any

from worker.brokers.base import DeadLetter
from worker.envelope import check_priority as envelope_priority
from worker.errors import BadMessage, ConfigError, MessageRefused

MAX_PRIORITY_ENV = "QSCALE_MAX_PRIORITY"
QUEUE_TYPE_ENV = "QSCALE_AMQP_QUEUE_TYPE"
MAX_REDELIVERIES_ENV = "QSCALE_MAX_REDELIVERIES"
QUEUE_TYPES = ("classic", "quorum")
MAX_TTL_MS = 2**32 - 1
# The longest bucket whose queue still outlives its messages: x-expires is 2 x TTL +
# 60 s, which must stay within MAX_TTL_MS (about 24.8 days).
MAX_BUCKET_MS = (MAX_TTL_MS - 60_000) // 2
HEADER_PREFIX = "x-qscale-"
# Which setting decides each declaration argument (named when RabbitMQ refuses one).
_ARGUMENT_ENV = {"x-max-priority": MAX_PRIORITY_ENV, "x-queue-type": QUEUE_TYPE_ENV,
                 "x-delivery-limit": MAX_REDELIVERIES_ENV,
                 "x-dead-letter-exchange": QUEUE_TYPE_ENV,
                 "x-dead-letter-routing-key": QUEUE_TYPE_ENV,
                 "x-dead-letter-strategy": QUEUE_TYPE_ENV, "x-overflow": QUEUE_TYPE_ENV}


def queue_arguments(queue: str, max_priority: int, queue_type: str = "classic",
                    max_redeliveries: int = 0) -> dict[str, Any] | None:
    """The declaration arguments of a work queue (every client must use the same).

    Quorum queues count deliveries themselves (x-delivery-count). The worker settles a
    message returned more than `max_redeliveries` times dead itself, recording FAILURE
    (worker.brokers.amqp); RabbitMQ's own limit is one more, a backstop for a worker
    that dies holding even that delivery: then RabbitMQ dead-letters it into
    `<queue>.dead`, at least once (needs overflow reject-publish), with no FAILURE.
    0 = no limit.
    """
    check_layout(queue_type, max_priority)
    if queue_type == "quorum":
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum", "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": dead_queue(queue),
            "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
        if max_redeliveries:
            arguments["x-delivery-limit"] = max_redeliveries + 1
        return arguments
    return {"x-max-priority": max_priority} if max_priority else None


def check_layout(queue_type: str, max_priority: int) -> None:
    """Refuse what RabbitMQ cannot do: a bad queue type, priorities on quorum queues."""
    if queue_type not in QUEUE_TYPES:
        raise ConfigError(f"{QUEUE_TYPE_ENV}: must be classic or quorum, got {queue_type!r}")
    if queue_type == "quorum" and max_priority:
        raise ConfigError(f"{QUEUE_TYPE_ENV}: quorum queues have no message priorities "
                          f"(RabbitMQ 3.x); set {MAX_PRIORITY_ENV}=0 or use classic queues")


def mismatch_variable(error: str) -> str:
    """The setting behind the argument RabbitMQ names in a PRECONDITION_FAILED text."""
    for argument, env in _ARGUMENT_ENV.items():
        if f"'{argument}'" in error:
            return env
    return f"{QUEUE_TYPE_ENV}/{MAX_PRIORITY_ENV}/{MAX_REDELIVERIES_ENV}"


def max_priority_from_env() -> int:
    """QSCALE_MAX_PRIORITY for clients that are not given settings (CLI, controller)."""
    return _int_from_env(MAX_PRIORITY_ENV, 0, 9)


def max_redeliveries_from_env() -> int:
    """QSCALE_MAX_REDELIVERIES (default 5) for clients that are not given settings."""
    return _int_from_env(MAX_REDELIVERIES_ENV, 5, None)


def queue_type_from_env() -> str:
    """QSCALE_AMQP_QUEUE_TYPE (default classic) for clients that are not given settings."""
    value = os.environ.get(QUEUE_TYPE_ENV, "").strip().lower() or "classic"
    check_layout(value, 0)
    return value


def _int_from_env(name: str, default: int, highest: int | None) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0 or (highest is not None and value > highest):
        limits = f"0-{highest}" if highest is not None else ">= 0"
        raise ConfigError(f"{name}: must be an integer {limits}, got {raw!r}")
    return value


def dead_queue(queue: str) -> str:
    return f"{queue}.dead"


def delay_bucket_ms(delay: float) -> int:
    """The smallest bucket of 1, 2, 3, 4, 6, 8, 12, 16 ... ms that is >= `delay`; a delay
    longer than MAX_BUCKET_MS is refused (the client cuts long ones into hops)."""
    want = max(1, math.ceil(delay * 1000))
    if want > MAX_BUCKET_MS:
        raise MessageRefused(f"a delay of {delay:.0f}s is longer than RabbitMQ holds a "
                             f"message in one go ({MAX_BUCKET_MS // 1000}s); send countdowns "
                             "through worker.Client, which cuts them into hops")
    bucket = 1
    while bucket < want:
        if bucket >= 2 and bucket * 3 // 2 >= want:
            return min(bucket * 3 // 2, MAX_BUCKET_MS)
        bucket *= 2
    return min(bucket, MAX_BUCKET_MS)


def delay_queue(queue: str, bucket_ms: int) -> str:
    return f"qscale.delay.{queue}.{bucket_ms}"


def check_priority(priority: int | None) -> None:
    """Refuse what no queue takes (a bool, outside 0-9): permanent for that message."""
    try:
        envelope_priority(priority)
    except BadMessage as exc:
        raise MessageRefused(exc.reason) from None


def as_bytes(body: Any) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def dead_letter_of(queue: str, message: Any, delivery_limit: int = 0) -> DeadLetter:
    """The record of a message in `<queue>.dead`: qscale's own headers, or for one that
    RabbitMQ dead-lettered itself (a quorum queue's delivery limit) its x-death entry."""
    headers = message.properties.get("application_headers") or {}

    def text(key: str) -> str:
        value = headers.get(HEADER_PREFIX + key, "")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    try:
        failed_at = float(headers.get(f"{HEADER_PREFIX}failed-at", 0.0))
    except (TypeError, ValueError):
        failed_at = 0.0
    reason, detail = text("reason"), text("detail")
    if not reason:
        reason, detail, failed_at = _broker_death(headers, delivery_limit, failed_at)
    return DeadLetter(queue=queue, body=as_bytes(message.body), reason=reason,
                      detail=detail, failed_at=failed_at)


def _broker_death(headers: dict[str, Any], delivery_limit: int,
                  failed_at: float) -> tuple[str, str, float]:
    """(reason, detail, failed_at) from RabbitMQ's x-death header (newest entry first)."""
    deaths = headers.get("x-death")
    death = deaths[0] if isinstance(deaths, list) and deaths else None
    if not isinstance(death, dict):
        return "", "", failed_at
    kind = _text(death.get("reason"))
    stamp = death.get("time")
    if isinstance(stamp, dt.datetime):
        failed_at = (stamp if stamp.tzinfo else stamp.replace(tzinfo=dt.UTC)).timestamp()
    times = death.get("count")
    detail = (f"dead-lettered by RabbitMQ from {_text(death.get('queue'))!r} "
              f"(x-death reason {kind!r}, count {times})")
    if kind == "delivery_limit":
        count = headers.get("x-delivery-count")
        delivered = (int(count) + 1 if isinstance(count, int)
                     else delivery_limit + 1 if delivery_limit else None)
        how_often = f"delivered {delivered} times" if delivered else "delivered too often"
        return (f"delivery limit: {how_often} (worker died or disconnected each time)",
                f"{detail}; x-delivery-limit={delivery_limit or '?'}", failed_at)
    return f"rabbitmq: {kind or 'dead-lettered'}", detail, failed_at


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value or "")
