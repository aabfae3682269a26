"""Terminal states are final, chords fire once, and every dead letter records FAILURE.

At-least-once delivery runs some tasks twice by design; a second run must never
turn a finished SUCCESS into FAILURE, mark chain steps that ran as "did not run",
or fire a chord's callback again. Every path that dead-letters a message records
FAILURE, so `.get()` ends instead of waiting forever.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis

from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, wait_until
from worker import Client, RemoteError, chain
from worker.brokers import open_broker
from worker.brokers.redis import RedisBroker
from worker.envelope import ChordRef, Envelope, Signature
from worker.errors import BadMessage
from worker.results import SUCCESS, ResultStore

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def _publish(url: str, queue: str, *bodies: bytes, delay: float = 0.0) -> None:
    with open_broker(url) as b:
        for body in bodies:
            b.publish(queue, body, delay=delay)


def test_a_duplicate_run_that_fails_leaves_success_final(broker_url: str, redis_url: str,
                                                         queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    store = ResultStore(redis_url)
    try:
        worker.wait_ready()
        env = Envelope.create("rt.first_wins", [key], queue=queue_name)
        _publish(broker_url, queue_name, env.encode())
        wait_until(lambda: (store.fetch(env.id) or {}).get("status") == SUCCESS, 20,
                   "the first run", worker)
        _publish(broker_url, queue_name, env.encode())   # the broker delivers it again
        wait_until(lambda: rt.attempts(key).get(env.id) == 2, 20, "the second run", worker)
        with broker(broker_url) as b:
            wait_until(lambda: b.stats(queue_name).dead == 1, 20, "the duplicate's DLQ entry",
                       worker)
        assert store.fetch(env.id)["status"] == SUCCESS
        assert store.fetch(env.id)["result"] == "first"
    finally:
        worker.stop()


def test_a_failing_duplicate_of_a_chain_step_leaves_the_later_steps_alone(
        broker_url: str, redis_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    store = ResultStore(redis_url)
    try:
        worker.wait_ready()
        last = f"last-{uuid.uuid4().hex}"
        env = Envelope.create("rt.first_wins", [key], queue=queue_name, link=(
            Signature(task="rt.collect", args=[key], queue=queue_name, task_id=last),))
        _publish(broker_url, queue_name, env.encode())
        wait_until(lambda: (store.fetch(last) or {}).get("status") == SUCCESS, 20,
                   "the chain", worker)
        _publish(broker_url, queue_name, env.encode())
        wait_until(lambda: rt.attempts(key).get(env.id) == 2, 20, "the duplicate", worker)
        time.sleep(1.0)
        assert store.fetch(last)["status"] == SUCCESS, store.fetch(last)
        assert store.fetch(env.id)["status"] == SUCCESS
    finally:
        worker.stop()


def _chord(queue: str, key: str, size: int) -> tuple[str, list[Envelope]]:
    chord_id = Envelope.new_id()
    callback = Signature(task="rt.collect", args=[key + ":cb"], queue=queue, task_id=chord_id)
    members = [Envelope.create("rt.value", [key, i], queue=queue,
                               chord=ChordRef(id=chord_id, size=size, index=i,
                                              callback=callback))
               for i in range(size)]
    return chord_id, members


def test_a_chord_callback_fires_once_when_a_member_runs_again(
        broker_url: str, redis_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    store = ResultStore(redis_url)
    try:
        worker.wait_ready()
        chord_id, members = _chord(queue_name, key, 3)
        _publish(broker_url, queue_name, *(m.encode() for m in members))
        wait_until(lambda: (store.fetch(chord_id) or {}).get("status") == SUCCESS, 20,
                   "the callback", worker)
        assert store.fetch(chord_id)["result"] == [0, 1, 2]
        _publish(broker_url, queue_name, members[0].encode(), members[2].encode())
        wait_until(lambda: rt.runs(key).get(members[2].id) == 2, 20, "the duplicates", worker)
        time.sleep(1.5)
        assert rt.runs(key + ":cb") == {chord_id: 1}
    finally:
        worker.stop()


def test_chord_state_outlives_the_result_ttl_while_members_are_pending(
        broker_url: str, redis_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url,
                           result_ttl=2).start()
    store = ResultStore(redis_url)
    try:
        worker.wait_ready()
        chord_id, members = _chord(queue_name, key, 2)
        _publish(broker_url, queue_name, members[0].encode())
        _publish(broker_url, queue_name, members[1].encode(), delay=4.0)
        record = wait_until(lambda: store.fetch(chord_id), 20, "the callback", worker)
        assert record["status"] == SUCCESS
        assert record["result"] == [0, 1]
    finally:
        worker.stop()


@pytest.mark.redis
def test_the_redis_redelivery_cap_records_failure(redis_url: str, queue_name: str) -> None:
    """A message whose claimers died with it, again and again, ends FAILURE: `.get()` ends."""
    env = Envelope.create("rt.record", ["unused"], queue=queue_name)
    _publish(redis_url, queue_name, env.encode())
    for _ in range(2):   # two consumers claim it and die (their lease lapses)
        doomed = RedisBroker(redis_url, lease_seconds=0.6, max_redeliveries=1)
        assert [d.body for d in doomed.claim([queue_name], 1, 1.0)] == [env.encode()]
        doomed.close()
        time.sleep(1.3)
    worker = WorkerProcess(redis_url, queue_name, max_redeliveries=1).start()
    try:
        worker.wait_ready()
        with Client(redis_url) as client, pytest.raises(RemoteError, match="redelivered"):
            client.async_result(env.id).get(timeout=20)
    finally:
        worker.stop()


@pytest.mark.rabbitmq
def test_the_quorum_delivery_limit_records_failure(amqp_url: str, redis_url: str,
                                                   queue_name: str) -> None:
    settings = {"amqp_queue_type": "quorum", "max_redeliveries": 1}
    env = Envelope.create("rt.record", ["unused"], queue=queue_name)
    with open_broker(amqp_url, amqp_queue_type="quorum", max_redeliveries=1) as b:
        b.publish(queue_name, env.encode())
    for _ in range(2):   # delivered, then the consumer's connection dies with it
        doomed = open_broker(amqp_url, amqp_queue_type="quorum", max_redeliveries=1,
                             prefetch=1)
        got: list[Any] = []
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            got = doomed.claim([queue_name], 1, 1.0)
        assert got, "the message was not delivered"
        doomed._session.drop()
    worker = WorkerProcess(amqp_url, queue_name, result_url=redis_url, **settings).start()
    try:
        worker.wait_ready()
        with Client(amqp_url, result_url=redis_url) as client, \
                pytest.raises(RemoteError, match="deliver"):
            client.async_result(env.id).get(timeout=30)
    finally:
        worker.stop()


def test_a_chain_step_too_large_to_send_fails_the_chain(broker_url: str, redis_url: str,
                                                        queue_name: str) -> None:
    """Step 1's result makes step 2 larger than QSCALE_MAX_MESSAGE_BYTES."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url,
                           max_message_bytes=4096).start()
    try:
        worker.wait_ready()
        with Client(broker_url, result_url=redis_url) as client:
            flow = chain(rt.big.s(key, 8000).set(queue=queue_name),
                         rt.collect.s(key).set(queue=queue_name))
            result = flow.apply_async(client=client)
            with pytest.raises(RemoteError, match=r"too large|exceeds"):
                result.get(timeout=20)
    finally:
        worker.stop()


def test_the_producer_refuses_a_message_over_the_size_limit(broker_url: str, redis_url: str,
                                                            queue_name: str) -> None:
    with Client(broker_url, result_url=redis_url) as client:
        client.settings = client.settings.model_copy(update={"max_message_bytes": 1024})
        with pytest.raises(BadMessage, match="exceeds"):
            rt.collect.apply_async(["x" * 4000, "k"], queue=queue_name, client=client)
        with broker(broker_url) as b:
            assert b.stats(queue_name).ready == 0


def test_a_lost_run_with_no_retries_left_records_failure(broker_url: str, redis_url: str,
                                                         queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        env = Envelope.create("rt.exit", [key], queue=queue_name)
        _publish(broker_url, queue_name, env.encode())
        with Client(broker_url, result_url=redis_url) as client, \
                pytest.raises(RemoteError, match="exited with code 3"):
            client.async_result(env.id).get(timeout=30)
        assert redis.Redis.from_url(redis_url).exists(f"rt:{queue_name}:attempts")
    finally:
        worker.stop()
