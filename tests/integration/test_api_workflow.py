"""chain / group / chord end to end on real brokers, with the real executor."""

from __future__ import annotations

import pytest

from tests import apitasks
from tests.apitasks import drain
from worker import Client, RemoteError, ResultsDisabled, chain, chord, group
from worker.brokers import Broker
from worker.runtime.executor import Executor
from worker.settings import load_settings

pytestmark = [pytest.mark.redis]


@pytest.fixture
def executor(broker_url: str, redis_url: str) -> Executor:
    return Executor(load_settings(broker_url=broker_url, result_url=redis_url))


def test_chain_prepends_each_result(client: Client, worker_broker: Broker, executor: Executor,
                                    queue_name: str) -> None:
    q = queue_name
    flow = chain(apitasks.add.s(1, 2).set(queue=q), apitasks.mul.s(10).set(queue=q),
                 apitasks.echo.s("tail", key="v").set(queue=q))
    result = flow.apply_async(client=client)
    outcomes = drain(worker_broker, [q], executor, until=result.ready)
    assert [o.task for o in outcomes] == ["apitasks.add", "apitasks.mul", "apitasks.echo"]
    assert result.get(timeout=5) == {"args": [30, "tail"], "kwargs": {"key": "v"}}


def test_immutable_signature_ignores_the_previous_result(
        client: Client, worker_broker: Broker, executor: Executor, queue_name: str) -> None:
    q = queue_name
    result = (apitasks.add.s(1, 2).set(queue=q) | apitasks.add.si(5, 5).set(queue=q)
              ).apply_async(client=client)
    drain(worker_broker, [q], executor, until=result.ready)
    assert result.get(timeout=5) == 10


def test_chain_stops_at_a_failed_step(client: Client, worker_broker: Broker,
                                      executor: Executor, queue_name: str) -> None:
    q = queue_name
    result = chain(apitasks.key_fail.s().set(queue=q), apitasks.add.s(1).set(queue=q)
                   ).apply_async(client=client)
    outcomes = drain(worker_broker, [q], executor, until=result.ready)
    assert [o.status for o in outcomes] == ["failure"]
    assert worker_broker.stats(q).dead == 1
    with pytest.raises(RemoteError) as caught:
        result.get(timeout=5)
    assert type(caught.value).__name__ == "ChainError"
    assert "apitasks.add did not run: KeyError: 'missing-key'" in str(caught.value)


def test_group_returns_results_in_order(client: Client, worker_broker: Broker,
                                        executor: Executor, queue_name: str) -> None:
    q = queue_name
    results = group(apitasks.mul.s(i, i).set(queue=q) for i in range(6)).apply_async(
        client=client)
    drain(worker_broker, [q], executor, until=results.ready)
    assert results.get(timeout=5) == [i * i for i in range(6)]
    assert results.completed_count() == 6 and len(results) == 6


def test_chord_runs_the_callback_once_with_all_results(
        client: Client, worker_broker: Broker, executor: Executor, queue_name: str) -> None:
    q = queue_name
    header = group(apitasks.add.s(i, i).set(queue=q) for i in range(5))
    result = chord(header, apitasks.total.s(extra=1).set(queue=q)).apply_async(client=client)
    outcomes = drain(worker_broker, [q], executor, until=result.ready)
    assert [o.task for o in outcomes].count("apitasks.total") == 1
    assert result.get(timeout=5) == sum(2 * i for i in range(5)) + 1


def test_chains_as_group_and_chord_members(client: Client, worker_broker: Broker,
                                           executor: Executor, queue_name: str) -> None:
    q = queue_name

    def pipeline(i: int) -> chain:
        return chain(apitasks.add.s(i, 1).set(queue=q), apitasks.mul.s(3).set(queue=q))

    scattered = group(pipeline(i) for i in range(4)).apply_async(client=client)
    reduced = chord([pipeline(i) for i in range(4)], apitasks.total.s().set(queue=q)
                    ).apply_async(client=client)
    drain(worker_broker, [q], executor, until=lambda: scattered.ready() and reduced.ready())
    assert scattered.get(timeout=5) == [(i + 1) * 3 for i in range(4)]
    assert reduced.get(timeout=5) == sum((i + 1) * 3 for i in range(4))


def test_chord_member_in_the_dlq_fails_the_chord_clearly(
        client: Client, worker_broker: Broker, executor: Executor, queue_name: str) -> None:
    q = queue_name
    header = [apitasks.add.s(1, 1).set(queue=q), apitasks.key_fail.s().set(queue=q)]
    result = chord(header, apitasks.total.s().set(queue=q)).apply_async(client=client)
    drain(worker_broker, [q], executor, until=result.ready)
    with pytest.raises(RemoteError) as caught:
        result.get(timeout=5)
    assert type(caught.value).__name__ == "ChordError"
    assert "chord member 1 of 2 (apitasks.key_fail" in str(caught.value)
    assert "KeyError" in str(caught.value)
    assert worker_broker.stats(q).dead == 1


def test_empty_chord_calls_back_with_an_empty_list(
        client: Client, worker_broker: Broker, executor: Executor, queue_name: str) -> None:
    result = chord([], apitasks.total.s().set(queue=queue_name)).apply_async(client=client)
    drain(worker_broker, [queue_name], executor, until=result.ready)
    assert result.get(timeout=5) == 0


def test_chord_needs_a_result_store(amqp_url: str) -> None:
    producer = Client(amqp_url, result_url="")
    with pytest.raises(ResultsDisabled, match="chords need a result store"):
        chord([apitasks.add.s(1, 1)], apitasks.total.s()).apply_async(client=producer)
