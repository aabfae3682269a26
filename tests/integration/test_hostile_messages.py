"""A hostile producer cannot take a worker down, strand its work or grow its memory.

Each test publishes something a real worker (a `python -m worker run` process on the
real broker) must survive: it dead-letters the message with the reason, records
FAILURE for whoever waits, and keeps serving the canary tasks published after it.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import pytest
import redis

from tests import runtime_tasks as rt
from tests.rabbitmq_api import api_request
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until
from worker.brokers import open_broker
from worker.envelope import Envelope
from worker.results import FAILURE, SUCCESS, ResultStore

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def _raw(url: str, queue: str, body: bytes) -> None:
    with open_broker(url) as b:
        b.publish(queue, body)


def _canary_runs(worker: WorkerProcess, url: str, queue: str, key: str) -> None:
    """A task published after the hostile one still runs, and the worker stayed up."""
    [canary] = publish(url, queue, "rt.record", [[key]])
    wait_until(lambda: canary in rt.runs(key), 20, "the canary task", worker)
    worker.check_alive()
    assert worker.get("/healthz")[0] == 200


def _envelope(task: str, args: list[Any], **fields: Any) -> dict[str, Any]:
    doc = Envelope.create(task, args, task_id=Envelope.new_id()).to_json()
    doc.update(fields)
    return doc


@pytest.mark.parametrize("body", [
    b"[" * 5000,
    b'{"v":1,"id":"n1","task":"rt.record","args":' + b"[" * 5000 + b"]" * 5000 + b"}",
], ids=["nested-brackets", "nested-args"])
def test_deeply_nested_json_is_dead_lettered_and_the_worker_lives(
        broker_url: str, redis_url: str, queue_name: str, body: bytes) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        _raw(broker_url, queue_name, body)
        with broker(broker_url) as b:
            [dead] = wait_until(lambda: b.dead_letters(queue_name), 20, "the DLQ", worker)
        assert dead.body == body
        assert "nested" in dead.reason or "malformed" in dead.reason, dead.reason
        _canary_runs(worker, broker_url, queue_name, key)
    finally:
        worker.stop()


@pytest.mark.parametrize("field", ["first_enqueued_at", "deadline", "enqueued_at"])
def test_non_finite_numbers_never_reach_a_retry(broker_url: str, redis_url: str,
                                                queue_name: str, field: str) -> None:
    """NaN/Infinity parse in Python's json; re-encoding the retry refuses them."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url,
                           retry_backoff_base=0.05).start()
    try:
        worker.wait_ready()
        doc = _envelope("rt.fail_retry", [key])
        doc[field] = 1.5
        body = json.dumps(doc).replace(f'"{field}": 1.5', f'"{field}": NaN').encode()
        assert b"NaN" in body
        _raw(broker_url, queue_name, body)
        with broker(broker_url) as b:
            [dead] = wait_until(lambda: b.dead_letters(queue_name), 20, "the DLQ", worker)
        assert field in dead.reason, dead.reason
        assert ResultStore(redis_url).fetch(doc["id"])["status"] == FAILURE
        _canary_runs(worker, broker_url, queue_name, key)
    finally:
        worker.stop()


