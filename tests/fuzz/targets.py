"""Fuzz targets: functions of raw bytes that must never fail, whatever the bytes.

`decode`: the bytes are a message body. `envelope`: the bytes steer a grammar of
envelope-like JSON documents (every field, any JSON type, nesting thousands deep,
integers hundreds of digits long, NaN and Infinity), which byte mutations alone
reach only by luck. Both check that decode is total and closed under round trip
(worker.envelope). A target raises only to report a violation; the fuzzer
(tests/fuzz/run_atheris.py) and the crasher regression test
(tests/fuzz/test_crashers.py) share them.
"""

from __future__ import annotations

import json
from typing import Any

from worker.envelope import decode
from worker.errors import BadMessage

FIELDS = ("v", "id", "task", "args", "kwargs", "queue", "attempt", "enqueued_at",
          "first_enqueued_at", "deadline", "checkpoint_key", "priority", "ignore_result",
          "link", "chord", "parent_id")


def decode_closed(data: bytes) -> None:
    """BadMessage, or an envelope that encodes, decodes to itself, and encodes the same."""
    try:
        env = decode(data)
    except BadMessage:
        return
    body = env.encode()
    again = decode(body)
    if again != env or again.encode() != body:
        raise AssertionError(f"round trip changed the envelope: {env!r} -> {again!r}")


class _Bytes:
    """Choices read from the fuzzer's bytes (zeros once they run out)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def int(self, below: int) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1] % below

    def big(self) -> int:
        return int.from_bytes(self.data[self.pos:self.pos + 2] or b"\0", "big")


def _value(src: _Bytes, depth: int = 0) -> Any:
    kind = src.int(12)
    if kind == 0:
        nested: Any = src.int(3)
        for _ in range(src.big() % 6000):  # a deep list, as one hostile body carried
            nested = [nested]
        return nested
    if kind == 1:
        return int("9" * (1 + src.big() % 600)) * (-1 if src.int(2) else 1)
    if kind == 2:
        return [float("nan"), float("inf"), -float("inf"), 1e308, -0.0, 5e-324][src.int(6)]
    if kind == 3:
        return "x" * (src.big() % 400) + ["", "\x00", "\ud800", "é"][src.int(4)]
    if kind == 4 and depth < 6:
        return [_value(src, depth + 1) for _ in range(src.int(4))]
    if kind == 5 and depth < 6:
        return {["k", "", "\\x00", "é" * 3][src.int(4)] + str(i): _value(src, depth + 1)
                for i in range(src.int(4))}
    if kind == 6:
        return [True, False, None][src.int(3)]
    if kind == 7 and depth < 3:
        return {"task": _value(src, 6), "args": _value(src, depth + 1),
                "priority": _value(src, 6), "queue": _value(src, 6),
                "task_id": _value(src, 6), "immutable": _value(src, 6)}
    return src.big() - 30_000


def envelope_closed(data: bytes) -> None:
    """A grammar-built envelope-like document: decode is total and closed on it."""
    src = _Bytes(data)
    doc: dict[str, Any] = {"id": "fuzz", "task": "t"}
    for _ in range(src.int(8)):
        field = FIELDS[src.int(len(FIELDS))]
        doc[field] = _value(src)
        if field == "link" and src.int(2):
            doc[field] = [_value(src, 3) for _ in range(src.int(3))]
        if field == "chord" and src.int(2):
            doc[field] = {"id": _value(src, 6), "size": _value(src, 6),
                          "index": _value(src, 6), "callback": _value(src, 2)}
    try:
        body = json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        return  # json.dumps itself refuses it: nothing a producer could send
    decode_closed(body)


TARGETS = {"decode": decode_closed, "envelope": envelope_closed}
