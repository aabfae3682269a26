"""The executor against a real Redis result store, driven in-process with raw bodies."""

from __future__ import annotations

import json
import multiprocessing
import signal
import time

import pytest

from tests import apitasks
from worker.envelope import Envelope
from worker.results import FAILURE, RETRY, SUCCESS, ResultStore
from worker.runtime.executor import Executor
from worker.runtime.outcome import Settle
from worker.settings import WorkerSettings, load_settings

pytestmark = pytest.mark.redis


@pytest.fixture
def settings(redis_url: str) -> WorkerSettings:
    return load_settings(broker_url=redis_url, retry_backoff_base=0.5,
                         retry_backoff_max=30.0, default_max_retries=3)


@pytest.fixture
def executor(settings: WorkerSettings) -> Executor:
    return Executor(settings)


@pytest.fixture
def store(executor: Executor) -> ResultStore:
    results = executor.results()
    assert results is not None
    return results


def body(task: str, *args: object, **kwargs: object) -> bytes:
    return Envelope.create(task, list(args), kwargs, queue="q").encode()


def test_success_stores_the_result_and_reports_metrics(executor: Executor,
                                                       store: ResultStore) -> None:
    env = Envelope.create("apitasks.add", [2, 3], now=time.time() - 1.5)
    outcome = executor.execute(env.encode())
    assert (outcome.settle, outcome.status, outcome.task, outcome.task_id) == (
        Settle.ACK, "success", "apitasks.add", env.id)
    assert outcome.queue_wait_s is not None and outcome.queue_wait_s >= 1.5
    assert outcome.runtime_s >= 0
    record = store.fetch(env.id)
    assert record is not None
    assert (record["status"], record["result"], record["attempt"]) == (SUCCESS, 5, 1)
    assert record["finished_at"] > 0


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\x00not json", "malformed JSON"),
    (b"[1, 2]", "message must be a JSON object"),
    (b'{"id": "x"}', "missing field 'task'"),
    (b'{"id": "x", "task": "apitasks.add", "args": {}}', "field 'args' must be a list"),
    (b'{"id": "x", "task": "nope.missing", "args": []}', "unknown task 'nope.missing'"),
    (b'{"id": "x", "task": "apitasks.add", "args": [1]}',
     "bad arguments: missing a required argument: 'y'"),
    (b'{"id": "x", "task": "apitasks.add", "args": [1, 2], "kwargs": {"z": 1}}',
     "bad arguments: got an unexpected keyword argument 'z'"),
    (b'{"id": "x", "task": "apitasks.add", "args": [1, 2, 3]}',
     "bad arguments: too many positional arguments"),
])
def test_malformed_messages_are_dead_lettered_with_a_reason(
        executor: Executor, raw: bytes, reason: str) -> None:
    outcome = executor.execute(raw)
    assert outcome.settle is Settle.DEAD
    assert outcome.status == "bad_message"
    assert reason in outcome.reason


def test_oversized_message_is_dead_lettered(redis_url: str) -> None:
    """Workers take QSCALE_MAX_MESSAGE_BYTES plus the retry headroom (256 bytes)."""
    executor = Executor(load_settings(broker_url=redis_url, max_message_bytes=256))
    outcome = executor.execute(body("apitasks.echo", "x" * 600))
    assert outcome.settle is Settle.DEAD
    assert "exceeds the 512-byte limit" in outcome.reason


def test_expired_deadline_is_dead_lettered_and_recorded(executor: Executor,
                                                        store: ResultStore) -> None:
    env = Envelope.create("apitasks.add", [1, 1], deadline=time.time() - 5)
    outcome = executor.execute(env.encode())
    assert (outcome.settle, outcome.status) == (Settle.DEAD, "expired")
    assert "deadline passed" in outcome.reason
    record = store.fetch(env.id)
    assert record is not None and record["status"] == FAILURE
    assert record["error"]["type"] == "TaskExpired"


def test_retries_with_jittered_backoff_then_succeeds(executor: Executor, store: ResultStore,
                                                     settings: WorkerSettings) -> None:
    env = Envelope.create("apitasks.flaky", [2])
    current = env.encode()
    for attempt in (1, 2):
        outcome = executor.execute(current)
        assert (outcome.settle, outcome.status) == (Settle.RETRY, "retry")
        assert outcome.reason == f"ConnectionError: flaky attempt {attempt}"
        ceiling = settings.retry_backoff_base * 2 ** (attempt - 1)
        assert 0 <= outcome.retry_delay <= ceiling
        assert outcome.retry_body is not None
        retried = json.loads(outcome.retry_body)
        assert (retried["id"], retried["attempt"]) == (env.id, attempt + 1)
        # stamped as enqueued when the backoff ends: a deliberate delay is not queue wait
        assert retried["enqueued_at"] >= time.time() + outcome.retry_delay - 1.0
        assert retried["first_enqueued_at"] == env.first_enqueued_at
        record = store.fetch(env.id)
        assert record is not None and record["status"] == RETRY
        assert record["attempt"] == attempt
        current = outcome.retry_body
    final = executor.execute(current)
    assert final.settle is Settle.ACK
    record = store.fetch(env.id)
    assert record is not None and (record["status"], record["result"]) == (SUCCESS, 3)


