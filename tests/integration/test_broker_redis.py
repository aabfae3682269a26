"""Redis-only broker behaviour: raw bytes in the ready list, leases, lost replies, outages."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.integration.test_broker_support import claim_exactly, cleanup
from worker.brokers import open_broker
from worker.brokers.redis import RedisBroker, key_prefix, ready_key
from worker.errors import BrokerUnavailable, MessageRefused

pytestmark = pytest.mark.redis


@pytest.fixture
def client(redis_url: str, queue_name: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()
    cleanup(redis_url, queue_name)


def test_open_broker_builds_a_redis_broker(redis_url: str) -> None:
    with open_broker(redis_url, consumer_id="pod-a", lease_seconds=3) as broker:
        assert isinstance(broker, RedisBroker)
        assert broker.owner.startswith("pod-a/")
        assert broker.lease_ms == 3000


def test_raw_bytes_pushed_into_the_ready_list_come_out_unchanged(
        redis_url: str, client: redis.Redis, queue_name: str) -> None:
    garbage = [b"\x00\xff\xfe{not json", b"", b"x" * 100_000]
    client.lpush(ready_key(queue_name), *garbage)
    with RedisBroker(redis_url) as broker:
        got = claim_exactly(broker, [queue_name], 3)
        assert [d.body for d in got] == garbage
        for d in got:
            broker.dead_letter(d, "bad_message", "not JSON")
        assert [x.body for x in broker.dead_letters(queue_name)] == garbage


def test_live_owner_keeps_its_claims(redis_url: str, client: redis.Redis,
                                     queue_name: str) -> None:
    lease = 1.5
    with RedisBroker(redis_url, lease_seconds=lease) as holder, \
            RedisBroker(redis_url, lease_seconds=lease) as other:
        holder.publish(queue_name, b"mine")
        [held] = claim_exactly(holder, [queue_name], 1)
        end = time.monotonic() + lease * 3
        while time.monotonic() < end:
            holder.heartbeat()
            assert other.claim([queue_name], 10, 0.2) == []
        holder.ack([held])


def test_claims_of_a_closed_broker_return_after_the_lease(
        redis_url: str, client: redis.Redis, queue_name: str) -> None:
    lease = 1.0
    with RedisBroker(redis_url, lease_seconds=lease) as first:
        first.publish(queue_name, b"orphan")
        [held] = claim_exactly(first, [queue_name], 1)
    with RedisBroker(redis_url, lease_seconds=lease) as second:
        assert second.stats(queue_name).in_flight == 1, "close() keeps the claim"
        [back] = claim_exactly(second, [queue_name], 1, timeout=15)
        assert (back.body, back.redelivered) == (b"orphan", True)
        second.ack([back])
        # The first owner's late ack is harmless: the claim is gone.
        first.ack([held])
        assert second.stats(queue_name).in_flight == 0


def test_late_settlement_after_lost_lease_is_skipped(
        redis_url: str, client: redis.Redis, queue_name: str) -> None:
    with RedisBroker(redis_url, lease_seconds=1.0) as slow, RedisBroker(redis_url) as fast:
        slow.publish(queue_name, b"job")
        [held] = claim_exactly(slow, [queue_name], 1)
        client.delete(f"qscale:alive:{slow.owner}")  # the lease ran out
        [back] = claim_exactly(fast, [queue_name], 1, timeout=15)
        slow.retry_later(held, b"retry", 0)
        slow.dead_letter(held, "failure")
        stats = fast.stats(queue_name)
        assert (stats.delayed, stats.dead, stats.in_flight) == (0, 0, 1)
        fast.ack([back])


def test_lost_claim_reply_is_given_back(redis_url: str, client: redis.Redis,
                                        queue_name: str) -> None:
    with RedisBroker(redis_url) as broker:
        broker.publish_many(queue_name, [b"a", b"b"])
        # Simulate a claim that ran on the server but whose reply never arrived.
        first = broker._seq
        broker._seq += 5
        broker._claim(args=[broker.owner, broker.lease_ms, 5, first, 0, 10, 0, 1 << 20, 0,
                            key_prefix(queue_name)])
        broker._uncertain.append((first, first + 4, (key_prefix(queue_name),)))
        got = claim_exactly(broker, [queue_name], 2)
        assert sorted(d.body for d in got) == [b"a", b"b"]
        assert all(d.redelivered for d in got)
        broker.ack(got)
        assert broker.stats(queue_name).in_flight == 0


def test_unreachable_redis_raises_broker_unavailable() -> None:
    broker = RedisBroker("redis://127.0.0.1:1/0")
    for operation in (lambda: broker.claim(["q"], 1, 0), lambda: broker.publish("q", b"x"),
                      lambda: broker.stats("q"), broker.heartbeat):
        with pytest.raises(BrokerUnavailable):
            operation()
        assert not broker.connected()
    broker.close()


def test_reconnects_after_the_server_drops_the_connection(
        redis_url: str, client: redis.Redis, queue_name: str) -> None:
    with RedisBroker(redis_url) as broker:
        broker.publish(queue_name, b"before")
        client.client_kill_filter(_id=broker._redis.client_id())
        for _ in range(3):
            try:
                broker.publish(queue_name, b"after")
                break
            except BrokerUnavailable:
                assert not broker.connected()
        assert broker.connected()
        got = claim_exactly(broker, [queue_name], 2)
        assert [d.body for d in got] == [b"before", b"after"]


def test_bad_priority_is_refused(redis_url: str) -> None:
    """Refused for that message (permanent), not a lost connection."""
    with RedisBroker(redis_url) as broker, pytest.raises(MessageRefused, match="priority"):
        broker.publish("q", b"x", priority=10)


def test_priority_survives_retry_and_requeue(redis_url: str, client: redis.Redis,
                                             queue_name: str) -> None:
    with RedisBroker(redis_url) as broker:
        broker.publish(queue_name, b"urgent", priority=9)
        [urgent] = claim_exactly(broker, [queue_name], 1)
        broker.retry_later(urgent, b"urgent-2", 0.2)
        broker.publish(queue_name, b"normal")
        time.sleep(0.3)
        got = claim_exactly(broker, [queue_name], 2)
        assert [d.body for d in got] == [b"urgent-2", b"normal"]
        broker.requeue(got[:1])
        broker.ack(got[1:])
        assert client.llen(ready_key(queue_name, 9)) == 0, "requeued work goes first in line"
        [again] = claim_exactly(broker, [queue_name], 1)
        assert (again.body, again.tag.endswith(".9")) == (b"urgent-2", True)
        broker.ack([again])


def _die_holding(redis_url: str, queue: str, lease: float) -> None:
    """Claim the one message like a worker that is then SIGKILLed: no ack, no heartbeat."""
    broker = RedisBroker(redis_url, lease_seconds=lease, max_redeliveries=2)
    deadline = time.monotonic() + 10
    while not broker.claim([queue], 1, 0.5):
        assert time.monotonic() < deadline, "the message never came back"
    broker.close()


def test_message_that_keeps_killing_its_worker_comes_marked_dead(
        redis_url: str, client: redis.Redis, queue_name: str) -> None:
    """Past the cap the claim hands it over with the verdict (the worker settles it dead,
    recording FAILURE, without running it) instead of dead-lettering it unseen."""
    lease = 0.3
    with RedisBroker(redis_url) as producer:
        producer.publish(queue_name, b'{"oom":true}')
    for _ in range(3):  # delivered, then redelivered twice: each time its worker dies
        _die_holding(redis_url, queue_name, lease)
        time.sleep(lease + 0.05)
    with RedisBroker(redis_url, max_redeliveries=2) as survivor:
        [marked] = survivor.claim([queue_name], 10, 0.3)
        assert marked.dead_reason == "redelivered 2 times: the worker died while running it"
        survivor.dead_letter(marked, marked.dead_reason)
        [dead] = survivor.dead_letters(queue_name)
        assert dead.body == b'{"oom":true}'
        assert dead.reason == "redelivered 2 times: the worker died while running it"
        assert dead.failed_at > 0
        assert survivor.stats(queue_name).in_flight == 0
    assert client.hlen(f"{key_prefix(queue_name)}redeliveries") == 0


def test_settling_a_redelivered_message_forgets_its_count(
        redis_url: str, client: redis.Redis, queue_name: str) -> None:
    lease = 0.3
    with RedisBroker(redis_url) as producer:
        producer.publish(queue_name, b'{"once":true}')
    _die_holding(redis_url, queue_name, lease)
    time.sleep(lease + 0.05)
    with RedisBroker(redis_url, max_redeliveries=2) as survivor:
        [again] = claim_exactly(survivor, [queue_name], 1)
        assert again.redelivered
        assert client.hlen(f"{key_prefix(queue_name)}redeliveries") == 1
        survivor.ack([again])
    assert client.hlen(f"{key_prefix(queue_name)}redeliveries") == 0


def test_a_refused_retry_loses_nothing(redis_url: str, client: redis.Redis,
                                       queue_name: str) -> None:
    """Found by the settle-path fuzzer: Redis keeps a script's writes up to an error, so
    the claim was removed and the retry never written. Every script now checks its keys'
    types before writing: the refusal leaves the claim where it was."""
    with RedisBroker(redis_url) as broker:
        broker.publish(queue_name, b"keep me")
        [held] = claim_exactly(broker, [queue_name], 1)
        client.set(f"{key_prefix(queue_name)}delayed", b"another program's key")
        with pytest.raises(MessageRefused, match="WRONGTYPE"):
            broker.retry_later(held, b"keep me, attempt 2", 0.5)
        assert [d.body for d in broker.held([queue_name])] == [b"keep me"]
        client.delete(f"{key_prefix(queue_name)}delayed")
        broker.dead_letter(held, "fine now")
        assert [d.body for d in broker.dead_letters(queue_name)] == [b"keep me"]