@pytest.mark.parametrize("step", [
    {"priority": 42}, {"priority": True}, {"queue": "q" * 300},
], ids=["priority-42", "priority-bool", "queue-300-bytes"])
def test_a_chain_step_a_broker_would_refuse_fails_the_chain_without_flapping(
        broker_url: str, redis_url: str, queue_name: str, step: dict[str, Any]) -> None:
    """Refused by decode, so never sent: FAILURE for the steps, nothing left claimed."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        doc = _envelope("rt.value", [key, 1], queue=queue_name,
                        link=[{"task": "rt.collect", "args": [key], "task_id": "last-" + key,
                               **step}])
        _raw(broker_url, queue_name, json.dumps(doc).encode())
        store = ResultStore(redis_url)
        last = wait_until(lambda: store.fetch("last-" + key), 20, "the last step's result",
                          worker)
        assert last["status"] == FAILURE
        assert store.fetch(doc["id"])["status"] == FAILURE
        _canary_runs(worker, broker_url, queue_name, key)
        with broker(broker_url) as b:
            wait_until(lambda: b.stats(queue_name).in_flight == 0, 15, "nothing claimed")
        assert "in a row" not in worker.log()
    finally:
        worker.stop()


@pytest.mark.redis
def test_a_publish_redis_refuses_is_permanent_for_that_message(
        redis_url: str, queue_name: str) -> None:
    """The next step's queue key holds a string (WRONGTYPE): the chain ends in FAILURE,
    the first step is settled once, and the link never treats it as a lost connection."""
    key = f"rt:{queue_name}"
    target = f"{queue_name}-x"
    from worker.brokers.redis import ready_key
    r = redis.Redis.from_url(redis_url)
    r.set(ready_key(target), b"not a list")
    worker = WorkerProcess(redis_url, queue_name).start()
    try:
        worker.wait_ready()
        doc = _envelope("rt.value", [key, 1], queue=queue_name,
                        link=[{"task": "rt.collect", "args": [key], "queue": target,
                               "task_id": "last-" + key}])
        _raw(redis_url, queue_name, json.dumps(doc).encode())
        store = ResultStore(redis_url)
        last = wait_until(lambda: store.fetch("last-" + key), 20, "the last step's result",
                          worker)
        assert last["status"] == FAILURE
        assert "refused" in last["error"]["message"], last
        assert store.fetch(doc["id"])["status"] == SUCCESS
        _canary_runs(worker, redis_url, queue_name, key)
        with broker(redis_url) as b:
            wait_until(lambda: b.stats(queue_name).in_flight == 0, 15, "nothing claimed")
        assert rt.runs(key)[doc["id"]] == 1
        assert "in a row" not in worker.log()
    finally:
        r.delete(ready_key(target))
        worker.stop()


@pytest.mark.rabbitmq
def test_a_step_into_a_queue_declared_with_other_arguments_is_published(
        amqp_url: str, redis_url: str, queue_name: str, rabbitmq_api: str) -> None:
    """A priority queue next to our classic one (RabbitMQ: PRECONDITION_FAILED on a
    redeclare): the step goes into the existing queue; the worker's connection and
    the deliveries it holds are untouched."""
    key = f"rt:{queue_name}"
    other = f"{queue_name}-prio"
    with open_broker(amqp_url, max_priority=5) as prio:
        prio.publish(other, Envelope.create("rt.noop", queue=other).encode(), priority=1)
    worker = WorkerProcess(amqp_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        ids = publish(amqp_url, queue_name, "rt.sleep_record", [[key, 0.5]] * 2)
        doc = _envelope("rt.value", [key, 1], queue=queue_name,
                        link=[{"task": "rt.noop", "queue": other, "task_id": "step-" + key}])
        _raw(amqp_url, queue_name, json.dumps(doc).encode())
        wait_until(lambda: set(ids) | {doc["id"]} <= set(rt.runs(key)), 20, "the tasks",
                   worker)
        with open_broker(amqp_url, max_priority=5) as prio:
            wait_until(lambda: prio.stats(other).ready == 2, 10, "the step in the queue")
        runs = rt.runs(key)
        assert all(runs[i] == 1 for i in [*ids, doc["id"]]), runs
        assert "in a row" not in worker.log(), worker.log()[-3000:]
    finally:
        worker.stop()
        api_request(rabbitmq_api, f"/api/queues/%2F/{other}", method="DELETE", ok_missing=True)


def test_unknown_task_names_do_not_grow_metrics_or_state(broker_url: str, redis_url: str,
                                                         queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()
        with open_broker(broker_url) as b:
            b.publish_many(queue_name, [Envelope.create(f"hostile.name.{i}", queue=queue_name)
                                        .encode() for i in range(300)])
            wait_until(lambda: b.stats(queue_name).dead == 300, 30, "300 dead letters",
                       worker)
        _canary_runs(worker, broker_url, queue_name, key)
        metrics = worker.get("/metrics")[1].decode()
        assert not re.search(r"hostile\.name", metrics)
        assert 'task="unregistered"' in metrics
        state = worker.state()
        assert not any(name.startswith("hostile") for name in state["service_time_by_task"])
    finally:
        worker.stop()


def test_supervisor_memory_stays_bounded_under_hostile_names(
        broker_url: str, redis_url: str, queue_name: str) -> None:
    worker = WorkerProcess(broker_url, queue_name, result_url=redis_url).start()
    try:
        worker.wait_ready()

        def rss_kb() -> int:
            with open(f"/proc/{worker.pid}/status") as status:
                return int(next(line for line in status if line.startswith("VmRSS")).split()[1])

        def flood(start: int) -> None:
            with open_broker(broker_url) as b:
                b.publish_many(queue_name, [
                    Envelope.create(f"hostile.{os.urandom(8).hex()}.{i}", queue=queue_name)
                    .encode() for i in range(start, start + 2000)])
                wait_until(lambda: b.stats(queue_name).dead >= start + 2000, 60, "the flood",
                           worker)

        flood(0)
        before = rss_kb()
        flood(2000)
        flood(4000)
        grown = rss_kb() - before
        assert grown < 2048, f"supervisor RSS grew {grown} KiB over 4,000 unknown names"
    finally:
        worker.stop()
