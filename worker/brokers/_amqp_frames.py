"""AMQP 0-9-1 frames the consumer reads and writes itself: the session's fast path.

py-amqp's reader copies the rest of its buffer for every field it reads and builds
a Message per delivery: most of a consumer's CPU. Whole basic.deliver messages are
parsed straight from the read-ahead buffer here, and acks are packed by hand;
anything else (other frames, partial data, multi-frame bodies) is left to py-amqp.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

# (consumer tag, delivery tag, redelivered, priority, delivery count, body) -> taken?
# (False: py-amqp handles that message, e.g. for a consumer tag the caller does not know)
OnDelivery = Callable[[str, int, bool, int, int, bytes], bool]
FRAME = struct.Struct(">BHI")         # type, channel, payload size
DELIVER = b"\x00\x3c\x00\x3c"         # basic.deliver: class 60, method 60
# basic.ack (class 60, method 80): type 1, channel, size 13, ids, delivery tag, multiple
ACK = struct.Struct(">BHIHHQBB")
FRAME_END = 0xCE
DELIVERY_COUNT = b"x-delivery-count"
# Field-value sizes of an AMQP table (RabbitMQ's types): fixed, or a 4-byte length first.
_FIXED = {ord(c): n for c, n in (("t", 1), ("b", 1), ("B", 1), ("s", 2), ("u", 2),
                                  ("I", 4), ("i", 4), ("l", 8), ("f", 4), ("d", 8),
                                  ("D", 5), ("T", 8), ("V", 0))}
_SIZED = {ord(c) for c in "SAFx"}
_INTS = {ord("b"): 1, ord("B"): 1, ord("s"): 2, ord("u"): 2, ord("I"): 4, ord("i"): 4,
         ord("l"): 8}


def _frame(buf: bytes, pos: int, kind: int, channel: int) -> tuple[int, int] | None:
    """(payload start, payload end) of a whole frame of `kind` on `channel` at `pos`."""
    if len(buf) - pos < 8:
        return None
    frame_type, frame_channel, size = FRAME.unpack_from(buf, pos)
    start, stop = pos + 7, pos + 7 + size
    if frame_type != kind or frame_channel != channel or stop >= len(buf) \
            or buf[stop] != FRAME_END:
        return None
    return start, stop


def parse_deliver(payload: bytes | memoryview) -> tuple[str, int, bool] | None:
    """(consumer tag, delivery tag, redelivered) of a basic.deliver method payload."""
    if bytes(payload[:4]) != DELIVER or len(payload) < 5:
        return None
    tag_len = payload[4]
    p = 5 + tag_len
    if len(payload) < p + 9:
        return None
    return (bytes(payload[5:p]).decode("utf-8", "replace"),
            int.from_bytes(payload[p:p + 8], "big"), bool(payload[p + 8] & 1))


def parse_content_header(payload: bytes | memoryview) -> tuple[int, int, int] | None:
    """(body size, priority, x-delivery-count) of a content-header payload, reading only
    those: every other property (a content-type that is no UTF-8, a header table nested
    thousands deep) is skipped by its length, never decoded. None if malformed."""
    if len(payload) < 14:
        return None
    try:
        body_size = int.from_bytes(payload[4:12], "big")
        flags = int.from_bytes(payload[12:14], "big")
        if flags & 1:  # a second property-flags word: no property we read lives there
            flags &= 0xFFFE
        p, count, priority = 14, 0, 0
        if flags & 0x8000:  # content-type
            p += 1 + payload[p]
        if flags & 0x4000:  # content-encoding
            p += 1 + payload[p]
        if flags & 0x2000:  # headers: a table with a 4-byte length
            size = int.from_bytes(payload[p:p + 4], "big")
            if p + 4 + size > len(payload):
                return None
            count = _table_int(payload[p + 4:p + 4 + size], DELIVERY_COUNT)
            p += 4 + size
        if flags & 0x1000:  # delivery-mode
            p += 1
        if flags & 0x0800:
            priority = payload[p]
    except IndexError:
        return None
    return body_size, priority, count


def _table_int(table: bytes | memoryview, key: bytes) -> int:
    """An integer at `key` at the top level of an AMQP table (0 if absent or not an
    integer); nested values are skipped by their length, never walked."""
    p, end = 0, len(table)
    while p < end:
        name = bytes(table[p + 1:p + 1 + table[p]])
        p += 1 + table[p]
        kind = table[p]
        p += 1
        if name == key and kind in _INTS:
            return int.from_bytes(table[p:p + _INTS[kind]], "big", signed=kind not in (
                ord("B"), ord("u"), ord("i")))
        if kind in _FIXED:
            p += _FIXED[kind]
        elif kind in _SIZED:
            p += 4 + int.from_bytes(table[p:p + 4], "big")
        else:
            return 0  # a type we do not know: stop, the count stays unknown (0)
    return 0


def parse_delivery(buf: bytes, pos: int, channel: int
                   ) -> tuple[int, str, int, bool, int, int, bytes] | None:
    """A whole basic.deliver message (method, header and body frames) at `pos` of a
    read-ahead buffer: (end, consumer tag, delivery tag, redelivered, priority,
    delivery count, body); None for anything else (other frames, partial data)."""
    method = _frame(buf, pos, 1, channel)
    if method is None:
        return None
    deliver = parse_deliver(buf[method[0]:method[1]])
    header = _frame(buf, method[1] + 1, 2, channel) if deliver else None
    if deliver is None or header is None:
        return None
    content = parse_content_header(buf[header[0]:header[1]])
    if content is None:
        return None
    body_size, priority, count = content
    end, parts, got = header[1] + 1, [], 0
    while got < body_size:
        frame = _frame(buf, end, 3, channel)
        if frame is None:
            return None
        parts.append(buf[frame[0]:frame[1]])
        got += frame[1] - frame[0]
        end = frame[1] + 1
    return end, *deliver, priority, count, b"".join(parts)


class DeliveryFrames:
    """Takes the frames of basic.deliver on one channel before py-amqp's frame handler
    sees them, so py-amqp never decodes a delivered message's properties (a hostile
    content-type or header table raised out of every claim, for ever); every other
    frame, and a delivery `on_delivery` does not take, goes to py-amqp unchanged."""

    def __init__(self, channel: int, on_delivery: OnDelivery,
                 passthrough: Callable[[Any], Any], counter: Callable[[int], None]) -> None:
        self.channel = channel
        self.on_delivery = on_delivery
        self.passthrough = passthrough
        self.counter = counter  # py-amqp's heartbeat check counts received frames
        self._frames: list[Any] = []
        self._deliver: tuple[str, int, bool] | None = None
        self._content: tuple[int, int, int] | None = None
        self._parts: list[bytes] = []
        self._got = 0

    def __call__(self, frame: Any) -> Any:
        frame_type, channel, payload = frame
        if channel != self.channel:
            return self.passthrough(frame)
        if self._deliver is None:
            deliver = parse_deliver(payload) if frame_type == 1 else None
            if deliver is None:
                return self.passthrough(frame)
            self._deliver, self._frames = deliver, [frame]
            return False
        self._frames.append(frame)
        if frame_type == 2 and self._content is None:
            self._content = parse_content_header(payload)
            if self._content is None:
                return self._replay()
        elif frame_type == 3 and self._content is not None:
            self._parts.append(bytes(payload))
            self._got += len(payload)
        else:
            return self._replay()
        if self._got < self._content[0]:
            return False
        tag, delivery_tag, redelivered = self._deliver
        _, priority, count = self._content
        frames, body = self._frames, b"".join(self._parts)
        self._reset()
        if self.on_delivery(tag, delivery_tag, redelivered, priority, count, body):
            self.counter(len(frames))
            return True
        for held in frames:
            self.passthrough(held)
        return True

    def _replay(self) -> Any:
        frames = self._frames
        self._reset()
        result = None
        for held in frames:
            result = self.passthrough(held)
        return result

    def _reset(self) -> None:
        self._frames, self._deliver, self._content, self._parts, self._got = (
            [], None, None, [], 0)
