"""Adversarial review of issue #9: outcomes the executor cannot build.

`Executor.execute` turns *any* exception raised while building an outcome into
"the result store failed": Settle.RETRY with the original body, unchanged, in 5 s.
When the cause is not the store but the message itself, the task runs again every
5 s for ever, its attempt never grows, it never reaches FAILURE or the DLQ, and the
reason names the result store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from worker.api import registry
from worker.api.context import TaskContext
from worker.api.registry import TaskSpec
from worker.envelope import MAX_ATTEMPT, Envelope, decode
from worker.runtime.executor import Executor
from worker.runtime.outcome import Settle
from worker.settings import WorkerSettings

# An AMQP broker and no QSCALE_RESULT_URL: results disabled, so no store is involved.
SETTINGS = WorkerSettings(broker_url="amqp://guest:guest@127.0.0.1:5672//")


def _always_fails(*args: object) -> None:
    raise ConnectionError("the API is down")


def _retry_after(ctx: TaskContext, header: str) -> None:
    # Retry-After parsed from an HTTP response: float() accepts "nan" and "inf".
    ctx.retry(countdown=float(header))


@pytest.fixture
def tasks() -> Iterator[None]:
    registry.register(TaskSpec(name="att9.forever", fn=_always_fails, max_retries=10**9))
    registry.register(TaskSpec(name="att9.retry_after", fn=_retry_after, bind=True,
                               max_retries=3))
    yield
    registry.unregister("att9.forever")
    registry.unregister("att9.retry_after")


def _final_or_progress(body: bytes) -> None:
    outcome = Executor(SETTINGS).execute(body)
    assert outcome.status != "store_error", (
        f"{outcome.settle}: {outcome.reason!r} (results are disabled: no store is involved)")
    if outcome.settle is Settle.RETRY:
        assert outcome.retry_body is not None
        assert decode(outcome.retry_body).attempt > decode(body).attempt, "no progress"


def test_a_retry_past_max_attempt_is_dead_lettered_not_looped(tasks: None) -> None:
    """decode accepts attempt=MAX_ATTEMPT; the retry's next_attempt() is MAX_ATTEMPT+1,
    which encode() refuses (BadMessage), and that BadMessage is reported as store
    trouble. A producer can send attempt=1000000 to any task with max_retries >= 1e6
    ("retry for ever"); reached honestly after a million retries, too."""
    doc = Envelope.create("att9.forever", queue="q").to_json()
    doc["attempt"] = MAX_ATTEMPT
    _final_or_progress(json.dumps(doc).encode())


@pytest.mark.parametrize("header", ["nan", "inf", "1e12"])
def test_a_retry_countdown_that_cannot_be_encoded_ends_the_task(tasks: None,
                                                                 header: str) -> None:
    """ctx.retry(countdown=nan/inf/1e12): enqueued_at = now + countdown is refused by
    encode(); the attempt is then re-run every 5 s with the same attempt number, for
    ever (max_retries=3 never applies)."""
    body = Envelope.create("att9.retry_after", [header], queue="q").encode()
    _final_or_progress(body)


def test_a_retry_of_a_message_that_fits_still_fits(tasks: None) -> None:
    """A body within QSCALE_MAX_MESSAGE_BYTES is accepted; its retry (attempt + 1, a new
    enqueued_at float) is a few bytes longer and is not checked against the limit
    (chain steps are, in _sendable). The next delivery refuses it as oversized: a
    task that only had to be retried is dead-lettered as a bad message."""
    settings = WorkerSettings(broker_url="amqp://guest:guest@127.0.0.1:5672//",
                              max_message_bytes=256)
    env = Envelope.create("att9.forever", ["x"], queue="q", now=1.0)
    pad = settings.max_message_bytes - len(env.encode())
    body = Envelope.create("att9.forever", ["x" * (1 + pad)], queue="q", now=1.0).encode()
    assert len(body) == settings.max_message_bytes
    outcome = Executor(settings).execute(body)
    assert outcome.settle is Settle.RETRY and outcome.retry_body is not None
    # Workers take SIZE_HEADROOM bytes over the limit (producers may not): the retry of a
    # message that fit is run, not dead-lettered as oversized.
    again = Executor(settings).execute(outcome.retry_body)
    assert (again.settle, again.status) == (Settle.RETRY, "retry"), again.reason
