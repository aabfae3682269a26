"""The task API against a real `python -m worker run` (supervisor + child processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import apitasks
from tests.runtime_harness import WorkerProcess
from worker import Client, RemoteError, chain, chord, group

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


@pytest.fixture
def client(broker_url: str, redis_url: str) -> Iterator[Client]:
    with Client(broker_url, result_url=redis_url) as producer:
        yield producer


@pytest.fixture
def worker(broker_url: str, redis_url: str, queue_name: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(broker_url, queue_name, imports="tests.apitasks",
                            result_url=redis_url, retry_backoff_base=0.1,
                            retry_backoff_max=0.5).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def test_round_trip_workflows_and_errors_through_a_real_worker(
        client: Client, worker: WorkerProcess, queue_name: str) -> None:
    q = queue_name
    single = apitasks.add.apply_async((20, 22), queue=q, client=client)
    flaky = apitasks.flaky.apply_async((2,), queue=q, client=client)
    failing = apitasks.custom_fail.apply_async(("boom from the worker",), queue=q,
                                               client=client)
    too_slow = apitasks.sleepy.apply_async((30,), queue=q, client=client)
    piped = chain(apitasks.add.s(1, 2).set(queue=q), apitasks.mul.s(10).set(queue=q)
                  ).apply_async(client=client)
    scattered = group(apitasks.mul.s(i, 2).set(queue=q) for i in range(8)).apply_async(
        client=client)
    reduced = chord([apitasks.add.s(i, 1).set(queue=q) for i in range(10)],
                    apitasks.total.s().set(queue=q)).apply_async(client=client)

    assert single.get(timeout=30) == 42
    assert flaky.get(timeout=30) == 3  # two retries waited in the broker, third attempt won
    assert piped.get(timeout=30) == 30
    assert scattered.get(timeout=30) == [i * 2 for i in range(8)]
    assert reduced.get(timeout=30) == sum(range(1, 11))
    with pytest.raises(RemoteError, match="boom from the worker") as caught:
        failing.get(timeout=30)
    assert "in custom_fail" in caught.value.remote_traceback
    with pytest.raises(RemoteError, match=r"soft time limit of 0\.3s exceeded") as slow:
        too_slow.get(timeout=30)
    assert type(slow.value).__name__ == "SoftTimeLimitExceeded"


def test_hard_killed_task_resumes_from_its_checkpoint(
        client: Client, worker: WorkerProcess, queue_name: str) -> None:
    result = apitasks.stuck_once.apply_async((queue_name,), queue=queue_name, client=client)
    value = result.get(timeout=60)
    assert value["attempt"] == 2
    assert value["resumed"]["marker"] == queue_name
    assert value["resumed"]["pid"] != value["pid"]  # a fresh child ran the retry
    assert worker.state()["child_restarts"].get("hard_time_limit", 0) >= 1
