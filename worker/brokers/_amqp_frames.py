"""AMQP 0-9-1 frames the consumer reads and writes itself: the session's fast path.

py-amqp's reader copies the rest of its buffer for every field it reads and builds
a Message per delivery: most of a consumer's CPU. Whole basic.deliver messages are
parsed straight from the read-ahead buffer here, and acks are packed by hand;
anything else (other frames, partial data, multi-frame bodies) is left to py-amqp.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

# (consumer tag, delivery tag, redelivered, priority, body) -> taken? (False: py-amqp
# handles that message, e.g. for a consumer tag the caller does not know)
OnDelivery = Callable[[str, int, bool, int, bytes], bool]
FRAME = struct.Struct(">BHI")         # type, channel, payload size
DELIVER = b"\x00\x3c\x00\x3c"         # basic.deliver: class 60, method 60
# basic.ack (class 60, method 80): type 1, channel, size 13, ids, delivery tag, multiple
ACK = struct.Struct(">BHIHHQBB")
FRAME_END = 0xCE


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


def parse_delivery(buf: bytes, pos: int, channel: int
                   ) -> tuple[int, str, int, bool, int, bytes] | None:
    """A whole basic.deliver message (method, header and one body frame) at `pos`:
    (end, consumer tag, delivery tag, redelivered, priority, body); None for anything
    else (other frames, partial data, multi-frame bodies), which py-amqp handles."""
    method = _frame(buf, pos, 1, channel)
    if method is None or buf[method[0]:method[0] + 4] != DELIVER:
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