def test_out_of_retries_is_dead_lettered_with_traceback(executor: Executor,
                                                        store: ResultStore) -> None:
    current = Envelope.create("apitasks.flaky", [10]).encode()
    settles = []
    for _ in range(4):  # max_retries=3: attempts 1..4
        outcome = executor.execute(current)
        settles.append(outcome.settle)
        current = outcome.retry_body or b""
    assert settles == [Settle.RETRY] * 3 + [Settle.DEAD]
    assert outcome.status == "failure"
    assert outcome.reason == "ConnectionError: flaky attempt 4"
    assert "Traceback (most recent call last)" in outcome.detail
    assert "in flaky" in outcome.detail
    record = store.fetch(outcome.task_id or "")
    assert record is not None and record["status"] == FAILURE
    assert record["error"]["type"] == "ConnectionError"
    assert "in flaky" in record["error"]["traceback"]


@pytest.mark.parametrize(("task", "reason"), [
    ("apitasks.wrong_kind", "ValueError: not a connection problem"),
    ("apitasks.permanent", "worker.api.registry.NonRetryable: this will never work"),
    ("apitasks.unserializable", "result is not JSON-serializable"),
])
def test_non_retryable_failures_go_dead_at_once(executor: Executor, task: str,
                                                reason: str) -> None:
    outcome = executor.execute(body(task))
    assert outcome.settle is Settle.DEAD
    assert reason in outcome.reason


def test_explicit_retry_uses_the_countdown(executor: Executor) -> None:
    outcome = executor.execute(body("apitasks.explicit_retry"))
    assert (outcome.settle, outcome.retry_delay) == (Settle.RETRY, 0.05)
    assert outcome.retry_body is not None
    assert executor.execute(outcome.retry_body).settle is Settle.ACK


def test_soft_time_limit_raises_inside_the_task(executor: Executor) -> None:
    started = time.monotonic()
    outcome = executor.execute(body("apitasks.sleepy", 30))
    assert outcome.settle is Settle.DEAD
    assert "SoftTimeLimitExceeded: soft time limit of 0.3s exceeded" in outcome.reason
    assert time.monotonic() - started < 10
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_task_can_catch_the_soft_time_limit_and_clean_up(executor: Executor,
                                                         store: ResultStore) -> None:
    env = Envelope.create("apitasks.sleepy_cleanup", [30])
    assert executor.execute(env.encode()).settle is Settle.ACK
    record = store.fetch(env.id)
    assert record is not None and record["result"] == "cleaned up"
    # a fast task under the same limit is untouched, and no alarm is left behind
    assert executor.execute(body("apitasks.sleepy_cleanup", 0)).settle is Settle.ACK
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_checkpoint_resumes_after_a_failed_attempt(executor: Executor,
                                                   store: ResultStore) -> None:
    env = Envelope.create("apitasks.seeded_sum", [10], {"die_at": 6})
    first = executor.execute(env.encode())
    assert first.settle is Settle.RETRY and first.retry_body is not None
    assert store.load_checkpoint(env.id) == {"next": 6, "acc": sum(range(6))}
    assert executor.execute(first.retry_body).settle is Settle.ACK
    record = store.fetch(env.id)
    assert record is not None
    assert record["result"] == {"acc": sum(range(10)), "resumed_from": 6, "attempt": 2}
    assert store.load_checkpoint(env.id) is None  # cleaned up after success


def test_shared_checkpoint_key_resumes_across_task_ids(executor: Executor,
                                                       store: ResultStore) -> None:
    key = f"job-{time.time_ns()}"
    first = apitasks.seeded_sum.envelope([6], {"die_at": 4}, checkpoint_key=key)
    assert executor.execute(first.encode()).settle is Settle.RETRY
    second = apitasks.seeded_sum.envelope([6], {"die_at": 99}, checkpoint_key=key)
    assert executor.execute(second.encode()).settle is Settle.ACK
    record = store.fetch(second.id)
    assert record is not None and record["result"]["resumed_from"] == 4


def _run_in_child(settings: WorkerSettings, raw: bytes) -> None:
    Executor(settings).execute(raw)


