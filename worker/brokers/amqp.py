"""RabbitMQ broker (kombu + py-amqp): durable queues, confirms, manual acks after the task.

One connection and one channel in confirm mode. Queues are durable and plain by
default: RabbitMQ's priority queues cost throughput, so `x-max-priority` is opt-in
(QSCALE_MAX_PRIORITY 1-9; with 0 a message's priority is ignored here). Publishers
and workers must use the same value: RabbitMQ refuses a redeclaration with
different arguments (a ConfigError naming the variable); stats() only reads.
Messages are persistent. Every publish waits for the broker's confirm, so
returning means the message is on the broker.

Claims come from a consumer per queue (manual acks) into a local buffer;
basic.qos bounds the unacked window to `prefetch`, or when 0 to what the caller
holds plus asks for plus the read-ahead it allows: at once when that grows, after
a while when it shrinks (_amqp_window.py); consumers restart to pick up a new window.
Prefetched-but-unclaimed messages count as in flight, as RabbitMQ sees them.

Delays use TTL queues `qscale.delay.<queue>.<ms>` that dead-letter into the
queue when the TTL ends; delays round up to buckets 1, 2, 3, 4, 6, 8, 12 ... ms
(at most 50% late), and idle bucket queues expire. Dead letters go to the
durable `<queue>.dead` with the reason in headers. retry_later and dead_letter
publish first, then ack: a crash in between runs the message again
(at-least-once), never loses it.

Connection loss (see _amqp_session.py): the operation raises BrokerUnavailable
and `connected()` turns False; the next call reconnects at once, and failed
attempts back off exponentially with jitter (a claim waits out the backoff
within its timeout, other calls fail fast). RabbitMQ redelivers
whatever the lost channel held, so deliveries from it are stale: acking,
retrying or dead-lettering them is skipped with a log line, because the message
will come again (flagged redelivered).

Queue type (QSCALE_AMQP_QUEUE_TYPE, `classic` or `quorum` with a delivery limit):
see _amqp_layout.py. With quorum queues our own give-backs (requeue() on drain or
shutdown, pause_consuming() on cordon, unclaimed deliveries at close()) cancel
the consumers, then republish, confirm and ack, so they spend no delivery.

Deliveries are parsed straight from the read-ahead buffer (AmqpSession's fast
path) and acks are packed by hand over plain TCP; py-amqp handles everything else.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any

from amqp.exceptions import AccessRefused, NotFound, PreconditionFailed, ResourceLocked

from worker.brokers._amqp_inspect import AmqpInspection
from worker.brokers._amqp_layout import (
    HEADER_PREFIX,
    check_layout,
    dead_queue,
    delay_bucket_ms,
    delay_queue,
    max_priority_from_env,
    max_redeliveries_from_env,
    mismatch_variable,
    queue_arguments,
    queue_type_from_env,
)
from worker.brokers._amqp_publish import AmqpPublishing
from worker.brokers._amqp_session import DRAIN_SLICE, AmqpSession
from worker.brokers._amqp_window import PrefetchWindow
from worker.brokers._rabbitmq_api import ManagementApi, api_url_from_amqp, vhost_from_amqp
from worker.brokers.base import DETAIL_BYTES, REASON_BYTES, Broker, Delivery, clip
from worker.errors import BrokerUnavailable, ConfigError, MessageRefused

log = logging.getLogger(__name__)

# RabbitMQ closes a channel over these; on the publishing channels that is a refusal
# of one message (MessageRefused), on the consumer channel a lost channel.
_CHANNEL_REFUSALS = (AccessRefused, NotFound, PreconditionFailed, ResourceLocked)
__all__ = ["AmqpBroker", "dead_queue", "delay_bucket_ms", "delay_queue"]


class AmqpBroker(AmqpInspection, AmqpPublishing, Broker):
    """A RabbitMQ connection for one worker (or producer, or the controller)."""

    def __init__(self, url: str, *, consumer_id: str | None = None, prefetch: int = 0,
                 management_url: str | None = None, max_priority: int | None = None,
                 queue_type: str | None = None, max_redeliveries: int | None = None) -> None:
        self.url = url
        self.consumer_id = consumer_id or uuid.uuid4().hex[:12]
        self._window = PrefetchWindow(prefetch)
        self._read_ahead = 0
        # Clients given no values (CLI, controller) read the same QSCALE_* variables.
        self.max_priority = max_priority_from_env() if max_priority is None else max_priority
        self.queue_type = queue_type_from_env() if queue_type is None else queue_type
        self.max_redeliveries = max(0, max_redeliveries_from_env() if max_redeliveries is None
                                    else max_redeliveries)
        check_layout(self.queue_type, self.max_priority)
        self.quorum = self.queue_type == "quorum"
        api = management_url or os.environ.get("QSCALE_RABBITMQ_API") or api_url_from_amqp(url)
        self._api = ManagementApi(api, vhost_from_amqp(url))
        self._session = AmqpSession(url, f"qscale {self.consumer_id}")
        self._session.on_delivery = self._on_delivery
        self._reset_channel_state()
        try:  # connect eagerly so connected() is meaningful from the start
            self._session.ensure(0.0)
        except BrokerUnavailable as exc:
            log.warning("%s", exc)

    def _reset_channel_state(self) -> None:
        """Forget everything tied to the old channel (its tags are meaningless now)."""
        self._consumers: dict[str, str] = {}  # queue -> consumer tag
        self._queue_of: dict[str, str] = {}   # consumer tag -> queue
        self._buffers: dict[str, deque[Delivery]] = {}
        self._outstanding: dict[int, Delivery] = {}  # unacked on the consumer channel
        self._declared: dict[str, float] = {}        # consumed queues, declared strictly
        self._targets: dict[str, float] = {}         # publish targets known to exist
        self._qos = 0

    @contextmanager
    def _op(self, what: str, budget: float = 0.0, publishing: bool = False) -> Iterator[Any]:
        """Run one operation on a live channel; connection trouble -> BrokerUnavailable,
        a refusal of what a publishing operation sent -> MessageRefused."""
        if self._session.ensure(budget):
            self._reset_channel_state()
        try:
            yield self._session.channel
        except MessageRefused:
            raise
        except _CHANNEL_REFUSALS as exc:
            if not publishing or self._session.consumer_closed:
                self._channel_lost(what, exc)
            self._session.reset_publisher()
            self._targets.clear()
            raise MessageRefused(f"rabbitmq refused {what}: {exc}") from None
        except self._session.errors as exc:
            self._lost()
            raise BrokerUnavailable(f"rabbitmq {what} failed: {exc!r}") from exc

    def _channel_lost(self, what: str, exc: Exception) -> None:
        """The consumer channel was closed over `exc`: its deliveries are back in their
        queues, so the connection starts over (a mismatch names the variable)."""
        self._lost()
        text = str(exc)
        if "acknowledgement" in text and "timed out" in text:
            log.error("RabbitMQ's consumer_timeout closed the channel: a task ran longer "
                      "than it, and it runs again elsewhere (at-least-once). Raise "
                      "consumer_timeout above the longest task (chart: "
                      "rabbitmq.consumerTimeoutMs): %s", text)
            raise BrokerUnavailable(f"rabbitmq consumer_timeout: {text}") from exc
        if isinstance(exc, PreconditionFailed):
            variable = mismatch_variable(str(exc))
            raise ConfigError(
                f"{variable}: rabbitmq {what}: a queue exists with other arguments "
                f"(declared with another {variable}, or not by qscale; this client uses "
                f"{self._layout()}): {exc}") from exc
        raise BrokerUnavailable(f"rabbitmq {what} failed: {exc!r}") from exc

    def _layout(self) -> str:
        if self.quorum:
            return f"queue type quorum, delivery limit {self.max_redeliveries or 'none'}"
        return f"queue type classic, max priority {self.max_priority}"

    def _lost(self) -> None:
        self._session.drop()
        self._reset_channel_state()

    # -- declarations --

    def _declare(self, name: str, arguments: dict[str, Any] | None = None) -> None:
        """Declare a durable queue on the consumer channel, once per connection: strict, so
        a queue we consume with other arguments is a ConfigError naming the variable."""
        if name in self._declared:
            return
        self._session.channel.queue_declare(name, durable=True, auto_delete=False,
                                            arguments=arguments)
        self._declared[name] = time.monotonic()

    def _declare_queue(self, queue: str) -> None:
        """A queue this worker consumes (work queues never expire)."""
        if queue not in self._declared:
            if self.quorum:  # RabbitMQ's own dead-lettering needs its target to exist
                self._declare_dead(queue)
            self._declare(queue, queue_arguments(
                queue, self.max_priority, self.queue_type, self.max_redeliveries))

    def _declare_dead(self, queue: str) -> None:
        name = dead_queue(queue)
        if name not in self._declared:
            self._declare(name)

    # -- consuming --

    def _on_message(self, queue: str, message: Any) -> None:
        body = message.body
        if isinstance(body, str):
            body = body.encode("utf-8")
        count = (message.properties.get("application_headers") or {}).get("x-delivery-count")
        self._buffer(queue, int(message.delivery_tag),
                     bool(message.delivery_info.get("redelivered", False)),
                     int(message.properties.get("priority") or 0), bytes(body),
                     count if isinstance(count, int) else 0)

    def _on_delivery(self, consumer_tag: str, tag: int, redelivered: bool, priority: int,
                     delivery_count: int, body: bytes) -> bool:
        """Every delivery to our consumers (the session parses them itself: whole ones
        from its read-ahead buffer, the rest frame by frame before py-amqp sees them)."""
        queue = self._queue_of.get(consumer_tag)
        if queue is None or self._consumers.get(queue) != consumer_tag:
            return False  # a cancelled consumer's: py-amqp's own handling applies
        self._buffer(queue, tag, redelivered, priority, body, delivery_count)
        return True

    def _buffer(self, queue: str, tag: int, redelivered: bool, priority: int,
                body: bytes, delivery_count: int) -> None:
        # A quorum queue counts returns (the consumer died holding it); past our cap the
        # worker settles it dead, recording FAILURE, instead of running it again.
        over = self.quorum and self.max_redeliveries and delivery_count > self.max_redeliveries
        delivery = Delivery(
            queue=queue, body=body, tag=f"{self._session.generation}.{tag}.{priority}",
            redelivered=redelivered,
            dead_reason=f"redelivered {delivery_count} times: the worker died or "
            "disconnected each time" if over else "")
        self._outstanding[tag] = delivery
        self._buffers.setdefault(queue, deque()).append(delivery)

    def _consume(self, queues: Sequence[str], max_count: int) -> None:
        channel = self._session.channel
        # Auto window: what the caller already holds plus what it asks for now, plus
        # the read-ahead it allows (deliveries stream in while it works on the rest).
        held = len(self._outstanding) - sum(len(b) for b in self._buffers.values())
        wanted = self._window.next_size(self._qos, held + max_count + self._read_ahead)
        if wanted != self._qos:
            channel.basic_qos(0, wanted, False)
            self._qos = wanted
            for queue, tag in list(self._consumers.items()):  # the new window needs a restart
                channel.basic_cancel(tag)
                self._consumers[queue] = self._subscribe(queue)
        for queue in queues:
            if queue not in self._consumers:
                self._declare_queue(queue)
                self._consumers[queue] = self._subscribe(queue)

    def _subscribe(self, queue: str) -> str:
        """Start consuming `queue` with manual acks; returns the consumer tag."""
        tag = str(self._session.channel.basic_consume(
            queue, consumer_tag=f"qscale.{self.consumer_id}.{uuid.uuid4().hex[:8]}",
            no_ack=False, callback=partial(self._on_message, queue)))
        self._queue_of[tag] = queue
        return tag

    def _buffered(self, queues: Sequence[str]) -> int:
        return sum(len(self._buffers.get(q, ())) for q in queues)

    def claim(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        if not queues or max_count <= 0:
            return []
        deadline = time.monotonic() + max(0.0, timeout)
        session = self._session
        with self._op("claim", budget=timeout):
            self._consume(queues, max_count)
            session.heartbeat_tick()
            while not self._buffered(queues):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                session.drain(min(remaining, DRAIN_SLICE))
                session.heartbeat_tick()
            while self._buffered(queues) < max_count and (
                    session.drain_buffered() or (session.readable() and session.drain(0))):
                pass
        out: list[Delivery] = []
        for queue in queues:
            buffer = self._buffers.get(queue)
            while buffer and len(out) < max_count:
                out.append(buffer.popleft())
        return out

    def _live_tag(self, delivery: Delivery) -> tuple[int, int] | None:
        """(delivery tag, priority) if `delivery` came from the current channel."""
        generation, tag, priority = (int(part) for part in delivery.tag.split("."))
        if generation != self._session.generation or tag not in self._outstanding:
            log.info("skipping settlement of %s: its channel is gone, the message "
                     "will be redelivered", delivery.tag)
            return None
        return tag, priority

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        with self._op("ack"):
            tags = sorted(t[0] for d in deliveries if (t := self._live_tag(d)))
            if not tags:
                return
            pending = sorted(self._outstanding)
            prefix = 0  # acked tags that are exactly the oldest outstanding ones
            while prefix < len(tags) and tags[prefix] == pending[prefix]:
                prefix += 1
            if prefix < 2:
                prefix = 0
            acks = [(tags[prefix - 1], True)] if prefix else []
            acks += [(tag, False) for tag in tags[prefix:]]
            self._session.send_acks(acks)
            for tag in tags:
                self._outstanding.pop(tag, None)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        with self._op("requeue") as channel:
            if self.quorum:  # else the copies come straight back to us (see _give_back)
                self._pause(channel)
            self._give_back(channel, deliveries)

    def _give_back(self, channel: Any, deliveries: Sequence[Delivery]) -> None:
        """Return unstarted deliveries (stale ones are skipped: RabbitMQ has them back).

        A quorum queue counts a reject toward the delivery limit, so there each message
        is republished (confirmed) and then acked: a crash in between leaves two copies,
        never none. Consumers must be cancelled first: the acks free prefetch room, and
        RabbitMQ 3.10 counts a delivery it sends into a cancel (it returns it)."""
        live = [(d, t) for d in deliveries if (t := self._live_tag(d))]
        if self.quorum and live:
            for delivery, _ in live:
                self._session.send(delivery.queue, delivery.body)
            self._session.wait_confirms()
            self._session.send_acks([(tag, False) for _, (tag, _) in live])
        else:
            for _, (tag, _) in live:
                channel.basic_reject(tag, requeue=True)
        for _, (tag, _) in live:
            self._outstanding.pop(tag, None)

    def retry_later(self, delivery: Delivery, body: bytes, delay: float) -> None:
        with self._op("retry_later", publishing=True) as channel:
            live = self._live_tag(delivery)
            if not live:
                return
            self._session.send(self._target_for(delivery.queue, delay), body, live[1])
            self._session.wait_confirms()
            channel.basic_ack(live[0])
            self._outstanding.pop(live[0], None)

    def dead_letter(self, delivery: Delivery, reason: str, detail: str = "",
                    body: bytes | None = None) -> None:
        with self._op("dead_letter", publishing=True) as channel:
            live = self._live_tag(delivery)
            if not live:
                return
            self._session.send(self._target(dead_queue(delivery.queue), None),
                               delivery.body if body is None else body, live[1], {
                f"{HEADER_PREFIX}reason": clip(reason, REASON_BYTES),
                f"{HEADER_PREFIX}detail": clip(detail, DETAIL_BYTES),
                f"{HEADER_PREFIX}failed-at": time.time(),
                f"{HEADER_PREFIX}queue": delivery.queue})
            self._session.wait_confirms()
            channel.basic_ack(live[0])
            self._outstanding.pop(live[0], None)

    def held(self, queues: Sequence[str]) -> list[Delivery]:
        """Claimed (handed to the caller) and not settled: unacked minus the buffered."""
        buffered = {d.tag for b in self._buffers.values() for d in b}
        return [d for d in self._outstanding.values()
                if d.queue in queues and d.tag not in buffered]

    def heartbeat(self) -> None:
        with self._op("heartbeat"):
            self._session.heartbeat_tick()
            self._session.drain_available()

    def connected(self) -> bool:
        return self._session.channel is not None

    def wakeup_fd(self) -> int | None:
        return self._session.fileno()

    def read_ahead(self, count: int) -> None:
        self._read_ahead = max(0, count)

    def buffered(self) -> bool:
        return any(self._buffers.values()) or (
            self._session.channel is not None and self._session.frame_buffered())

    def received(self) -> int:
        return sum(len(buffer) for buffer in self._buffers.values())

    def pause_consuming(self) -> None:
        """Cancel the consumers (the next claim subscribes again) and reject what they
        pushed unclaimed, so RabbitMQ hands it to other consumers, not back to us."""
        if self._session.channel is None:
            return  # no channel: RabbitMQ has already taken everything back
        with self._op("pause") as channel:
            self._pause(channel)

    def _pause(self, channel: Any) -> None:
        for tag in list(self._consumers.values()):
            channel.basic_cancel(tag)  # waits for cancel-ok: nothing more arrives
        self._consumers.clear()
        unclaimed = [d for buffer in self._buffers.values() for d in buffer]
        self._buffers.clear()
        self._give_back(channel, unclaimed)

    def close(self) -> None:
        """Close the connection; RabbitMQ returns its unacked messages to their queues."""
        if self.quorum and self._consumers:
            try:  # the close would cost each unclaimed delivery one of its deliveries
                self.pause_consuming()
            except (BrokerUnavailable, ConfigError) as exc:
                log.warning("unclaimed messages go back by the connection close: %s", exc)
        self._session.close()
        self._reset_channel_state()
