"""RabbitMQ-only broker behaviour: raw publishes, forced disconnects, buckets, bad declarations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import quote

import amqp
import pytest

from tests.integration.test_broker_support import (
    api_get,
    api_request,
    claim_exactly,
    cleanup,
    wait_until,
)
from worker.brokers import Delivery, open_broker
from worker.brokers.amqp import AmqpBroker, delay_bucket_ms, delay_queue
from worker.errors import BrokerUnavailable, ConfigError

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def raw_channel(amqp_url: str, queue_name: str) -> Iterator[amqp.Channel]:
    """A plain py-amqp channel, to put bytes into RabbitMQ without our code."""
    connection = amqp.Connection("127.0.0.1:5672", userid="qscale", password="qscale")
    connection.connect()
    yield connection.channel()
    connection.close()
    cleanup(amqp_url, queue_name)


def test_open_broker_builds_an_amqp_broker(amqp_url: str) -> None:
    with open_broker(amqp_url, consumer_id="pod-a", prefetch=4) as broker:
        assert isinstance(broker, AmqpBroker)
        assert broker.connected()


def test_delay_buckets_round_up_by_at_most_half() -> None:
    assert [delay_bucket_ms(s) for s in (0.0001, 0.002, 0.005, 1.0, 1.5, 60.0)] == [
        1, 2, 6, 1024, 1536, 65536]
    for ms in range(1, 100_000, 37):
        bucket = delay_bucket_ms(ms / 1000)
        assert ms <= bucket <= ms * 1.5 + 1
    buckets = {delay_bucket_ms(s) for s in range(1, 86_400, 7)}
    assert len(buckets) <= 30, "a day of distinct delays needs few queues"
    assert delay_queue("q", 1536) == "qscale.delay.q.1536"


def test_raw_bytes_published_directly_come_out_unchanged(
        amqp_url: str, queue_name: str, raw_channel: amqp.Channel) -> None:
    with AmqpBroker(amqp_url) as broker:
        # an empty claim declares the queue with qscale's arguments (stats only reads)
        assert broker.claim([queue_name], 1, timeout=0.1) == []
        garbage = b"\xff\xfe\x00{not json"
        raw_channel.basic_publish(amqp.Message(garbage), exchange="", routing_key=queue_name)
        # content_encoding must not make py-amqp decode the body behind our back
        raw_channel.basic_publish(amqp.Message(b"caf\xc3\xa9", content_encoding="utf-8"),
                                  exchange="", routing_key=queue_name)
        got = claim_exactly(broker, [queue_name], 2)
        assert [d.body for d in got] == [garbage, b"caf\xc3\xa9"]
        for d in got:
            broker.dead_letter(d, "bad_message", "not JSON")
        assert [x.body for x in broker.dead_letters(queue_name)] == [garbage, b"caf\xc3\xa9"]


def _connection_named(api: str, name: str) -> str | None:
    for conn in api_get(api, "/api/connections?columns=name,client_properties"):
        props = conn.get("client_properties")
        if isinstance(props, dict) and props.get("connection_name") == name:
            return str(conn["name"])
    return None


def test_reconnects_after_the_connection_is_force_closed(
        amqp_url: str, rabbitmq_api: str, queue_name: str) -> None:
    with AmqpBroker(amqp_url, consumer_id=f"kill-{queue_name}") as broker:
        try:
            broker.publish_many(queue_name, [b"a", b"b"])
            held = claim_exactly(broker, [queue_name], 2)
            name = f"qscale kill-{queue_name}"
            found: list[str] = []

            def listed() -> bool:
                found[:] = [c for c in [_connection_named(rabbitmq_api, name)] if c]
                return bool(found)

            wait_until(listed, 30, "the broker's connection in the management API")
            api_request(rabbitmq_api, f"/api/connections/{quote(found[0], safe='')}",
                        method="DELETE")
            with pytest.raises(BrokerUnavailable):
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    broker.claim([queue_name], 10, 0.5)
            assert not broker.connected()
            again: list[Delivery] = []
            deadline = time.monotonic() + 30
            while len(again) < 2 and time.monotonic() < deadline:
                try:
                    again += broker.claim([queue_name], 10, 1.0)
                except BrokerUnavailable:
                    time.sleep(0.2)
            assert broker.connected()
            assert sorted(d.body for d in again) == [b"a", b"b"]
            assert all(d.redelivered for d in again)
            broker.ack(held)  # stale tags from the dead channel: skipped, no crash
            broker.retry_later(held[0], b"dup", 0)
            broker.dead_letter(held[1], "failure")
            broker.ack(again)
            assert broker.claim([queue_name], 10, 0.5) == []
            assert broker.stats(queue_name).dead == 0
        finally:
            cleanup(amqp_url, queue_name)


def test_unreachable_rabbitmq_raises_broker_unavailable() -> None:
    broker = AmqpBroker("amqp://qscale:qscale@127.0.0.1:1//")
    assert not broker.connected()
    with pytest.raises(BrokerUnavailable):
        broker.publish("q", b"x")
    with pytest.raises(BrokerUnavailable):
        broker.claim(["q"], 1, 0.1)
    broker.close()


def test_stats_without_management_api_reports_unknown_in_flight(
        amqp_url: str, queue_name: str) -> None:
    with AmqpBroker(amqp_url, management_url="http://qscale:qscale@127.0.0.1:1") as broker:
        try:
            broker.publish(queue_name, b"x")
            stats = broker.stats(queue_name)
            assert (stats.ready, stats.in_flight, stats.delayed, stats.dead) == (1, None, 0, 0)
        finally:
            cleanup(amqp_url, queue_name)


def test_delayed_messages_are_counted(amqp_url: str, queue_name: str) -> None:
    with AmqpBroker(amqp_url) as broker:
        try:
            broker.publish(queue_name, b"x", delay=120)
            broker.publish(queue_name, b"y", delay=3600)
            wait_until(lambda: broker.stats(queue_name).delayed == 2, 20, "delayed == 2")
            assert broker.stats(queue_name).ready == 0
        finally:
            cleanup(amqp_url, queue_name)


def test_fixed_prefetch_bounds_unacked(amqp_url: str, queue_name: str) -> None:
    with AmqpBroker(amqp_url, prefetch=2) as broker:
        try:
            broker.publish_many(queue_name, [b"1", b"2", b"3", b"4"])
            held = claim_exactly(broker, [queue_name], 2)
            assert broker.claim([queue_name], 10, 0.5) == []
            broker.ack(held)
            assert len(claim_exactly(broker, [queue_name], 2)) == 2
        finally:
            cleanup(amqp_url, queue_name)


def test_automatic_window_shrinks_so_other_consumers_get_the_work(
        amqp_url: str, queue_name: str) -> None:
    """A window sized for 4 (before tasks turned out long, say) drops to the 1 the
    worker now asks for, so unstarted messages stay in RabbitMQ for other pods."""
    with AmqpBroker(amqp_url) as slow, AmqpBroker(amqp_url) as other:
        slow._window.shrink_after = 1.0
        try:
            assert slow.claim([queue_name], 4, 0.1) == []   # window 4
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline:               # now one at a time
                assert slow.claim([queue_name], 1, 0.1) == []
            slow.publish_many(queue_name, [b"%d" % i for i in range(6)])
            held = claim_exactly(slow, [queue_name], 1)
            time.sleep(0.5)  # a window of 4 would push 3 more to `slow` by now
            assert not slow.buffered()
            assert len(claim_exactly(other, [queue_name], 5)) == 5
            slow.ack(held)
        finally:
            cleanup(amqp_url, queue_name)


def test_foreign_queue_declaration_is_a_clear_error_for_its_consumers(
        amqp_url: str, queue_name: str, raw_channel: amqp.Channel) -> None:
    """e.g. a queue declared by a client with another QSCALE_MAX_PRIORITY: consuming it is
    a ConfigError naming the variable; publishing into it works as it is."""
    raw_channel.queue_declare(queue_name, durable=True, auto_delete=False,
                              arguments={"x-max-priority": 9})
    with AmqpBroker(amqp_url, max_priority=0) as broker:
        broker.publish(queue_name, b"x")
        with pytest.raises(ConfigError, match=r"QSCALE_MAX_PRIORITY.*other arguments"):
            broker.claim([queue_name], 1, 1.0)
        other = queue_name + "-ok"
        try:
            broker.publish(other, b"fine")
            assert [d.body for d in claim_exactly(broker, [other], 1)] == [b"fine"]
        finally:
            cleanup(amqp_url, other)


def test_wrong_credentials_are_a_config_error(amqp_url: str) -> None:
    with pytest.raises(ConfigError, match="credentials"):
        AmqpBroker(amqp_url.replace("qscale:qscale@", "qscale:wrong@"))


def test_priority_is_opt_in(amqp_url: str, queue_name: str,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain queues by default (priorities ignored, FIFO); QSCALE_MAX_PRIORITY turns
    them on for clients that get no explicit value (CLI, controller)."""
    prioritized = queue_name + "-prio"
    try:
        with AmqpBroker(amqp_url) as plain:
            assert plain.max_priority == 0
            plain.publish(queue_name, b"first", priority=0)
            plain.publish(queue_name, b"second", priority=9)
            got = claim_exactly(plain, [queue_name], 2)
            assert [d.body for d in got] == [b"first", b"second"]
            plain.ack(got)
        monkeypatch.setenv("QSCALE_MAX_PRIORITY", "5")
        with AmqpBroker(amqp_url) as opted:
            assert opted.max_priority == 5
            opted.publish(prioritized, b"low", priority=1)
            opted.publish(prioritized, b"high", priority=5)
            got = claim_exactly(opted, [prioritized], 2)
            assert [d.body for d in got] == [b"high", b"low"]
            opted.ack(got)
        monkeypatch.setenv("QSCALE_MAX_PRIORITY", "ten")
        with pytest.raises(ConfigError, match=r"^QSCALE_MAX_PRIORITY: must be an integer"):
            AmqpBroker(amqp_url)
    finally:
        cleanup(amqp_url, queue_name)
        cleanup(amqp_url, prioritized)
