"""Producer API end to end: delay → real broker → executor → result store → get()."""

from __future__ import annotations

import pytest

from tests import apitasks
from tests.apitasks import drain, wait_for
from worker import Client, RemoteError, ResultsDisabled, ResultTimeout, configure, get_client
from worker.brokers import Broker
from worker.runtime.executor import Executor
from worker.settings import load_settings

pytestmark = [pytest.mark.redis]


@pytest.fixture
def executor(broker_url: str, redis_url: str) -> Executor:
    return Executor(load_settings(broker_url=broker_url, result_url=redis_url,
                                  retry_backoff_base=0.05, retry_backoff_max=0.2))


def test_delay_and_get_round_trip(client: Client, worker_broker: Broker, executor: Executor,
                                  queue_name: str) -> None:
    result = apitasks.add.apply_async((20, 22), queue=queue_name, client=client)
    assert result.status == "PENDING" and not result.ready()
    drain(worker_broker, [queue_name], executor, until=result.ready)
    assert result.get(timeout=5) == 42
    assert result.successful() and result.status == "SUCCESS"
    assert apitasks.add(1, 2) == 3  # a direct call still runs locally


def test_remote_builtin_exception_is_reraised_with_message_and_traceback(
        client: Client, worker_broker: Broker, executor: Executor, queue_name: str) -> None:
    result = apitasks.key_fail.apply_async(queue=queue_name, client=client)
    drain(worker_broker, [queue_name], executor, until=result.ready)
    with pytest.raises(KeyError) as caught:
        result.get(timeout=5)
    assert isinstance(caught.value, RemoteError)
    text = str(caught.value)
    assert text.startswith("KeyError: 'missing-key'")
    assert "Remote traceback:" in text and "in key_fail" in text
    assert result.failed() and "in key_fail" in (result.traceback or "")


def test_remote_custom_exception_gets_a_named_remote_class(
        client: Client, worker_broker: Broker, executor: Executor, queue_name: str) -> None:
    result = apitasks.custom_fail.apply_async(("custom boom",), queue=queue_name, client=client)
    drain(worker_broker, [queue_name], executor, until=result.ready)
    with pytest.raises(RemoteError) as caught:
        result.get(timeout=5)
    error = caught.value
    assert type(error).__name__ == "CustomError"
    assert error.remote_type == "tests.apitasks.CustomError"
    assert error.remote_message == "custom boom"
    assert "raise CustomError(text)" in error.remote_traceback
    assert not isinstance(error, apitasks.CustomError)  # never the real class: nothing unpickled


def test_get_times_out_on_a_pending_task(client: Client, queue_name: str) -> None:
    result = apitasks.add.apply_async((1, 1), queue=queue_name, client=client)
    with pytest.raises(ResultTimeout, match=r"not finished after 0\.2s"):
        result.get(timeout=0.2)


def test_retry_waits_in_the_broker_then_succeeds(client: Client, worker_broker: Broker,
                                                 executor: Executor, queue_name: str) -> None:
    result = apitasks.retry_after.apply_async((8.0,), queue=queue_name, client=client)
    first = drain(worker_broker, [queue_name], executor,
                  until=lambda: result.status == "RETRY")
    assert [(o.status, o.retry_delay) for o in first] == [("retry", 8.0)]
    # the retry waits in the broker (not in worker memory) until its delay is over
    wait_for(lambda: worker_broker.stats(queue_name).delayed == 1, 7, "stats().delayed == 1")
    drain(worker_broker, [queue_name], executor, until=result.ready)
    assert result.get(timeout=5) == 2


def test_dead_letter_keeps_reason_and_traceback(client: Client, worker_broker: Broker,
                                                executor: Executor, queue_name: str) -> None:
    result = apitasks.wrong_kind.apply_async(queue=queue_name, client=client)
    drain(worker_broker, [queue_name], executor, until=result.ready)
    [dead] = worker_broker.dead_letters(queue_name)
    assert dead.reason == "ValueError: not a connection problem"
    assert "in wrong_kind" in dead.detail
    with pytest.raises(ValueError, match="not a connection problem"):
        result.get(timeout=5)


def test_expired_task_is_not_run(client: Client, worker_broker: Broker, executor: Executor,
                                 queue_name: str) -> None:
    result = apitasks.add.apply_async((1, 2), queue=queue_name, expires=-1, client=client)
    outcomes = drain(worker_broker, [queue_name], executor, until=result.ready)
    assert [o.status for o in outcomes] == ["expired"]
    with pytest.raises(RemoteError, match="deadline passed"):
        result.get(timeout=5)


def test_results_disabled_with_amqp_and_no_result_url(amqp_url: str) -> None:
    producer = Client(amqp_url, result_url="")
    assert producer.results is None
    handle = producer.async_result("some-id")
    with pytest.raises(ResultsDisabled, match="QSCALE_RESULT_URL"):
        handle.get(timeout=1)


def test_configure_replaces_the_default_client(redis_url: str, queue_name: str) -> None:
    configured = configure(broker_url=redis_url, result_url=redis_url)
    try:
        assert get_client() is configured
        handle = apitasks.add.apply_async((1, 2), queue=queue_name)
        assert configured.broker.stats(queue_name).ready == 1
        assert handle.status == "PENDING"
    finally:
        configured.broker.purge_dead(queue_name)
        configure(client=Client(redis_url))
