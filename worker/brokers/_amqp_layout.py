"""RabbitMQ queue layout shared by every qscale client: names, declaration arguments,
delay buckets and dead-letter records (see amqp.py for how they are used)."""

from __future__ import annotations

import math
import os
from typing import Any

from worker.brokers.base import DeadLetter
from worker.errors import ConfigError

MAX_PRIORITY_ENV = "QSCALE_MAX_PRIORITY"
MAX_TTL_MS = 2**32 - 1
HEADER_PREFIX = "x-qscale-"


def queue_arguments(max_priority: int) -> dict[str, Any] | None:
    """The declaration arguments of a work queue (every client must use the same)."""
    return {"x-max-priority": max_priority} if max_priority else None


def max_priority_from_env() -> int:
    """QSCALE_MAX_PRIORITY for clients that are not given settings (CLI, controller)."""
    raw = os.environ.get(MAX_PRIORITY_ENV, "").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= 9:
        raise ConfigError(f"{MAX_PRIORITY_ENV}: must be an integer 0-9, got {raw!r}")
    return value


def dead_queue(queue: str) -> str:
    return f"{queue}.dead"


def delay_bucket_ms(delay: float) -> int:
    """The smallest bucket of 1, 2, 3, 4, 6, 8, 12, 16 ... ms that is >= `delay`."""
    want = max(1, math.ceil(delay * 1000))
    bucket = 1
    while bucket < want:
        if bucket >= 2 and bucket * 3 // 2 >= want:
            return min(bucket * 3 // 2, MAX_TTL_MS)
        bucket *= 2
    return min(bucket, MAX_TTL_MS)


def delay_queue(queue: str, bucket_ms: int) -> str:
    return f"qscale.delay.{queue}.{bucket_ms}"


def check_priority(priority: int | None) -> None:
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)
                                 or not 0 <= priority <= 9):
        raise ValueError(f"priority must be an integer 0-9, got {priority!r}")


def as_bytes(body: Any) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def dead_letter_of(queue: str, message: Any) -> DeadLetter:
    headers = message.properties.get("application_headers") or {}

    def text(key: str) -> str:
        value = headers.get(HEADER_PREFIX + key, "")
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    try:
        failed_at = float(headers.get(f"{HEADER_PREFIX}failed-at", 0.0))
    except (TypeError, ValueError):
        failed_at = 0.0
    return DeadLetter(queue=queue, body=as_bytes(message.body), reason=text("reason"),
                      detail=text("detail"), failed_at=failed_at)
