"""One RabbitMQ connection, reopened with backoff after loss, and its three channels.

The broker above it owns queues and deliveries; this owns the socket: connecting
(exponential backoff with jitter), publisher-confirm bookkeeping, batched writes,
and reading incoming frames. Each reopened connection gets a new `generation`, so
the broker can tell stale delivery tags from live ones.

Channels: `channel` consumes and acks; `pub` publishes in confirm mode (mandatory,
so an unroutable message comes back instead of vanishing); `side` runs passive
declares and the declarations of publish targets. RabbitMQ closes a channel on an
error about one message or queue (PRECONDITION_FAILED, ACCESS_REFUSED, NOT_FOUND);
py-amqp reopens it. On `pub` or `side` that is a refusal of that one operation
(MessageRefused), and the consumers, with every delivery they hold, are untouched.
"""

from __future__ import annotations

import errno
import logging
import random
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import amqp
import kombu as _kombu_module
from amqp.exceptions import AccessRefused, NotFound, PreconditionFailed, ResourceLocked

from worker.brokers._amqp_frames import (
    ACK,
    FRAME_END,
    DeliveryFrames,
    OnDelivery,
    parse_delivery,
)
from worker.errors import BrokerUnavailable, ConfigError, MessageRefused

log = logging.getLogger(__name__)
kombu: Any = _kombu_module  # kombu ships no type hints for these calls

HEARTBEAT = 30              # seconds; ticked from claim() and heartbeat()
CONNECT_TIMEOUT = 5.0
CONFIRM_TIMEOUT = 30.0      # a publish not confirmed by then counts as a lost connection
DRAIN_SLICE = 1.0           # longest single wait, so heartbeats keep flowing
CONFIRM_WINDOW = 2000       # bulk publishes wait for confirms every this many messages
BACKOFF_BASE, BACKOFF_MAX = 0.2, 15.0
READ_CHUNK = 16 * 1024
# py-amqp's default TCP_USER_TIMEOUT of 1 s kills the connection whenever RabbitMQ's
# flow control stops reading our socket that long (bulk publishes on a busy host).
SOCKET_SETTINGS = {getattr(socket, "TCP_USER_TIMEOUT", 18): int(CONFIRM_TIMEOUT * 1000)}

def _read_ahead(transport: Any) -> None:
    """Let py-amqp read the socket in 16 KiB chunks instead of exactly one field at a time.

    Its reader keeps surplus bytes in its own buffer, so asking recv for more is
    safe; it turns ~9 system calls per delivered message into a fraction of one.
    """
    if isinstance(transport, amqp.transport.TCPTransport):
        recv = transport.sock.recv
        transport._quick_recv = lambda size: recv(max(size, READ_CHUNK))