def test_checkpoint_resumes_after_the_process_is_killed(settings: WorkerSettings,
                                                        executor: Executor,
                                                        store: ResultStore) -> None:
    env = Envelope.create("apitasks.seeded_sum", [8], {"die_at": 5, "how": "exit"})
    child = multiprocessing.get_context("fork").Process(
        target=_run_in_child, args=(settings, env.encode()))
    child.start()
    child.join(30)
    assert child.exitcode == 17
    lost = executor.settle_unrun(env.encode(), "child exited with code 17", may_retry=True)
    assert (lost.settle, lost.status, lost.reason) == (
        Settle.RETRY, "retry", "child exited with code 17")
    assert lost.retry_body is not None
    assert executor.execute(lost.retry_body).settle is Settle.ACK
    record = store.fetch(env.id)
    assert record is not None
    assert record["result"] == {"acc": sum(range(8)), "resumed_from": 5, "attempt": 2}


def test_lost_task_out_of_retries_is_dead_and_recorded(executor: Executor,
                                                       store: ResultStore) -> None:
    env = Envelope.create("apitasks.add", [1, 2], attempt=4)
    outcome = executor.settle_unrun(env.encode(), "hard time limit (5s) exceeded",
                                    may_retry=True)
    assert (outcome.settle, outcome.status) == (Settle.DEAD, "dead")
    assert outcome.reason == "hard time limit (5s) exceeded"
    record = store.fetch(env.id)
    assert record is not None and record["error"]["type"] == "WorkerLost"
    malformed = executor.settle_unrun(b"{", "crashed", may_retry=True)
    assert (malformed.settle, malformed.status) == (Settle.DEAD, "bad_message")


def test_a_message_delivered_too_often_is_dead_unrun_and_recorded(
        executor: Executor, store: ResultStore) -> None:
    env = Envelope.create("apitasks.add", [1, 2])
    outcome = executor.settle_unrun(env.encode(), "redelivered 5 times", may_retry=False)
    assert (outcome.settle, outcome.status, outcome.reason) == (
        Settle.DEAD, "dead", "redelivered 5 times")
    record = store.fetch(env.id)
    assert record is not None and record["error"]["type"] == "DeliveryLimit"


def test_track_started_records_started_while_running(executor: Executor, store: ResultStore,
                                                     redis_url: str) -> None:
    env = Envelope.create("apitasks.started", [redis_url])
    assert executor.execute(env.encode()).settle is Settle.ACK
    record = store.fetch(env.id)
    assert record is not None and record["result"] == "STARTED"


def test_unknown_task_is_recorded_as_failed(executor: Executor, store: ResultStore) -> None:
    env = Envelope.create("apitasks.no_such_task")
    assert executor.execute(env.encode()).reason == "unknown task 'apitasks.no_such_task'"
    record = store.fetch(env.id)
    assert record is not None and record["error"]["type"] == "UnknownTask"


def test_ignore_result_stores_nothing(executor: Executor, store: ResultStore) -> None:
    env = Envelope.create("apitasks.quiet")
    assert executor.execute(env.encode()).settle is Settle.ACK
    assert store.fetch(env.id) is None


def test_a_task_reports_its_own_hard_limit_before_it_runs(redis_url: str) -> None:
    """The child tells the supervisor a task's limit only when it differs from the
    setting (the supervisor never decodes a body to find it), and when a hard-limited
    task has returned (recording its outcome is not cut short by the limit)."""
    with_default = Executor(load_settings(broker_url=redis_url, hard_time_limit=60))
    no_default = Executor(load_settings(broker_url=redis_url, hard_time_limit=0))
    reported: list[tuple[str, float | None]] = []

    def report(what: str, value: float | None) -> None:
        reported.append((what, value))

    no_default.execute(body("apitasks.add", 1, 2), report)
    assert reported == []
    with_default.execute(body("apitasks.add", 1, 2), report)
    assert reported == [("ran", None)]
    reported.clear()
    with_default.execute(body("apitasks.sleepy", 0), report)
    no_default.execute(body("apitasks.sleepy", 0), report)
    with_default.execute(b"not json", report)
    assert reported == [("limit", 5), ("ran", None), ("limit", 5), ("ran", None)]


def test_checkpoints_without_a_result_store_fail_clearly(amqp_url: str) -> None:
    executor = Executor(load_settings(broker_url=amqp_url, result_url=""))
    outcome = executor.execute(body("apitasks.seeded_sum", 3, die_at=99))
    assert outcome.settle is Settle.DEAD
    assert "checkpoints need a result store: set QSCALE_RESULT_URL" in outcome.reason
