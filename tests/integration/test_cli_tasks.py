"""`python -m worker enqueue | dlq | status` as a user runs them, against real brokers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.apitasks import drain, wait_for
from worker.brokers import Broker, open_broker
from worker.runtime.executor import Executor
from worker.settings import load_settings

pytestmark = [pytest.mark.redis]


def run_cli(broker_url: str, *argv: str, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "QSCALE_BROKER_URL": broker_url,
           "QSCALE_IMPORTS": "tests.apitasks", "QSCALE_QUEUES": "default", **extra}
    return subprocess.run([sys.executable, "-m", "worker", *argv], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


@pytest.fixture
def broker(broker_url: str) -> Iterator[Broker]:
    with open_broker(broker_url) as connection:
        yield connection


def test_enqueue_one_prints_its_id(broker_url: str, broker: Broker, queue_name: str) -> None:
    done = run_cli(broker_url, "enqueue", "apitasks.add", "--args", "[1, 2]",
                   "--queue", queue_name)
    assert done.returncode == 0, done.stderr
    task_id = done.stdout.strip()
    assert len(task_id) == 32
    [delivery] = broker.claim([queue_name], 5, timeout=2)
    body = json.loads(delivery.body)
    assert (body["id"], body["task"], body["args"]) == (task_id, "apitasks.add", [1, 2])
    broker.ack([delivery])


def test_enqueue_bulk_shows_progress_and_lands_every_message(
        broker_url: str, broker: Broker, queue_name: str) -> None:
    done = run_cli(broker_url, "enqueue", "apitasks.add", "--args", "[1, 2]",
                   "--count", "1200", "--queue", queue_name)
    assert done.returncode == 0, done.stderr
    assert "1200/1200 100%" in done.stderr and "msg/s" in done.stderr
    assert done.stdout.startswith(f"enqueued 1200 messages to {queue_name}")
    assert broker.stats(queue_name).ready == 1200
    while claimed := broker.claim([queue_name], 500, timeout=0.5):
        broker.ack(claimed)


@pytest.mark.parametrize(("argv", "message"), [
    (["--args", "{"], "--args is not valid JSON"),
    (["--args", "{}"], "--args must be a JSON list"),
    (["--kwargs", "[]"], "--kwargs must be a JSON object"),
    (["--count", "0"], "--count must be >= 1"),
])
def test_enqueue_rejects_bad_input_in_one_line(broker_url: str, argv: list[str],
                                               message: str) -> None:
    done = run_cli(broker_url, "enqueue", "apitasks.add", *argv)
    assert done.returncode == 2
    assert message in done.stderr and done.stderr.count("\n") == 1


def test_dlq_list_requeue_purge(broker_url: str, redis_url: str, broker: Broker,
                                queue_name: str) -> None:
    for _ in range(3):
        done = run_cli(broker_url, "enqueue", "apitasks.wrong_kind", "--queue", queue_name)
        assert done.returncode == 0, done.stderr
    broker.publish(queue_name, b"this is not json")
    executor = Executor(load_settings(broker_url=broker_url, result_url=redis_url))
    drain(broker, [queue_name], executor, until=lambda: broker.stats(queue_name).dead == 4)

    listed = run_cli(broker_url, "dlq", "list", "--queue", queue_name)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0].split() == ["FAILED_AT", "TASK", "ID", "REASON"]
    assert listed.stdout.count("apitasks.wrong_kind") == 3
    assert "ValueError: not a connection problem" in listed.stdout
    assert "malformed JSON" in listed.stdout and "4 dead letter(s)" in listed.stdout
    as_json = run_cli(broker_url, "dlq", "list", "--queue", queue_name, "--json", "--limit", "2")
    rows = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert len(rows) == 2 and {"failed_at", "task", "id", "reason", "detail"} <= set(rows[0])

    requeued = run_cli(broker_url, "dlq", "requeue", "--queue", queue_name, "--limit", "1")
    assert requeued.stdout.strip() == f"requeued 1 messages to {queue_name}"
    assert broker.stats(queue_name).dead == 3
    [back] = broker.claim([queue_name], 5, timeout=5)
    assert back.body == b"this is not json" or b'"apitasks.wrong_kind"' in back.body
    broker.ack([back])

    refused = run_cli(broker_url, "dlq", "purge", "--queue", queue_name)
    assert refused.returncode == 2 and "add --yes" in refused.stderr
    purged = run_cli(broker_url, "dlq", "purge", "--queue", queue_name, "--yes")
    assert purged.stdout.strip() == f"purged 3 dead letters of {queue_name}"
    assert broker.stats(queue_name).dead == 0


def test_status_table_and_json(broker_url: str, queue_name: str) -> None:
    with open_broker(broker_url) as broker:
        for _ in range(3):
            broker.publish(queue_name, b"{}")
        broker.publish(queue_name, b"{}", delay=60)
        claimed = broker.claim([queue_name], 1, timeout=2)
        broker.dead_letter(claimed[0], "test reason")
    # closed: anything the connection had prefetched is ready again

    def table_row() -> list[str] | None:
        table = run_cli(broker_url, "status", "--queue", queue_name)
        assert table.returncode == 0, table.stderr
        header, row = table.stdout.splitlines()[:2]
        assert header.split() == ["QUEUE", "READY", "IN_FLIGHT", "DELAYED", "DEAD"]
        return row.split() if row.split() == [queue_name, "2", "0", "1", "1"] else None

    wait_for(table_row, 20, "status row ready=2 in_flight=0 delayed=1 dead=1")
    raw = run_cli(broker_url, "status", "--queue", queue_name, "--json",
                  "--workers", "http://127.0.0.1:9")
    report = json.loads(raw.stdout)
    assert report["queues"] == [{"queue": queue_name, "ready": 2, "in_flight": 0,
                                 "delayed": 1, "dead": 1}]
    assert "error" in report["workers"][0] and report["busy"] is None
    assert "qscale:" not in report["broker"] or "***" in report["broker"]
    with open_broker(broker_url) as broker:
        broker.purge_dead(queue_name)


def test_bad_broker_url_is_a_one_line_error(queue_name: str) -> None:
    done = run_cli("ftp://nowhere", "status", "--queue", queue_name)
    assert done.returncode == 2
    assert done.stderr.startswith("qscale-worker: QSCALE_BROKER_URL:")


def test_dlq_requeue_gives_a_failed_task_a_second_chance(
        broker_url: str, redis_url: str, broker: Broker, queue_name: str) -> None:
    """The operator's fix: `dlq requeue` reopens the FAILURE it recorded, so the task can
    end SUCCESS after the fix is deployed (a duplicate run, without the requeue, cannot)."""
    from tests import apitasks
    from worker import Client

    executor = Executor(load_settings(broker_url=broker_url, result_url=redis_url))
    with Client(broker_url, result_url=redis_url) as client:
        handle = apitasks.fixable.apply_async([7], queue=queue_name, client=client)
        apitasks.FIXED["on"] = False
        drain(broker, [queue_name], executor, until=lambda: broker.stats(queue_name).dead == 1)
        assert handle.status == "FAILURE"
        apitasks.FIXED["on"] = True
        try:
            done = run_cli(broker_url, "dlq", "requeue", "--queue", queue_name,
                           QSCALE_RESULT_URL=redis_url)
            assert done.returncode == 0, done.stderr
            assert handle.status == "PENDING"
            drain(broker, [queue_name], executor, until=handle.ready)
            assert handle.get(timeout=5) == 7
        finally:
            apitasks.FIXED["on"] = False
