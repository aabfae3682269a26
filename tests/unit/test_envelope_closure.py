"""The envelope is closed under round trip, and decode is total.

`decode(body)` either raises BadMessage or returns an envelope that `encode()`
accepts and that decodes to the same value. Nothing else may escape it: not
RecursionError (nested `[`), not OverflowError (1e400, 10**400), not a NaN that
the first retry's `encode()` then refuses. Signature fields a broker would refuse
(priority outside 0-9 or a bool, queue names a broker cannot hold) are refused by
decode and by the producer, never first by the broker.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.envelope import MAX_DEPTH, MAX_NAME_BYTES, Envelope, Signature, decode
from worker.errors import BadMessage

# -- a grammar of JSON and of raw bytes, hostile on purpose --

_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20))
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=30)
_fields = ("v", "id", "task", "args", "kwargs", "queue", "attempt", "enqueued_at",
           "first_enqueued_at", "deadline", "checkpoint_key", "priority", "ignore_result",
           "link", "chord", "parent_id")


def _signature_like() -> st.SearchStrategy[Any]:
    return st.fixed_dictionaries(
        {"task": st.one_of(st.text(max_size=10), _json)},
        optional={"args": _json, "kwargs": _json, "queue": st.one_of(st.text(), _json),
                  "priority": _json, "immutable": _json, "task_id": _json})


_envelope_like = st.fixed_dictionaries(
    {"id": st.one_of(st.text(min_size=1, max_size=12), _json),
     "task": st.one_of(st.text(min_size=1, max_size=12), _json)},
    optional={name: _json for name in _fields if name not in ("id", "task")}
    | {"link": st.lists(_signature_like(), max_size=3),
       "chord": st.fixed_dictionaries({"id": _json, "size": _json, "index": _json,
                                       "callback": _signature_like()})})


def _dumps(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def _closed(body: bytes) -> None:
    """decode raises BadMessage, or its envelope round-trips exactly."""
    try:
        env = decode(body)
    except BadMessage:
        return
    again = decode(env.encode())
    assert again == env
    assert again.encode() == env.encode()


@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(_envelope_like)
def test_every_envelope_like_document_is_refused_or_round_trips(doc: dict[str, Any]) -> None:
    _closed(_dumps(doc))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_raw_bytes_are_refused_or_round_trip(body: bytes) -> None:
    _closed(body)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(_json)
def test_any_json_value_as_arguments_is_refused_or_round_trips(value: Any) -> None:
    _closed(_dumps({"id": "x", "task": "t", "args": [value], "kwargs": {"k": value}}))


@pytest.mark.parametrize("body", [
    b"[" * 5000,                                   # RecursionError in json.loads
    b'{"id":"x","task":"t","args":' + b"[" * 5000 + b"]" * 5000 + b"}",
    b'{"id":"x","task":"t","args":[' + b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"]}",
    b'{"id":"x","task":"t","deadline":NaN}',        # re-encoding refuses NaN
    b'{"id":"x","task":"t","first_enqueued_at":Infinity}',
    b'{"id":"x","task":"t","enqueued_at":-Infinity}',
    b'{"id":"x","task":"t","args":[NaN]}',
    b'{"id":"x","task":"t","enqueued_at":1e400}',   # parses as inf
    b'{"id":"x","task":"t","enqueued_at":' + b"9" * 400 + b"}",  # float() overflows
    b'{"id":"x","task":"t","args":[' + b"9" * 4000 + b"]}",      # unbounded integer
    b'{"id":"x","task":"t","attempt":' + b"9" * 30 + b"}",
    b'{"id":"x","task":"t","priority":true}',
    b'{"id":"x","task":"t","priority":42}',
    b'{"id":"x","task":"t","queue":""}',
    b'{"id":"x","task":"t","queue":"' + b"q" * 300 + b'"}',
    b'{"id":"x","task":"t","link":[{"task":"n","priority":true}]}',
    b'{"id":"x","task":"t","link":[{"task":"n","priority":-1}]}',
    b'{"id":"x","task":"t","link":[{"task":"n","queue":"' + b"q" * 300 + b'"}]}',
    b'{"id":"x","task":"t","chord":{"id":"c","size":2,"index":0,'
    b'"callback":{"task":"n","priority":10}}}',
    b'{"id":"x","task":"t","chord":{"id":"c","size":' + b"9" * 30 + b',"index":0,'
    b'"callback":{"task":"n"}}}',
    b'{"id":"x","task":"t","ignore_result":"yes"}',
    b'{"id":"' + b"i" * 300 + b'","task":"t"}',
    b'{"id":"x","task":"t","args":["\xff"]}',
    b"\xff\xfe" + "{}".encode("utf-16-le"),
])
def test_hostile_bodies_are_bad_messages(body: bytes) -> None:
    with pytest.raises(BadMessage):
        decode(body)


def test_depth_limit_is_on_the_arguments_not_just_the_parser() -> None:
    nested: Any = 1
    for _ in range(MAX_DEPTH):
        nested = [nested]
    with pytest.raises(BadMessage, match="nested"):
        decode(_dumps({"id": "x", "task": "t", "args": [nested]}))
    shallow: Any = 1
    for _ in range(MAX_DEPTH - 3):
        shallow = [shallow]
    _closed(_dumps({"id": "x", "task": "t", "args": [shallow]}))


def test_a_bad_message_keeps_what_can_be_salvaged_for_the_failure_record() -> None:
    body = _dumps({"v": 1, "id": "abc", "task": "t", "deadline": float("nan"),
                   "link": [{"task": "n", "task_id": "step2"}],
                   "chord": {"id": "c1", "size": 2, "index": 0,
                             "callback": {"task": "cb", "task_id": "cbid"}}})
    with pytest.raises(BadMessage) as caught:
        decode(body)
    assert caught.value.task_id == "abc"
    assert caught.value.task == "t"
    assert caught.value.dependents == (("step2", "n"),)
    assert caught.value.chord.result_id == "cbid"


def test_an_oversized_body_of_our_own_keeps_its_id() -> None:
    env = Envelope.create("t", ["x" * 5000], task_id="big-1")
    with pytest.raises(BadMessage, match="exceeds") as caught:
        decode(env.encode(), max_bytes=1000)
    assert caught.value.task_id == "big-1"


@pytest.mark.parametrize("options", [
    {"priority": 10}, {"priority": True}, {"priority": -1},
    {"queue": ""}, {"queue": "q" * (MAX_NAME_BYTES + 1)},
])
def test_the_producer_refuses_what_decode_would_refuse(options: dict[str, Any]) -> None:
    with pytest.raises(BadMessage):
        Envelope.create("t", [1], **options).encode()


@pytest.mark.parametrize("options", [{"priority": 10}, {"priority": True},
                                     {"queue": "q" * (MAX_NAME_BYTES + 1)}])
def test_the_producer_refuses_bad_chain_steps(options: dict[str, Any]) -> None:
    step = Signature(task="n", **options)
    with pytest.raises(BadMessage):
        Envelope.create("t", [1], link=(step,)).encode()


def test_non_finite_arguments_are_refused_by_the_producer() -> None:
    with pytest.raises(BadMessage):
        Envelope.create("t", [float("inf")]).encode()
    with pytest.raises(BadMessage):
        Envelope.create("t", [2**70]).encode()
