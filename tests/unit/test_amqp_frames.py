"""The consumer parses basic.deliver messages itself, like py-amqp but without decoding
properties it does not need: a hostile content-type or header table cannot hurt it."""

from __future__ import annotations

import struct
import sys
from typing import Any

import amqp
from amqp.serialization import dumps

from worker.brokers._amqp_frames import DeliveryFrames, parse_content_header, parse_delivery

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
    assert parse_delivery(buf, 0, CHANNEL) == (len(buf), "ctag-1", 123456789012, True, 0, 0,
                                               b'{"a":1}')


def test_properties_before_priority_are_skipped() -> None:
    buf = deliver(b"x" * 300, content_type="application/json", content_encoding="utf-8",
                  application_headers={"x-death": [{"count": 1, "queue": "q"}], "k": "v"},
                  delivery_mode=2, priority=7, message_id="m-1")
    end, _, tag, redelivered, priority, count, body = parse_delivery(buf, 0, CHANNEL) \
        or (0,) * 7
    assert (end, tag, redelivered, priority, count, body) == (len(buf), 7, False, 7, 0,
                                                              b"x" * 300)


def test_empty_body_has_no_body_frame() -> None:
    buf = deliver(b"", priority=3)
    assert parse_delivery(buf, 0, CHANNEL) == (len(buf), "ctag-1", 7, False, 3, 0, b"")


def test_consecutive_deliveries_and_offsets() -> None:
    first, second = deliver(b"one", tag=1), deliver(b"two", tag=2)
    buf = first + second
    got = parse_delivery(buf, 0, CHANNEL)
    assert got is not None and got[0] == len(first)
    assert parse_delivery(buf, got[0], CHANNEL) == (len(buf), "ctag-1", 2, False, 0, 0,
                                                    b"two")


def test_anything_else_is_left_to_py_amqp() -> None:
    whole = deliver(b"payload")
    for cut in range(len(whole)):  # partial data
        assert parse_delivery(whole[:cut], 0, CHANNEL) is None
    assert parse_delivery(whole, 0, channel=2) is None  # another channel
    heartbeat = frame(8, b"", channel=0)
    assert parse_delivery(heartbeat + whole, 0, CHANNEL) is None
    # a method that is not basic.deliver (basic.cancel-ok)
    assert parse_delivery(frame(1, b"\x00\x3c\x00\x1f\x03abc"), 0, CHANNEL) is None


def test_a_body_over_several_frames_is_joined() -> None:
    whole = deliver(b"payload")
    method_and_header = whole[:-len(frame(3, b"payload"))]
    split = method_and_header + frame(3, b"pay") + frame(3, b"load")
    got = parse_delivery(split, 0, CHANNEL)
    assert got is not None and (got[0], got[-1]) == (len(split), b"payload")
    assert parse_delivery(split[:-3], 0, CHANNEL) is None  # the last frame not yet here


def test_the_delivery_count_is_read_from_the_headers_without_decoding_them() -> None:
    nested: dict[str, Any] = {}
    for _ in range(3000):
        nested = {"a": nested}
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(50_000)  # py-amqp writes nested tables recursively
    try:
        buf = deliver(b"x", redelivered=True, content_type=b"\xff\xfe",
                      application_headers={"deep": nested, "x-delivery-count": 4, "z": "s"})
    finally:
        sys.setrecursionlimit(limit)
    got = parse_delivery(buf, 0, CHANNEL)
    assert got is not None and got[5:] == (4, b"x")


def test_a_malformed_header_is_no_delivery() -> None:
    assert parse_content_header(b"\x00\x3c\x00\x00" + b"\x00" * 7) is None


def test_frames_are_assembled_before_py_amqp_sees_them() -> None:
    """Deliveries py-amqp would read frame by frame (bodies over one frame, a header
    the fast path has not buffered yet) reach the consumer without py-amqp decoding
    their properties; other frames, and deliveries for an unknown consumer, pass."""
    taken: list[tuple[Any, ...]] = []
    passed: list[Any] = []
    counted: list[int] = []

    def on_delivery(*args: Any) -> bool:
        if args[0] != "ctag-1":
            return False
        taken.append(args)
        return True

    handler = DeliveryFrames(CHANNEL, on_delivery, passed.append, counted.append)
    raw = deliver(b"payload", tag=9, content_type=b"\xff")
    method_and_header = raw[:-len(frame(3, b"payload"))]
    frames = _split(method_and_header + frame(3, b"pay") + frame(3, b"load"))
    frames.insert(1, (8, 0, b""))  # a heartbeat between them is someone else's
    for one in frames:
        handler(one)
    assert taken == [("ctag-1", 9, False, 0, 0, b"payload")]
    assert passed == [(8, 0, b"")] and counted == [4]
    other = _split(deliver(b"q", tag=3).replace(b"ctag-1", b"ctag-2"))
    for one in other:
        handler(one)
    assert len(passed) == 1 + len(other)  # replayed to py-amqp as they came


def _split(buf: bytes) -> list[tuple[int, int, bytes]]:
    out, pos = [], 0
    while pos < len(buf):
        kind, channel, size = struct.unpack_from(">BHI", buf, pos)
        out.append((kind, channel, buf[pos + 7:pos + 7 + size]))
        pos += 8 + size
    return out
