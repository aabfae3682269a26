"""The wire format: round trips and every validation reason."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from worker.envelope import ChordRef, Envelope, Signature, decode
from worker.errors import BadMessage

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


def full_envelope() -> Envelope:
    callback = Signature("m.reduce", [1], {"k": "v"}, queue="q2", priority=3,
                         immutable=True, task_id="cb")
    return Envelope.create(
        "m.task", [1, "two", [3]], {"four": 4.5}, queue="work", task_id="abc", now=100.0,
        deadline=200.0, checkpoint_key="ck", priority=7, ignore_result=True,
        link=(Signature("m.next", [9]), Signature("m.last", immutable=True, task_id="L")),
        chord=ChordRef(id="ch", size=3, index=2, callback=callback), parent_id="p")


def test_full_round_trip() -> None:
    env = full_envelope()
    assert decode(env.encode()) == env
    retried = env.next_attempt(now=150.0)
    again = decode(retried.encode())
    assert (again.attempt, again.enqueued_at, again.first_enqueued_at) == (2, 150.0, 100.0)


def test_minimal_message_gets_defaults() -> None:
    env = decode(b'{"id": "x", "task": "t"}')
    assert (env.args, env.kwargs, env.queue, env.attempt) == ([], {}, "default", 1)
    assert env.link == () and env.chord is None and not env.ignore_result


def test_default_signature_fields_stay_off_the_wire() -> None:
    assert Signature("t").to_json() == {"task": "t", "args": [], "kwargs": {},
                                        "queue": None, "priority": None}


@given(args=st.lists(json_values, max_size=5),
       kwargs=st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_any_json_arguments_round_trip(args: list[object], kwargs: dict[str, object]) -> None:
    env = Envelope.create("t", args, kwargs)
    assert decode(env.encode()) == env


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{", "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"[]", "message must be a JSON object"),
    (b'{"v": 2, "id": "x", "task": "t"}', "unsupported envelope version 2"),
    (b'{"task": "t"}', "missing field 'id'"),
    (b'{"id": "x"}', "missing field 'task'"),
    (b'{"id": 5, "task": "t"}', "field 'id' must be a non-empty string"),
    (b'{"id": "x", "task": true}', "field 'task' must be a non-empty string"),
    (b'{"id": "", "task": "t"}', "field 'id' must be a non-empty string"),
    (b'{"id": "x", "task": "t", "args": "a"}', "field 'args' must be a list"),
    (b'{"id": "x", "task": "t", "kwargs": []}', "field 'kwargs' must be an object"),
    (b'{"id": "x", "task": "t", "attempt": "1"}', "field 'attempt' must be an integer"),
    (b'{"id": "x", "task": "t", "attempt": true}', "field 'attempt' must be an integer"),
    (b'{"id": "x", "task": "t", "attempt": 0}', "field 'attempt' must be within [1, 1e+06]"),
    (b'{"id": "x", "task": "t", "enqueued_at": "now"}', "field 'enqueued_at' must be a number"),
    (b'{"id": "x", "task": "t", "deadline": "soon"}', "field 'deadline' must be a number"),
    (b'{"id": "x", "task": "t", "queue": 1}', "field 'queue' must be a non-empty string"),
    (b'{"id": "x", "task": "t", "priority": 1.5}', "field 'priority' must be an integer 0-9"),
    (b'{"id": "x", "task": "t", "checkpoint_key": 1}',
     "field 'checkpoint_key' must be a non-empty string"),
    (b'{"id": "x", "task": "t", "parent_id": 1}', "field 'parent_id' must be a non-empty string"),
    (b'{"id": "x", "task": "t", "link": {}}', "field 'link' must be a list"),
    (b'{"id": "x", "task": "t", "link": [1]}', "link[0] must be a JSON object"),
    (b'{"id": "x", "task": "t", "link": [{"task": ""}]}',
     "link[0].task must be a non-empty string"),
    (b'{"id": "x", "task": "t", "link": [{"task": "n", "args": {}}]}',
     "link[0].args must be a list"),
    (b'{"id": "x", "task": "t", "link": [{"task": "n", "kwargs": []}]}',
     "link[0].kwargs must be an object"),
    (b'{"id": "x", "task": "t", "link": [{"task": "n", "queue": 1}]}',
     "link[0].queue must be a non-empty string"),
    (b'{"id": "x", "task": "t", "link": [{"task": "n", "priority": "hi"}]}',
     "link[0].priority must be an integer 0-9"),
    (b'{"id": "x", "task": "t", "link": [{"task": "n", "immutable": 1}]}',
     "link[0].immutable must be a boolean"),
    (b'{"id": "x", "task": "t", "link": [{"task": "n", "task_id": ""}]}',
     "link[0].task_id must be a non-empty string"),
    (b'{"id": "x", "task": "t", "chord": 1}', "chord must be a JSON object"),
    (b'{"id": "x", "task": "t", "chord": {"id": "c", "size": "2", "index": 0}}',
     "chord.size must be an integer"),
    (b'{"id": "x", "task": "t", "chord": {"id": "c", "size": 2, "index": 2}}',
     "chord needs integer size >= 1 and index < size"),
    (b'{"id": "x", "task": "t", "chord": {"id": "c", "size": 1, "index": 0}}',
     "chord.callback must be a JSON object"),
])
def test_every_bad_message_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadMessage) as caught:
        decode(raw)
    assert reason in caught.value.reason


def test_oversized_payload_is_refused_before_parsing() -> None:
    body = json.dumps({"id": "x", "task": "t", "args": ["x" * 600]}).encode()
    with pytest.raises(BadMessage, match="exceeds the 512-byte limit"):
        decode(body, max_bytes=512)


@pytest.mark.parametrize("value", [object(), math.nan, {1, 2}])
def test_non_json_arguments_fail_at_encode(value: object) -> None:
    with pytest.raises(BadMessage, match=r"is not JSON|non-finite"):
        Envelope.create("t", [value]).encode()
