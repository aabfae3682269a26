"""Adversarial review of issue #9: long countdowns on RabbitMQ.

A delay waits in a TTL bucket queue `qscale.delay.<queue>.<ms>`. The TTL was capped at
2**32-1 ms (49.7 days) and the queue's x-expires at the same cap, so a 60-day
countdown fired 10 days early and a 40-day one could be deleted with its queue before
its TTL moved it on. Now a bucket always outlives its messages (x-expires = 2 TTL +
60 s, TTL at most MAX_BUCKET_MS, about 24.8 days), a longer delay is refused by the
broker, and the client and the executor cut long delays into hops: the envelope
carries `not_before`, and a message that comes early waits the rest.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from worker.api import registry
from worker.api.registry import TaskSpec
from worker.brokers._amqp_layout import MAX_BUCKET_MS
from worker.brokers._amqp_publish import REDECLARE_AFTER, AmqpPublishing
from worker.cli.tasks import MAX_COUNTDOWN
from worker.envelope import MAX_HOP_DELAY, Envelope, decode
from worker.errors import MessageRefused
from worker.runtime.executor import Executor
from worker.runtime.outcome import Settle
from worker.settings import WorkerSettings

DAY = 86_400.0


class _Recorder:
    def __init__(self) -> None:
        self.declared: dict[str, dict[str, Any] | None] = {}

    def declare_target(self, queue: str, arguments: dict[str, Any] | None) -> None:
        self.declared[queue] = arguments


class _Publisher(AmqpPublishing):
    def __init__(self) -> None:
        self._session = _Recorder()  # type: ignore[assignment]
        self._targets = {}
        self.max_priority = 0
        self.queue_type = "classic"
        self.max_redeliveries = 0


@pytest.mark.parametrize("days", [0.001, 1, 20, MAX_HOP_DELAY / DAY])
def test_every_bucket_outlives_its_messages(days: float) -> None:
    publisher = _Publisher()
    bucket = publisher._bucket_target("work", days * DAY)
    args = publisher._session.declared[bucket]  # type: ignore[attr-defined]
    assert args is not None
    ttl, expires = args["x-message-ttl"], args["x-expires"]
    assert days * DAY * 1000 <= ttl <= MAX_BUCKET_MS
    assert expires > ttl + REDECLARE_AFTER * 1000


@pytest.mark.parametrize("days", [30, 60, MAX_COUNTDOWN / DAY])
def test_a_delay_longer_than_a_bucket_is_refused_by_the_broker(days: float) -> None:
    with pytest.raises(MessageRefused, match="longer than RabbitMQ holds"):
        _Publisher()._bucket_target("work", days * DAY)


@pytest.mark.parametrize("days", [30, 60, MAX_COUNTDOWN / DAY])
def test_a_long_countdown_runs_neither_early_nor_never(days: float) -> None:
    """The client sends it for one hop with `not_before`; arriving early it waits again."""
    now = time.time()
    env, hop = Envelope.create("t", queue="q", now=now).delayed(days * DAY, now)
    assert hop == MAX_HOP_DELAY and env.not_before == pytest.approx(now + days * DAY)
    registry.register(TaskSpec(name="t", fn=lambda: None))
    try:
        outcome = Executor(WorkerSettings(broker_url="redis://127.0.0.1:6379/0")).execute(
            env.encode())
    finally:
        registry.unregister("t")
    assert (outcome.settle, outcome.status) == (Settle.RETRY, "waiting")
    assert outcome.retry_body is not None and decode(outcome.retry_body) == env
    assert 0 < outcome.retry_delay <= MAX_HOP_DELAY
