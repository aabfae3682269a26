"""Task functions shared by the task-API tests, and a tiny in-process worker loop.

`drain()` plays the supervisor's part with the real executor and a real broker:
claim, execute, publish follow-ups, then ack / retry later / dead-letter.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from worker import NonRetryable, SoftTimeLimitExceeded, TaskContext, task
from worker.brokers import Broker, Delivery
from worker.results import ResultStore
from worker.runtime.executor import Executor
from worker.runtime.outcome import Outcome, Settle


class CustomError(Exception):
    """A user-defined exception type (not a builtin) for remote re-raise tests."""


@task(name="apitasks.started", track_started=True, bind=True)
def started(ctx: TaskContext, result_url: str) -> str:
    """Returns the status its own result had while it ran."""
    record = ResultStore(result_url).fetch(ctx.id) or {}
    return str(record.get("status", "PENDING"))


@task(name="apitasks.add")
def add(x: int, y: int) -> int:
    return x + y


@task(name="apitasks.mul")
def mul(x: int, y: int) -> int:
    return x * y


@task(name="apitasks.total")
def total(values: list[int], extra: int = 0) -> int:
    return sum(values) + extra


@task(name="apitasks.echo")
def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
    return {"args": list(args), "kwargs": kwargs}


@task(name="apitasks.flaky", bind=True, max_retries=3, retry_for=(ConnectionError,))
def flaky(ctx: TaskContext, fail_times: int) -> int:
    """Fails with ConnectionError on the first `fail_times` attempts."""
    if ctx.attempt <= fail_times:
        raise ConnectionError(f"flaky attempt {ctx.attempt}")
    return ctx.attempt


@task(name="apitasks.wrong_kind", max_retries=3, retry_for=(ConnectionError,))
def wrong_kind() -> None:
    raise ValueError("not a connection problem")


@task(name="apitasks.permanent", max_retries=3)
def permanent() -> None:
    raise NonRetryable("this will never work")


@task(name="apitasks.custom_fail", max_retries=0)
def custom_fail(text: str) -> None:
    raise CustomError(text)


@task(name="apitasks.key_fail", max_retries=0)
def key_fail() -> int:
    lookup: dict[str, int] = {}
    return lookup["missing-key"]


@task(name="apitasks.sleepy", soft_time_limit=0.3, hard_time_limit=5, max_retries=0)
def sleepy(seconds: float) -> str:
    time.sleep(seconds)
    return "woke"


@task(name="apitasks.sleepy_cleanup", soft_time_limit=0.3, max_retries=0)
def sleepy_cleanup(seconds: float) -> str:
    try:
        time.sleep(seconds)
    except SoftTimeLimitExceeded:
        return "cleaned up"
    return "woke"


@task(name="apitasks.seeded_sum", bind=True, max_retries=3)
def seeded_sum(ctx: TaskContext, steps: int, die_at: int, how: str = "raise") -> dict[str, Any]:
    """Sums range(steps), checkpointing after each step; the first attempt dies at `die_at`.

    `how="exit"` kills the process outright (as a hard kill or OOM would).
    """
    state = ctx.last_checkpoint or {"next": 0, "acc": 0}
    resumed_from = state["next"]
    for i in range(state["next"], steps):
        if ctx.attempt == 1 and i == die_at:
            if how == "exit":
                os._exit(17)
            raise ConnectionError(f"died at step {i}")
        state = {"next": i + 1, "acc": state["acc"] + i}
        ctx.checkpoint(state)
    return {"acc": state["acc"], "resumed_from": resumed_from, "attempt": ctx.attempt}


@task(name="apitasks.stuck_once", bind=True, hard_time_limit=1.5, max_retries=1)
def stuck_once(ctx: TaskContext, marker: str) -> dict[str, Any]:
    """Checkpoints, then hangs on its first attempt until the hard time limit kills it."""
    if ctx.attempt == 1:
        ctx.checkpoint({"marker": marker, "pid": os.getpid()})
        time.sleep(120)
    return {"resumed": ctx.last_checkpoint, "attempt": ctx.attempt, "pid": os.getpid()}


@task(name="apitasks.explicit_retry", bind=True, max_retries=2)
def explicit_retry(ctx: TaskContext) -> int:
    if ctx.attempt < 2:
        ctx.retry(countdown=0.05)
    return ctx.attempt


@task(name="apitasks.retry_after", bind=True, max_retries=1)
def retry_after(ctx: TaskContext, seconds: float) -> int:
    if ctx.attempt == 1:
        ctx.retry(countdown=seconds)
    return ctx.attempt


@task(name="apitasks.quiet", ignore_result=True)
def quiet() -> str:
    return "nobody reads this"


FIXED = {"on": False}


@task(name="apitasks.fixable", max_retries=0)
def fixable(value: int) -> int:
    """Fails until a fix is "deployed" (FIXED["on"] = True in this process)."""
    if not FIXED["on"]:
        raise RuntimeError("a bug, fixed in the next release")
    return value


@task(name="apitasks.unserializable", max_retries=3)
def unserializable() -> object:
    return object()


def apply_outcome(broker: Broker, delivery: Delivery, outcome: Outcome) -> None:
    """What the supervisor does with an Outcome: follow-ups first, then settle."""
    for follow in outcome.follow_ups:
        broker.publish(follow.queue, follow.body, delay=follow.delay, priority=follow.priority)
    if outcome.settle is Settle.ACK:
        broker.ack([delivery])
    elif outcome.settle is Settle.RETRY:
        assert outcome.retry_body is not None
        broker.retry_later(delivery, outcome.retry_body, outcome.retry_delay)
    elif outcome.settle is Settle.DEAD:
        broker.dead_letter(delivery, outcome.reason, outcome.detail)
    else:
        broker.requeue([delivery])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `predicate()` is truthy (RabbitMQ's management stats lag a few seconds)."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)
    return value


def drain(broker: Broker, queues: Sequence[str], executor: Executor, *,
          until: Callable[[], bool], timeout: float = 30.0) -> list[Outcome]:
    """Run messages from `queues` until `until()` is true; fails after `timeout` s."""
    outcomes: list[Outcome] = []
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError(f"work not done after {timeout}s; outcomes: {outcomes}")
        for delivery in broker.claim(queues, 10, timeout=0.2):
            outcome = executor.execute(delivery.body)
            apply_outcome(broker, delivery, outcome)
            outcomes.append(outcome)
    return outcomes
