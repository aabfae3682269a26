"""Adversarial review of issue #9 (RabbitMQ): hostile messages that still wedge a worker.

Each test publishes one message a hostile producer can send, then a canary. The
promise under test: the hostile message is dead-lettered (or run) once, the canary
runs, and the worker's connection does not flap ("... in a row" in its log).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import amqp
import pytest

from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until
from worker.brokers import open_broker
from worker.envelope import Envelope

pytestmark = [pytest.mark.rabbitmq]


def _canary_runs(worker: WorkerProcess, url: str, queue: str, key: str) -> None:
    [canary] = publish(url, queue, "rt.record", [[key]])
    wait_until(lambda: canary in rt.runs(key), 20, "the canary task", worker)
    worker.check_alive()


def _doc(task: str, args: list[Any], **fields: Any) -> dict[str, Any]:
    doc = Envelope.create(task, args, task_id=Envelope.new_id()).to_json()
    doc.update(fields)
    return doc


@pytest.mark.parametrize("make", [
    # decode's reason quotes the value: "unsupported envelope version 'vvvv...'"
    lambda key: {**_doc("rt.record", [key]), "v": "v" * 150_000},
    # bind's TypeError quotes the key: "bad arguments: got an unexpected keyword ..."
    lambda key: _doc("rt.record", [key], kwargs={"k" * 150_000: 1}),
], ids=["huge-version-field", "huge-kwarg-name"])
def test_a_dead_letter_reason_larger_than_a_frame_does_not_flap_the_connection(
        amqp_url: str, redis_url: str, queue_name: str, make: Any) -> None:
    """The dead-letter reason travels in an AMQP header (x-qscale-reason). A reason over
    frame_max (128 KiB) makes RabbitMQ close the whole connection (FRAME_ERROR
    frame_too_large): the message comes back, fails the same way, forever; every
    delivery the worker holds is requeued each time. The body is < 1 MiB."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(amqp_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        body = json.dumps(make(key)).encode()
        assert len(body) < 1 << 20
        with open_broker(amqp_url) as b:
            b.publish(queue_name, body)
            wait_until(lambda: b.stats(queue_name).dead == 1, 20, "the dead letter", worker)
        _canary_runs(worker, amqp_url, queue_name, key)
        assert "in a row" not in worker.log(), worker.log()[-2000:]
    finally:
        worker.stop()


def _nested_headers(depth: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for _ in range(depth):
        table = {"a": table}
    return table


@pytest.mark.parametrize("properties", [
    lambda: {"content_type": b"\xff\xfe"},                   # UnicodeDecodeError
    lambda: {"application_headers": _nested_headers(3000)},   # RecursionError
], ids=["content-type-not-utf8", "headers-nested-3000"])
def test_a_message_whose_properties_py_amqp_cannot_decode_is_not_a_poison_pill(
        amqp_url: str, redis_url: str, queue_name: str, properties: Any) -> None:
    """A valid envelope, published with properties py-amqp cannot decode (a content-type
    that is not UTF-8; a header table nested 3,000 deep - the nested-`[` crash again,
    in py-amqp's recursive table reader) and a body over one frame (so py-amqp, not
    the fast path, parses the header; redelivered quorum deliveries and TLS always go
    that way). The error escapes AmqpBroker._op (not a connection error) out of
    claim(); BrokerLink counts it as a lost connection, the reconnect gets the same
    message again: it never runs, never reaches the DLQ, and the worker reconnects
    every ~0.75 s for ever (classic queues have no delivery limit)."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(amqp_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        env = Envelope.create("rt.value", [key, "x" * 200_000], queue=queue_name)
        conn = amqp.Connection("127.0.0.1:5672", userid="qscale", password="qscale")
        conn.connect()
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(50_000)  # py-amqp writes nested tables recursively too
        try:
            conn.channel().basic_publish(
                amqp.Message(env.encode(), delivery_mode=2, **properties()),
                exchange="", routing_key=queue_name)
        finally:
            sys.setrecursionlimit(limit)
            conn.close()

        def settled() -> bool:
            with broker(amqp_url) as b:
                return env.id in rt.runs(key) or b.stats(queue_name).dead == 1
        wait_until(settled, 20, "the message run or dead-lettered", worker)
        _canary_runs(worker, amqp_url, queue_name, key)
        assert "in a row" not in worker.log(), worker.log()[-2000:]
    finally:
        worker.stop()


def test_a_task_longer_than_rabbitmqs_consumer_timeout_is_named_for_what_it_is(
        redis_url: str, queue_name: str) -> None:
    """RabbitMQ closes a consumer channel whose delivery stays unacked longer than
    `consumer_timeout` (30 min by default since 3.8.15) and requeues everything it
    held: the task starts again while it still runs. Nothing a client can do extends
    it (RabbitMQ 3.10 has no per-consumer timeout): the chart sets it (24 h,
    rabbitmq.consumerTimeoutMs) and the worker says what happened - it used to report
    a ConfigError about queue arguments. A private node with consumer_timeout = 3 s
    (checked about once a minute)."""
    from tests.checker.brokers import PrivateRabbit

    node = PrivateRabbit()
    with open(node.dir / "rabbitmq.conf", "a") as conf:
        conf.write("consumer_timeout = 3000\n")
    node.start()
    key = f"rt:{queue_name}"
    worker = WorkerProcess(node.url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        [task_id] = publish(node.url, queue_name, "rt.sleep_record", [[key, 70]])
        wait_until(lambda: "consumer_timeout closed the channel" in worker.log(), 150,
                   "the worker to say RabbitMQ's consumer_timeout struck", worker)
        wait_until(lambda: task_id in rt.runs(key), 150, "the long task to finish", worker)
        assert "ConfigError" not in worker.log(), worker.log()[-2000:]
        assert "other arguments" not in worker.log()
    finally:
        worker.stop()
        node.stop()
