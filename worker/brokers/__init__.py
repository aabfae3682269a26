"""Broker implementations, chosen by URL scheme."""

from __future__ import annotations

from urllib.parse import urlsplit

from worker.brokers.base import Broker, DeadLetter, Delivery, QueueStats
from worker.errors import ConfigError

__all__ = ["Broker", "DeadLetter", "Delivery", "QueueStats", "open_broker", "redact_url"]


def open_broker(url: str, *, consumer_id: str | None = None, lease_seconds: float = 10.0,
                prefetch: int = 0, max_priority: int | None = None,
                max_redeliveries: int | None = None, amqp_queue_type: str | None = None,
                max_body_bytes: int = 0) -> Broker:
    """Connect to the broker named by `url` (`redis://`, `rediss://`, `amqp://`, `amqps://`).

    `consumer_id` names this worker's claims (defaults to a random id); `lease_seconds`
    is how long a Redis claim survives without heartbeats; `prefetch` bounds RabbitMQ's
    unacked messages per connection (0 = as many as `claim` asks for); `max_priority`
    is RabbitMQ's x-max-priority for the queues it declares (None: QSCALE_MAX_PRIORITY
    from the environment, default 0 = plain queues); `max_redeliveries` caps how often a
    Redis message is reclaimed from dead workers before it is dead-lettered (0 = never),
    and is a RabbitMQ quorum queue's x-delivery-limit; `amqp_queue_type` is `classic` or
    `quorum`. RabbitMQ clients given None read QSCALE_MAX_REDELIVERIES (default 5) and
    QSCALE_AMQP_QUEUE_TYPE (default classic), since every declarer must agree.
    `max_body_bytes` (Redis, 0 = any): a claimed body longer than this is handed over
    cut to its head (Delivery.size), so a consumer never holds it whole.
    """
    scheme = urlsplit(url).scheme
    if scheme in ("redis", "rediss", "unix"):
        from worker.brokers.redis import RedisBroker

        return RedisBroker(url, consumer_id=consumer_id, lease_seconds=lease_seconds,
                           max_redeliveries=5 if max_redeliveries is None else max_redeliveries,
                           max_body_bytes=max_body_bytes)
    if scheme in ("amqp", "amqps", "pyamqp"):
        from worker.brokers.amqp import AmqpBroker

        return AmqpBroker(url, consumer_id=consumer_id, prefetch=prefetch,
                          max_priority=max_priority, queue_type=amqp_queue_type,
                          max_redeliveries=max_redeliveries)
    raise ConfigError(f"unsupported broker URL scheme {scheme!r} (use redis:// or amqp://)")


def redact_url(url: str) -> str:
    """The broker URL without its password, for logs and status output."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, creds = head.partition("://")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if user else f"{scheme}://***@{tail}"
