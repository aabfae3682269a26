"""Metric sources against the real brokers: depth and in-flight must be exact.

RabbitMQ's ready count (passive declare) is exact at once; its unacked count comes
from the management API, which samples every ~5 s, so in-flight converges within that.
"""

from __future__ import annotations

import time

import pytest

from controller.sources import BrokerDepthSource, DepthSample, MetricReadError
from worker.brokers import open_broker
from worker.brokers.base import Delivery


def _settled(source: BrokerDepthSource, ready: int | None, backlog: int) -> DepthSample:
    """The first sample whose ready + in_flight is `backlog`, or the last one after 20 s."""
    deadline = time.monotonic() + 20
    while True:
        sample = source.sample()
        if ready is not None:
            assert sample.ready == ready, "ready depth must be exact at once"
        if sample.backlog == backlog or time.monotonic() > deadline:
            return sample
        time.sleep(0.5)

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def test_ready_and_in_flight_are_exact(broker_url: str, queue_name: str) -> None:
    other = queue_name + "-b"
    with open_broker(broker_url) as producer, open_broker(broker_url) as consumer:
        producer.publish_many(queue_name, [b'{"n": %d}' % i for i in range(10)])
        producer.publish_many(other, [b'{"n": %d}' % i for i in range(3)])
        # A RabbitMQ claim returns what has arrived once one message has: on a busy host
        # the four come in more than one read.
        claimed: list[Delivery] = []
        deadline = time.monotonic() + 10
        while len(claimed) < 4 and time.monotonic() < deadline:
            claimed += consumer.claim([queue_name], 4 - len(claimed), timeout=2.0)
        assert len(claimed) == 4
        source = BrokerDepthSource(broker_url, [queue_name, other])
        try:
            sample = _settled(source, 9, 13)
            assert sample.per_queue[queue_name] == (6, 4)
            assert sample.per_queue[other] == (3, 0)
            assert (sample.ready, sample.in_flight, sample.backlog) == (9, 4, 13)
            assert sample.in_flight_known
            consumer.ack(claimed[:3])
            # 3 finished: 10 left, ready or claimed (RabbitMQ may refill the consumer's
            # prefetch window, moving ready messages to unacked).
            after = _settled(source, None, 10)
            assert after.backlog == 10 and after.in_flight >= 1
        finally:
            source.close()
            consumer.requeue(claimed[3:])


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "amqp://qscale:qscale@127.0.0.1:1//"])
def test_unreachable_broker_is_a_metric_error_not_zero(url: str, queue_name: str) -> None:
    source = BrokerDepthSource(url, [queue_name])
    with pytest.raises(MetricReadError):
        source.sample()
    source.close()
