"""One RabbitMQ connection + channel in confirm mode, reopened with backoff after loss.

The broker above it owns queues and deliveries; this owns the socket: connecting
(exponential backoff with jitter), publisher-confirm bookkeeping, batched writes,
and reading incoming frames. Each reopened channel gets a new `generation`, so
the broker can tell stale delivery tags from live ones.
"""

from __future__ import annotations

import errno
import logging
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import amqp
import kombu as _kombu_module
from amqp.exceptions import AccessRefused, NotFound

from worker.errors import BrokerUnavailable, ConfigError

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

# (consumer tag, delivery tag, redelivered, priority, body) -> taken? (False: py-amqp
# handles that message, e.g. for a consumer tag the caller does not know)
OnDelivery = Callable[[str, int, bool, int, bytes], bool]
_FRAME = struct.Struct(">BHI")         # type, channel, payload size
_DELIVER = b"\x00\x3c\x00\x3c"         # basic.deliver: class 60, method 60
# basic.ack (class 60, method 80): type 1, channel, size 13, ids, delivery tag, multiple
_ACK = struct.Struct(">BHIHHQBB")
_FRAME_END = 0xCE


def _frame(buf: bytes, pos: int, kind: int, channel: int) -> tuple[int, int] | None:
    """(payload start, payload end) of a whole frame of `kind` on `channel` at `pos`."""
    if len(buf) - pos < 8:
        return None
    frame_type, frame_channel, size = _FRAME.unpack_from(buf, pos)
    start, stop = pos + 7, pos + 7 + size
    if frame_type != kind or frame_channel != channel or stop >= len(buf) \
            or buf[stop] != _FRAME_END:
        return None
    return start, stop


def parse_delivery(buf: bytes, pos: int, channel: int
                   ) -> tuple[int, str, int, bool, int, bytes] | None:
    """A whole basic.deliver message (method, header and one body frame) at `pos`:
    (end, consumer tag, delivery tag, redelivered, priority, body); None for anything
    else (other frames, partial data, multi-frame bodies), which py-amqp handles."""
    method = _frame(buf, pos, 1, channel)
    if method is None or buf[method[0]:method[0] + 4] != _DELIVER:
        return None
    p = method[0] + 4
    tag_len = buf[p]
    consumer_tag = buf[p + 1:p + 1 + tag_len].decode()
    p += 1 + tag_len
    delivery_tag = int.from_bytes(buf[p:p + 8], "big")
    redelivered = bool(buf[p + 8] & 1)
    header = _frame(buf, method[1] + 1, 2, channel)
    if header is None:
        return None
    p = header[0] + 4  # class id, weight
    body_size = int.from_bytes(buf[p:p + 8], "big")
    flags = int.from_bytes(buf[p + 8:p + 10], "big")
    if flags & 1:  # a second property-flags word
        return None
    p += 10
    if flags & 0x8000:  # content-type
        p += 1 + buf[p]
    if flags & 0x4000:  # content-encoding
        p += 1 + buf[p]
    if flags & 0x2000:  # headers: a table with a 4-byte length
        p += 4 + int.from_bytes(buf[p:p + 4], "big")
    if flags & 0x1000:  # delivery-mode
        p += 1
    priority = buf[p] if flags & 0x0800 else 0
    if body_size == 0:
        return header[1] + 1, consumer_tag, delivery_tag, redelivered, priority, b""
    body = _frame(buf, header[1] + 1, 3, channel)
    if body is None or body[1] - body[0] != body_size:
        return None
    return (body[1] + 1, consumer_tag, delivery_tag, redelivered, priority,
            buf[body[0]:body[1]])


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
            channel.confirm_select()
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
        channel.events["basic_ack"].add(self._on_confirm)
        channel.events["basic_nack"].add(self._on_nack)
        self._reset_confirms()
        self._conn, self.channel = conn, channel
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
        conn, self._conn, self.channel = self._conn, None, None
        # The first reconnect is immediate; failed ones back off (with jitter).
        if conn is not None:
            try:
                conn.collect()
            except Exception:  # closing a broken connection may fail again; nothing to do
                log.debug("ignoring error while discarding a connection", exc_info=True)

    def close(self) -> None:
        """Close politely (bounded in time); RabbitMQ requeues unacked messages."""
        conn, self._conn, self.channel = self._conn, None, None
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
        if self._side is None or self._side_generation != self.generation:
            self._side, self._side_generation = self._conn.channel(), self.generation
        try:
            ok = self._side.queue_declare(queue, passive=True)
        except NotFound:
            self._side = None  # closed by RabbitMQ; the next call opens another
            return None
        return int(ok.message_count)

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
        pos = taken = frames = 0
        while (got := parse_delivery(buf, pos, channel)) is not None:
            end, consumer_tag, delivery_tag, redelivered, priority, body = got
            if not on_delivery(consumer_tag, delivery_tag, redelivered, priority, body):
                break
            frames += 3 if body else 2
            pos, taken = end, taken + 1
        if taken:
            transport._read_buffer = buf[pos:]
            self._amqp.bytes_recv += frames  # py-amqp's heartbeat check counts frames
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
        channel, pack = self.channel.channel_id, _ACK.pack
        self._transport._write(b"".join(
            pack(1, channel, 13, 60, 80, tag, multiple, _FRAME_END) for tag, multiple in acks))
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

    def send(self, routing_key: str, body: bytes, priority: int | None = None,
             headers: dict[str, Any] | None = None) -> None:
        """Publish a persistent message via the default exchange (confirm comes later)."""
        properties: dict[str, Any] = {"delivery_mode": 2}
        if priority:
            properties["priority"] = priority
        if headers:
            properties["application_headers"] = headers
        self.channel.basic_publish(amqp.Message(body, **properties), exchange="",
                                   routing_key=routing_key)
        self._published += 1

    def wait_confirms(self) -> None:
        """Block until RabbitMQ confirmed every message sent so far."""
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._confirmed < self._published:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise amqp.exceptions.RecoverableConnectionError("publish confirms timed out")
            self.drain(min(remaining, DRAIN_SLICE))
        if self._nacked:
            nacked, self._nacked = self._nacked, 0
            raise BrokerUnavailable(f"rabbitmq refused {nacked} published message(s)")

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
