"""Behaviour every broker must share, run against real Redis and real RabbitMQ."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest

from tests.integration.test_broker_support import (
    claim_exactly,
    cleanup,
    start_holder,
    wait_for_stats,
    wait_until,
)
from worker.brokers import Broker, QueueStats, open_broker

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]

LEASE = 2.0  # Redis lease for these tests: a dead worker's claims return after ~2 s


@pytest.fixture
def url(broker_url: str, queue_name: str) -> Iterator[str]:
    yield broker_url
    cleanup(broker_url, queue_name)


@pytest.fixture
def broker(url: str) -> Iterator[Broker]:
    with open_broker(url, lease_seconds=LEASE) as opened:
        yield opened


def test_publish_claim_ack(broker: Broker, queue_name: str) -> None:
    broker.publish(queue_name, b'{"n":1}')
    [delivery] = claim_exactly(broker, [queue_name], 1)
    assert (delivery.queue, delivery.body, delivery.redelivered) == (
        queue_name, b'{"n":1}', False)
    broker.ack([delivery])
    assert broker.claim([queue_name], 10, 0.2) == []
    wait_for_stats(broker, queue_name, QueueStats(queue_name, 0, 0, 0, 0))
    assert broker.connected()


def test_claim_returns_at_most_n(broker: Broker, queue_name: str) -> None:
    broker.publish_many(queue_name, [f"m{i}".encode() for i in range(5)])
    first = claim_exactly(broker, [queue_name], 3)
    rest = claim_exactly(broker, [queue_name], 2)
    assert len(first) == 3
    assert broker.claim([queue_name], 10, 0.3) == []
    bodies = [d.body for d in first + rest]
    assert sorted(bodies) == [f"m{i}".encode() for i in range(5)]
    assert bodies == sorted(bodies), "FIFO order within one priority"
    broker.ack(first + rest)


def test_claim_from_several_queues(broker: Broker, url: str, queue_name: str) -> None:
    other = queue_name + "-b"
    try:
        broker.publish(queue_name, b"a")
        broker.publish(other, b"b")
        got = claim_exactly(broker, [queue_name, other], 2)
        assert {(d.queue, d.body) for d in got} == {(queue_name, b"a"), (other, b"b")}
        broker.ack(got)
    finally:
        cleanup(url, other)


def test_garbage_bytes_round_trip(broker: Broker, queue_name: str) -> None:
    garbage = b"\xff\xfe\x00not json\x80"
    broker.publish(queue_name, garbage)
    [delivery] = claim_exactly(broker, [queue_name], 1)
    assert delivery.body == garbage
    broker.dead_letter(delivery, "bad_message", "malformed JSON")
    [dead] = broker.dead_letters(queue_name)
    assert (dead.body, dead.reason, dead.detail) == (garbage, "bad_message", "malformed JSON")


def test_retry_later_waits_for_the_delay(broker: Broker, queue_name: str) -> None:
    broker.publish(queue_name, b"attempt-1")
    [delivery] = claim_exactly(broker, [queue_name], 1)
    retried_at = time.monotonic()
    broker.retry_later(delivery, b"attempt-2", 1.5)
    assert broker.claim([queue_name], 10, 0.0) == []
    [again] = claim_exactly(broker, [queue_name], 1, timeout=30)
    assert time.monotonic() - retried_at >= 1.4
    assert again.body == b"attempt-2"
    broker.ack([again])
    assert broker.claim([queue_name], 10, 0.3) == []


def test_publish_with_delay(broker: Broker, queue_name: str) -> None:
    published_at = time.monotonic()
    broker.publish(queue_name, b"later", delay=1.0)
    broker.publish(queue_name, b"now")
    [first] = claim_exactly(broker, [queue_name], 1)
    assert first.body == b"now"
    [second] = claim_exactly(broker, [queue_name], 1, timeout=30)
    assert second.body == b"later"
    assert time.monotonic() - published_at >= 0.9
    broker.ack([first, second])


def test_dead_letter_requeue_and_purge(broker: Broker, queue_name: str) -> None:
    broker.publish_many(queue_name, [b'{"n":1}', b'{"n":2}', b'{"n":3}'])
    deliveries = claim_exactly(broker, [queue_name], 3)
    before = time.time()
    for d in deliveries:
        broker.dead_letter(d, "failure", f"ValueError: {d.body.decode()}")
    letters = broker.dead_letters(queue_name)
    assert [(x.body, x.reason, x.detail) for x in letters] == [
        (d.body, "failure", f"ValueError: {d.body.decode()}") for d in deliveries]
    assert all(before - 1 <= x.failed_at <= time.time() + 1 for x in letters)
    assert len(broker.dead_letters(queue_name, limit=2)) == 2
    assert len(broker.dead_letters(queue_name)) == 3, "listing must not remove"
    assert broker.stats(queue_name).dead == 3

    assert broker.requeue_dead(queue_name, limit=1) == 1
    [back] = claim_exactly(broker, [queue_name], 1)
    assert back.body == deliveries[0].body
    broker.ack([back])
    assert broker.purge_dead(queue_name) == 2
    assert broker.dead_letters(queue_name) == []
    assert broker.purge_dead(queue_name) == 0
    assert broker.requeue_dead(queue_name) == 0


def test_priority_order(url: str, queue_name: str) -> None:
    # RabbitMQ queues honour priorities only when declared with QSCALE_MAX_PRIORITY.
    with open_broker(url, lease_seconds=LEASE, max_priority=9) as broker:
        _check_priority_order(broker, queue_name)


def _check_priority_order(broker: Broker, queue_name: str) -> None:
    for body, priority in [(b"p0", 0), (b"none", None), (b"p9", 9), (b"p5", 5), (b"p9b", 9)]:
        broker.publish(queue_name, body, priority=priority)
    got = claim_exactly(broker, [queue_name], 5)
    assert [d.body for d in got] == [b"p9", b"p9b", b"p5", b"p0", b"none"]
    broker.ack(got)


def test_requeue_gives_messages_back_flagged(broker: Broker, queue_name: str) -> None:
    broker.publish_many(queue_name, [b"a", b"b"])
    got = claim_exactly(broker, [queue_name], 2)
    broker.requeue(got)
    again = claim_exactly(broker, [queue_name], 2)
    assert sorted(d.body for d in again) == [b"a", b"b"]
    assert all(d.redelivered for d in again)
    broker.ack(again)


def test_stats_are_exact(broker: Broker, url: str, queue_name: str) -> None:
    broker.publish_many(queue_name, [f"m{i}".encode() for i in range(7)])
    wait_for_stats(broker, queue_name, QueueStats(queue_name, 7, 0, 0, 0))
    with open_broker(url, lease_seconds=30) as worker:
        held = claim_exactly(worker, [queue_name], 4)
        wait_for_stats(broker, queue_name, QueueStats(queue_name, 3, 4, 0, 0))
        worker.ack(held[:2])
        worker.retry_later(held[2], b"retry", 600)
        worker.dead_letter(held[3], "failure")
    # Closing RabbitMQ's consumer returns what it prefetched meanwhile; Redis
    # claimed nothing more, so both brokers agree on the numbers.
    wait_for_stats(broker, queue_name, QueueStats(queue_name, 3, 0, 1, 1))


def test_dead_worker_claims_come_back_redelivered(url: str, queue_name: str) -> None:
    with open_broker(url, lease_seconds=LEASE) as broker:
        broker.publish_many(queue_name, [f"job{i}".encode() for i in range(3)])
        child, held = start_holder(url, queue_name, 3, LEASE)
        assert sorted(held) == ["job0", "job1", "job2"]
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        back = claim_exactly(broker, [queue_name], 3, timeout=LEASE * 10 + 10)
        took = time.monotonic() - killed_at
        print(f"dead worker's claims back after {took:.2f}s")
        assert sorted(d.body for d in back) == [b"job0", b"job1", b"job2"]
        assert all(d.redelivered for d in back)
        broker.ack(back)
        wait_until(lambda: broker.claim([queue_name], 10, 0.1) == [], 5, "queue empty")


def test_idle_claim_loop_is_cheap(broker: Broker, queue_name: str) -> None:
    broker.claim([queue_name], 10, 0.0)  # connect and subscribe first
    cpu, wall = time.process_time(), time.monotonic()
    while time.monotonic() - wall < 2.0:
        assert broker.claim([queue_name], 10, 0.5) == []
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    print(f"idle claim loop: {cpu / wall:.1%} of a core over {wall:.1f}s")
    assert cpu / wall < 0.25


def test_large_and_many_bodies_round_trip(broker: Broker, queue_name: str) -> None:
    big = os.urandom(300_000)  # larger than the read-ahead chunk and an AMQP frame
    small = [f"s{i}".encode() * 50 for i in range(500)]
    broker.publish(queue_name, big)
    broker.publish_many(queue_name, small)
    got = claim_exactly(broker, [queue_name], 501)
    assert got[0].body == big
    assert [d.body for d in got[1:]] == small
    broker.ack(got)