class AmqpSession:
    """The live connection and channel, or none while RabbitMQ is unreachable."""

    def __init__(self, url: str, connection_name: str) -> None:
        self.url = url
        self.connection_name = connection_name
        probe = kombu.Connection(url)
        self.errors: tuple[type[BaseException], ...] = (
            *probe.connection_errors, *probe.channel_errors)
        self.channel: Any = None
        self.pub: Any = None
        self.consumer_closed = False  # the consumer channel was closed (and reopened)
        self.generation = 0
        self._conn: Any = None
        self._amqp: Any = None       # the py-amqp connection (kombu's property of that
        self._transport: Any = None  # name would silently reconnect once it is gone)
        self._poller: Any = None     # select.poll on the socket: "is anything waiting?"
        self.on_delivery: OnDelivery | None = None  # fast path for whole deliveries
        self._side: Any = None       # a channel for passive declares (see message_count)
        self._side_generation = -1
        self._failures = 0
        self._next_attempt = 0.0
        self._reset_confirms()

    def _reset_confirms(self) -> None:
        self._published = 0
        self._confirmed = 0
        self._early_confirms: set[int] = set()
        self._nacked = 0
        self._returned: list[str] = []

    # -- lifecycle --

    def _open(self) -> None:
        conn = kombu.Connection(self.url, heartbeat=HEARTBEAT, connect_timeout=CONNECT_TIMEOUT,
                                transport_options={
                                    "client_properties": {"connection_name": self.connection_name},
                                    "socket_settings": SOCKET_SETTINGS})
        try:
            conn.ensure_connection(max_retries=0, reraise_as_library_errors=False)
            channel = conn.channel()
            channel.auto_decode = False  # bodies stay the exact bytes published
            pub = conn.channel()
            pub.auto_decode = False
            pub.confirm_select()
        except BaseException:
            conn.collect()
            raise
        self._amqp = conn.connection
        self._transport = self._amqp.transport
        _read_ahead(self._transport)
        # TLS may hold decrypted bytes the socket no longer shows: no poll shortcut there.
        self._poller = None
        if isinstance(self._transport, amqp.transport.TCPTransport):
            self._poller = select.poll()
            self._poller.register(self._transport.sock.fileno(), select.POLLIN)
        # py-amqp polls the socket before every publish when the server may send
        # connection.blocked; our own drains still handle that notification.
        self._amqp.client_properties.get("capabilities", {})["connection.blocked"] = False
        if self.on_delivery is not None:  # py-amqp never decodes a delivery's properties
            handler = self._amqp.on_inbound_frame

            def count(frames: int) -> None:
                self._amqp.bytes_recv += frames

            self._amqp.on_inbound_frame = DeliveryFrames(
                channel.channel_id, self.on_delivery, handler, count)
        self.consumer_closed = False
        on_close = channel._callbacks[amqp.spec.Channel.Close]

        def consumer_closed(*args: Any) -> Any:  # RabbitMQ closed the consumer channel
            self.consumer_closed = True
            return on_close(*args)

        channel._callbacks[amqp.spec.Channel.Close] = consumer_closed
        pub.events["basic_ack"].add(self._on_confirm)
        pub.events["basic_nack"].add(self._on_nack)
        pub.events["basic_return"].add(self._on_return)
        self._reset_confirms()
        self._conn, self.channel, self.pub = conn, channel, pub
        self.generation += 1

    def ensure(self, budget: float) -> bool:
        """Open a channel if needed (True when a new one was opened).

        Waits out the reconnect backoff only within `budget` seconds; otherwise
        raises BrokerUnavailable.
        """
        if self.channel is not None:
            return False
        wait = self._next_attempt - time.monotonic()
        if wait > budget:
            time.sleep(max(0.0, budget))
            raise BrokerUnavailable(f"rabbitmq unreachable; reconnecting in {wait:.1f}s")
        if wait > 0:
            time.sleep(wait)
        try:
            self._open()
        except AccessRefused as exc:
            raise ConfigError(f"rabbitmq refused the credentials in the broker URL: {exc}") \
                from exc
        except self.errors as exc:
            self._failures += 1
            backoff = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** self._failures)
            self._next_attempt = time.monotonic() + random.uniform(backoff / 2, backoff)
            raise BrokerUnavailable(f"rabbitmq connect failed: {exc}") from exc
        if self._failures:
            log.info("reconnected to RabbitMQ after %d failed attempts", self._failures)
        self._failures = 0
        return True

    def drop(self) -> None:
        """Forget a broken connection; RabbitMQ requeues everything its channel held."""
        conn, self._conn, self.channel, self.pub = self._conn, None, None, None
        # The first reconnect is immediate; failed ones back off (with jitter).
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # closing a broken connection may fail again; nothing to do
                log.debug("ignoring error while discarding a connection", exc_info=True)

    def close(self) -> None:
        """Close politely (bounded in time); RabbitMQ requeues unacked messages."""
        conn, self._conn, self.channel, self.pub = self._conn, None, None, None
        if conn is not None:
            try:
                self._transport.sock.settimeout(CONNECT_TIMEOUT)
                conn.release()
            except Exception:  # the connection may already be broken
                log.debug("ignoring error while closing", exc_info=True)

    # -- reading --

    def message_count(self, queue: str) -> int | None:
        """Ready messages in an existing queue, or None when there is none.

        A passive declare works whatever the queue's type and arguments (one controller
        reads quorum, classic and priority pools alike) and never creates a queue. It
        runs on a side channel, because RabbitMQ answers a missing queue by closing the
        channel; the main channel and its consumers stay untouched. Needs `ensure()`.
        """
        try:
            ok = self.side().queue_declare(queue, passive=True)
        except NotFound:
            return None
        return int(ok.message_count)

    def side(self) -> Any:
        """The side channel (opened on first use per connection; py-amqp reopens a channel
        RabbitMQ closed on an error, so it stays usable)."""
        if self._side is None or self._side_generation != self.generation:
            self._side, self._side_generation = self._conn.channel(), self.generation
        return self._side

    def declare_target(self, queue: str, arguments: dict[str, Any] | None) -> None:
        """Make sure `queue` exists before publishing into it (the default exchange drops
        messages for missing queues): an existing queue is used whatever its
        arguments (another team's priority or quorum queue); a missing one is
        declared with `arguments`. A refusal is MessageRefused for this publish."""
        if self.message_count(queue) is not None:
            return
        try:
            self.side().queue_declare(queue, durable=True, auto_delete=False,
                                      arguments=arguments)
        except PreconditionFailed:
            return  # declared meanwhile with other arguments: it exists, publish into it
        except (AccessRefused, NotFound, ResourceLocked) as exc:
            raise MessageRefused(f"rabbitmq refused to create queue {queue!r}: {exc}") from None

    def drain(self, timeout: float) -> bool:
        """Handle incoming frames for up to `timeout` s; False when nothing came."""
        try:
            self._amqp.drain_events(timeout=timeout)
        except TimeoutError as exc:
            if exc.errno == errno.ETIMEDOUT:  # the TCP connection died, not our wait
                raise
            return False
        return True

    def drain_available(self) -> None:
        """Handle everything that has arrived, without waiting."""
        while self.drain_buffered() or (self.readable() and self.drain(0)):
            pass

    def fileno(self) -> int | None:
        """The socket's descriptor while connected over plain TCP (readable: frames wait)."""
        if self.channel is None or self._poller is None:
            return None
        return int(self._transport.sock.fileno())

    def readable(self) -> bool:
        """Bytes (or EOF) may wait on the socket: one poll(2), cheaper than a read that
        times out (py-amqp sets and restores the socket timeout and raises)."""
        if self._poller is None:
            return self.channel is not None  # TLS: only a read can tell
        return self.channel is not None and bool(self._poller.poll(0))

    def frame_buffered(self) -> bool:
        """A whole frame waits in py-amqp's read-ahead buffer (the socket can be quiet)."""
        buffered = getattr(self._transport, "_read_buffer", b"")
        return len(buffered) >= 8 and len(buffered) >= 8 + int.from_bytes(buffered[3:7], "big")

    def drain_buffered(self) -> int:
        """Dispatch frames py-amqp already read ahead: no system calls, no socket timeouts."""
        handled = 0
        while True:
            if self.on_delivery is not None and self._poller is not None:
                handled += self._take_deliveries(self.on_delivery)
            if not self.frame_buffered():
                return handled
            self._amqp.blocking_read(None)  # one whole frame is there: cannot block
            handled += 1

    def _take_deliveries(self, on_delivery: OnDelivery) -> int:
        """Hand whole deliveries at the head of the read-ahead buffer to `on_delivery`
        in one pass. py-amqp's reader copies the rest of the buffer for every field it
        reads, and builds a Message per delivery: most of a consumer's CPU."""
        transport = self._transport
        buf, channel = transport._read_buffer, self.channel.channel_id
        pos = taken = 0
        while (got := parse_delivery(buf, pos, channel)) is not None:
            end, consumer_tag, delivery_tag, redelivered, priority, count, body = got
            if not on_delivery(consumer_tag, delivery_tag, redelivered, priority, count, body):
                break
            pos, taken = end, taken + 1
        if taken:
            transport._read_buffer = buf[pos:]
            self._amqp.bytes_recv += taken  # py-amqp's heartbeat check: "anything came"
        return taken

    def send_acks(self, acks: list[tuple[int, bool]]) -> None:
        """basic.ack frames for (delivery tag, multiple) pairs, in one write.

        Over plain TCP the frames are packed here (py-amqp's generic method writer
        costs several microseconds per frame); over TLS py-amqp writes them.
        """
        if self._poller is None:
            with self.corked():
                for tag, multiple in acks:
                    self.channel.basic_ack(tag, multiple=multiple)
            return
        channel, pack = self.channel.channel_id, ACK.pack
        self._transport._write(b"".join(
            pack(1, channel, 13, 60, 80, tag, multiple, FRAME_END) for tag, multiple in acks))
        self._amqp.bytes_sent += len(acks)  # py-amqp's heartbeat check counts frames

    def heartbeat_tick(self) -> None:
        self._amqp.heartbeat_tick()

    # -- publishing with confirms --

    def _on_confirm(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self._confirmed = max(self._confirmed, delivery_tag)
            self._early_confirms = {t for t in self._early_confirms if t > self._confirmed}
        else:
            self._early_confirms.add(delivery_tag)
        while self._confirmed + 1 in self._early_confirms:
            self._confirmed += 1
            self._early_confirms.discard(self._confirmed)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked += 1
        self._on_confirm(delivery_tag, multiple)

    def _on_return(self, exc: Exception, exchange: str, routing_key: str,
                   message: Any) -> None:
        self._returned.append(f"{routing_key}: {exc}")

    def send(self, routing_key: str, body: bytes, priority: int | None = None,
             headers: dict[str, Any] | None = None) -> None:
        """Publish a persistent message via the default exchange (confirm comes later)."""
        properties: dict[str, Any] = {"delivery_mode": 2}
        if priority:
            properties["priority"] = priority
        if headers:
            properties["application_headers"] = headers
        self.pub.basic_publish(amqp.Message(body, **properties), exchange="",
                               routing_key=routing_key, mandatory=True)
        self._published += 1

    def wait_confirms(self) -> None:
        """Block until RabbitMQ confirmed every message sent so far; MessageRefused when it
        refused (nack) or could not route (return) any of them."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._confirmed < self._published:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise amqp.exceptions.RecoverableConnectionError("publish confirms timed out")
            self.drain(min(remaining, DRAIN_SLICE))
        nacked, returned = self._nacked, self._returned
        self._nacked, self._returned = 0, []
        if returned:
            raise MessageRefused(f"rabbitmq could not route {len(returned)} message(s): "
                                 f"{returned[0]}")
        if nacked:
            raise MessageRefused(f"rabbitmq refused {nacked} published message(s)")

    def reset_publisher(self) -> None:
        """After RabbitMQ closed `pub` over one publish (py-amqp reopened it): confirm mode
        again, and no confirms owed for what the closed channel carried."""
        if self.pub is None:
            return
        if not getattr(self.pub, "is_open", False):
            self.pub.open()
        self.pub.confirm_select()
        self._reset_confirms()

    @contextmanager
    def corked(self) -> Iterator[None]:
        """Collect outgoing frames and send them in one write (bulk publish, batch ack).

        Only for frames that need no reply inside the block: an RPC would wait forever.
        """
        transport = self._transport
        if not isinstance(transport, amqp.transport.TCPTransport):
            yield
            return
        send, parts = transport._write, list[bytes]()
        # py-amqp reuses its frame buffer, so each frame must be copied.
        transport._write = lambda frame: parts.append(bytes(frame))
        try:
            yield
        finally:
            transport._write = send
        if parts:
            send(b"".join(parts))
