"""The AMQP fast path parses whole basic.deliver messages exactly like py-amqp does."""

from __future__ import annotations

import struct

import amqp
from amqp.serialization import dumps

from worker.brokers._amqp_frames import parse_delivery

CHANNEL = 1


def frame(kind: int, payload: bytes, channel: int = CHANNEL) -> bytes:
    return struct.pack(">BHI", kind, channel, len(payload)) + payload + b"\xce"


def deliver(body: bytes, *, tag: int = 7, redelivered: bool = False,
            **properties: object) -> bytes:
    args = dumps("sLbss", ("ctag-1", tag, redelivered, "", "q"))
    method = frame(1, b"\x00\x3c\x00\x3c" + args)
    message = amqp.Message(body, **properties)
    # content header: class 60, weight 0, body size, then py-amqp's own property encoding
    header = frame(2, struct.pack(">HHQ", 60, 0, len(body)) + message._serialize_properties())
    return method + header + (frame(3, body) if body else b"")


def test_plain_delivery() -> None:
    buf = deliver(b'{"a":1}', tag=123456789012, redelivered=True, delivery_mode=2)
    assert parse_delivery(buf, 0, CHANNEL) == (len(buf), "ctag-1", 123456789012, True, 0,
                                               b'{"a":1}')


def test_properties_before_priority_are_skipped() -> None:
    buf = deliver(b"x" * 300, content_type="application/json", content_encoding="utf-8",
                  application_headers={"x-death": [{"count": 1, "queue": "q"}], "k": "v"},
                  delivery_mode=2, priority=7, message_id="m-1")
    end, _, tag, redelivered, priority, body = parse_delivery(buf, 0, CHANNEL) or (0,) * 6
    assert (end, tag, redelivered, priority, body) == (len(buf), 7, False, 7, b"x" * 300)


def test_empty_body_has_no_body_frame() -> None:
    buf = deliver(b"", priority=3)
    assert parse_delivery(buf, 0, CHANNEL) == (len(buf), "ctag-1", 7, False, 3, b"")


def test_consecutive_deliveries_and_offsets() -> None:
    first, second = deliver(b"one", tag=1), deliver(b"two", tag=2)
    buf = first + second
    got = parse_delivery(buf, 0, CHANNEL)
    assert got is not None and got[0] == len(first)
    assert parse_delivery(buf, got[0], CHANNEL) == (len(buf), "ctag-1", 2, False, 0, b"two")


def test_anything_else_is_left_to_py_amqp() -> None:
    whole = deliver(b"payload")
    for cut in range(len(whole)):  # partial data
        assert parse_delivery(whole[:cut], 0, CHANNEL) is None
    assert parse_delivery(whole, 0, channel=2) is None  # another channel
    heartbeat = frame(8, b"", channel=0)
    assert parse_delivery(heartbeat + whole, 0, CHANNEL) is None
    # a body split over two frames
    method_and_header = whole[:-len(frame(3, b"payload"))]
    split = method_and_header + frame(3, b"pay") + frame(3, b"load")
    assert parse_delivery(split, 0, CHANNEL) is None
    # a method that is not basic.deliver (basic.cancel-ok)
    assert parse_delivery(frame(1, b"\x00\x3c\x00\x1f\x03abc"), 0, CHANNEL) is None
