"""Adversarial review of issue #9: results after `dlq requeue` (real Redis, in-process
executor). The operator's fix for a failed task is `python -m worker dlq requeue`;
worker/api/workflow.py promises that a requeued chord member that succeeds completes the
chord. Terminal states are final against duplicates, so the requeue itself reopens
the result (ResultStore.reopen, what `dlq requeue` calls for each body it moves),
and a duplicate run that did not go through it changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from worker.api import registry
from worker.api.registry import NonRetryable, TaskSpec
from worker.envelope import ChordRef, Envelope, Signature, decode
from worker.results import FAILURE, SUCCESS, ResultStore
from worker.runtime.executor import Executor
from worker.runtime.outcome import Settle
from worker.settings import WorkerSettings

pytestmark = [pytest.mark.redis]

_BROKEN = {"on": True}


def _flaky(value: int) -> int:
    if _BROKEN["on"]:
        raise NonRetryable("bug, fixed in the next release")
    return value


def _total(values: list[int]) -> int:
    return sum(values)


@pytest.fixture
def tasks() -> Iterator[None]:
    registry.register(TaskSpec(name="att9.flaky", fn=_flaky))
    registry.register(TaskSpec(name="att9.total", fn=_total))
    _BROKEN["on"] = True
    yield
    registry.unregister("att9.flaky")
    registry.unregister("att9.total")


def test_a_requeued_dead_letter_that_succeeds_is_a_success(tasks: None, redis_url: str,
                                                            queue_name: str) -> None:
    executor = Executor(WorkerSettings(broker_url=redis_url))
    body = Envelope.create("att9.flaky", [7], queue=queue_name).encode()
    assert executor.execute(body).settle is Settle.DEAD      # FAILURE recorded, DLQ
    _BROKEN["on"] = False                                     # the fix is deployed
    store = ResultStore(redis_url)
    assert executor.execute(body).settle is Settle.ACK        # a duplicate: no reopen
    assert store.fetch(_id(body))["status"] == FAILURE         # final against duplicates
    store.reopen(decode(body))                                 # `dlq requeue`
    assert executor.execute(body).settle is Settle.ACK        # it ran again
    record = store.fetch(_id(body))
    assert record is not None and record["status"] == SUCCESS, record


def test_a_requeued_chord_member_that_succeeds_completes_the_chord(
        tasks: None, redis_url: str, queue_name: str) -> None:
    executor = Executor(WorkerSettings(broker_url=redis_url))
    chord_id = Envelope.new_id()
    callback = Signature(task="att9.total", task_id=chord_id, queue=queue_name)
    members = [Envelope.create("att9.flaky", [i], queue=queue_name,
                               chord=ChordRef(id=chord_id, size=2, index=i, callback=callback))
               .encode() for i in range(2)]
    _BROKEN["on"] = False
    assert executor.execute(members[0]).settle is Settle.ACK
    _BROKEN["on"] = True
    assert executor.execute(members[1]).settle is Settle.DEAD  # chord marked failed
    _BROKEN["on"] = False
    ResultStore(redis_url).reopen(decode(members[1]))           # `dlq requeue`
    outcome = executor.execute(members[1])
    assert outcome.settle is Settle.ACK
    assert [f.queue for f in outcome.follow_ups] == [queue_name], \
        "the chord callback was not sent: the chord never completes"


def _id(body: bytes) -> str:
    import json
    return str(json.loads(body)["id"])
