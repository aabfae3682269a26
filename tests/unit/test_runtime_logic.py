"""Pure logic of the worker runtime: settle ordering, dispatch, state, compact results."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import pytest

from worker.brokers.base import Broker, DeadLetter, Delivery, QueueStats
from worker.cli import build_parser
from worker.errors import BrokerUnavailable
from worker.runtime.child import compact, expand
from worker.runtime.link import ACK_BATCH, BrokerLink
from worker.runtime.metrics import _Hist, reason_class
from worker.runtime.outcome import FollowUp, Outcome, Settle
from worker.runtime.pool import Child, Job, Pool, capacity
from worker.runtime.state import RuntimeState
from worker.settings import load_settings


class RecordingBroker(Broker):
    """Records calls in order; `fail_next` makes the next N calls raise BrokerUnavailable."""

    url = "fake://"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_next = 0

    def _do(self, name: str, arg: Any) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise BrokerUnavailable(f"{name} failed")
        self.calls.append((name, arg))

    def publish(self, queue: str, body: bytes, *, delay: float = 0.0,
                priority: int | None = None) -> None:
        self._do("publish", body)

    def claim(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        self._do("claim", max_count)
        return []

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        self._do("ack", [d.tag for d in deliveries])

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._do("requeue", [d.tag for d in deliveries])

    def retry_later(self, delivery: Delivery, body: bytes, delay: float) -> None:
        self._do("retry", (delivery.tag, body, delay))

    def dead_letter(self, delivery: Delivery, reason: str, detail: str = "",
                    body: bytes | None = None) -> None:
        self._do("dead", (delivery.tag, reason))

    def heartbeat(self) -> None:
        self._do("heartbeat", None)

    def connected(self) -> bool:
        return True

    def close(self) -> None:
        pass

    def stats(self, queue: str) -> QueueStats:
        raise NotImplementedError

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        raise NotImplementedError

    def requeue_dead(self, queue: str, limit: int | None = None,
                     before: Any = None) -> int:
        raise NotImplementedError

    def purge_dead(self, queue: str) -> int:
        raise NotImplementedError


def _link() -> tuple[BrokerLink, RecordingBroker]:
    fake = RecordingBroker()
    link = BrokerLink(load_settings(lease_seconds=3), "c1", 0, opener=lambda *a, **k: fake)
    link.maintain(0.0)
    assert link.connected
    fake.calls.clear()
    return link, fake


def _delivery(tag: str) -> Delivery:
    return Delivery(queue="q", body=b"{}", tag=tag)


def test_follow_ups_are_published_before_the_ack_and_only_once() -> None:
    link, fake = _link()
    outcome = Outcome(settle=Settle.ACK, status="success",
                      follow_ups=(FollowUp("q", b"next1"), FollowUp("q", b"next2")))
    link.settle(_delivery("t1"), outcome)
    fake.fail_next = 0
    link.flush(1.0, force=True)
    assert fake.calls == [("publish", b"next1"), ("publish", b"next2"), ("ack", ["t1"])]


def test_a_failed_settle_is_retried_without_republishing_follow_ups() -> None:
    link, fake = _link()
    outcome = Outcome(settle=Settle.RETRY, status="retry", retry_body=b"again",
                      retry_delay=2.0, follow_ups=(FollowUp("q", b"next"),))
    link.settle(_delivery("t1"), outcome)
    fake.calls.clear()
    # The publish succeeds, the retry call fails: the link goes down, keeps the work.
    original = fake.retry_later

    def failing_retry(delivery: Delivery, body: bytes, delay: float) -> None:
        fake.retry_later = original  # type: ignore[method-assign]
        raise BrokerUnavailable("down")

    fake.retry_later = failing_retry  # type: ignore[method-assign]
    link.flush(1.0)
    assert not link.connected and link.unsettled == 1
    assert fake.calls == [("publish", b"next")]
    later = time.monotonic() + 100  # past the reconnect back-off
    link.maintain(later)  # reconnect (heartbeat probe)
    link.flush(later)
    assert fake.calls[-1] == ("retry", ("t1", b"again", 2.0))
    assert [c for c in fake.calls if c[0] == "publish"] == [("publish", b"next")]
    assert link.unsettled == 0


def test_acks_are_batched_until_full_or_old() -> None:
    link, fake = _link()
    ok = Outcome(settle=Settle.ACK, status="success")
    for i in range(ACK_BATCH - 1):
        link.settle(_delivery(f"t{i}"), ok)
    link.flush(0.0)
    assert fake.calls == []
    link.settle(_delivery("last"), ok)
    link.flush(0.0)
    assert len(fake.calls) == 1 and len(fake.calls[0][1]) == ACK_BATCH


def test_dead_and_requeue_outcomes() -> None:
    link, fake = _link()
    link.settle(_delivery("d"), Outcome(settle=Settle.DEAD, status="dead", reason="boom"))
    link.settle(_delivery("r"), Outcome(settle=Settle.REQUEUE, status="requeue"))
    link.flush(0.0)
    assert fake.calls == [("dead", ("d", "boom")), ("requeue", ["r"])]


def test_connect_failures_back_off() -> None:
    attempts: list[float] = []

    def opener(*args: Any, **kwargs: Any) -> Broker:
        attempts.append(1)
        raise BrokerUnavailable("refused")

    link = BrokerLink(load_settings(), "c1", 0, opener=opener)
    link.maintain(0.0)
    link.maintain(0.1)   # inside the back-off window: no attempt
    assert len(attempts) == 1 and not link.connected
    assert link.claim(["q"], 10, 0.0) == []


def test_compact_round_trip_keeps_plain_acks_and_leaves_others_alone() -> None:
    ack = Outcome(settle=Settle.ACK, status="success", task="t", task_id="i", runtime_s=0.5,
                  queue_wait_s=1.5)
    assert isinstance(compact(ack), tuple)
    assert expand(compact(ack)) == ack
    dead = Outcome(settle=Settle.DEAD, status="dead", reason="x")
    assert compact(dead) is dead
    chained = Outcome(settle=Settle.ACK, status="success", follow_ups=(FollowUp("q", b"n"),))
    assert compact(chained) is chained


class _Conn:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, obj: Any) -> None:
        self.sent.append(obj)


def _pool(children: int, **settings: Any) -> Pool:
    pool = Pool(load_settings(concurrency=children, **settings), executor_factory=None)  # type: ignore[arg-type]
    for slot in range(children):
        pool.children[slot] = Child(slot=slot, process=None, conn=_Conn(), born=0.0)  # type: ignore[arg-type]
    return pool


def _jobs(n: int) -> deque[Job]:
    return deque(Job(i, _delivery(str(i))) for i in range(n))


def test_dispatch_spreads_work_evenly_and_stamps_head_start() -> None:
    pool = _pool(2)
    pending = _jobs(5)
    pool.dispatch(pending, per_child=2, now=7.0)
    assert [len(c.jobs) for c in pool.children.values()] == [2, 2]
    assert len(pending) == 1
    assert all(c.jobs[0].started == 7.0 for c in pool.children.values())
    assert all(c.jobs[1].started == 0.0 for c in pool.children.values())
    first = pool.children[0].conn.sent  # type: ignore[attr-defined]
    assert first == [[(0, b"{}", None), (2, b"{}", None)]]  # (seq, body, unrun)


def test_dispatch_respects_max_tasks_budget_and_retiring_children() -> None:
    pool = _pool(2, max_tasks_per_child=3)
    pool.children[0].done = 2
    pool.children[1].retire_cause = "max_rss"
    pending = _jobs(10)
    pool.dispatch(pending, per_child=8, now=0.0)
    assert len(pool.children[0].jobs) == 1
    assert len(pool.children[1].jobs) == 0


def test_recycling_is_one_child_at_a_time_and_budget_children_keep_working() -> None:
    pool = _pool(3, max_tasks_per_child=3)
    for child in pool.children.values():
        child.done = 3
        child.retire_cause = "max_tasks"
    pool.children[2].retire_cause = "max_rss"
    first = pool.next_to_retire()
    assert first is pool.children[2]  # the bloated one goes first
    first.retiring = True
    assert pool.next_to_retire() is None  # the others wait for their turn...
    pending = _jobs(4)
    pool.dispatch(pending, per_child=2, now=0.0)
    # ...and keep working meanwhile, past their budget; the retiring one gets nothing
    assert [len(pool.children[i].jobs) for i in range(3)] == [2, 2, 0]
    del pool.children[2]  # replaced
    assert pool.next_to_retire() in (pool.children[0], pool.children[1])


def test_runtime_state_ewma_and_snapshot() -> None:
    state = RuntimeState("pod-1", concurrency=4, started_at=10.0)
    state.task_finished("a", 1.0, now=11.0)
    state.task_finished("a", 2.0, now=12.0)
    state.task_finished("b", 4.0, now=13.0)
    snap = state.snapshot()
    assert snap["completed"] == 3 and snap["last_task_finished_at"] == 13.0
    assert snap["service_time_by_task"]["a"] == pytest.approx(1.1)
    assert snap["service_time_by_task"]["b"] == 4.0
    assert snap["service_time_seconds"] == pytest.approx(1.1 + 0.1 * (4.0 - 1.1))
    assert snap["ready"] is False
    state.broker_connected = True
    assert state.snapshot()["ready"] is True
    state.draining = True
    assert state.snapshot()["ready"] is False


def test_histogram_buckets_are_cumulative_with_inf() -> None:
    hist = _Hist((0.1, 1.0, float("inf")))
    for value in (0.05, 0.1, 0.5, 5.0):
        hist.observe(value)
    buckets, total = hist.snapshot()
    assert buckets == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert total == pytest.approx(5.65)


@pytest.mark.parametrize(("reason", "label"), [
    ("hard time limit exceeded after 5s", "time_limit"),
    ("malformed JSON: Expecting value", "bad_message"),
    ("child process died while running the task (killed by signal SIGSEGV)", "child_died"),
    ("something else", "other"),
])
def test_reason_class(reason: str, label: str) -> None:
    assert reason_class(reason) == label


def test_cli_skips_command_modules_that_do_not_exist_yet() -> None:
    parser = build_parser(("worker.cli.run", "worker.no_such_cli_module"))
    args = parser.parse_args(["run", "--concurrency", "3"])
    assert args.concurrency == 3 and callable(args.func)


def test_dispatch_never_queues_big_bodies_behind_a_busy_childs_task() -> None:
    pool = _pool(1)
    big = 40 * 1024
    pending = deque(Job(i, Delivery(queue="q", body=b"x" * big, tag=str(i))) for i in range(4))
    pool.dispatch(pending, per_child=4, now=0.0)
    # The idle child takes the first (it is blocked reading) and one more fits the
    # unread-bytes budget; the rest wait in the supervisor.
    assert len(pool.children[0].jobs) == 2 and len(pending) == 2
    pool.dispatch(pending, per_child=4, now=0.0)
    assert len(pool.children[0].jobs) == 2


@pytest.mark.parametrize(("service_time", "prefetch", "expected"), [
    (None, 0, 4), (0.0005, 0, 64), (0.005, 0, 16), (0.05, 0, 4), (2.0, 0, 2), (2.0, 5, 7),
])
def test_capacity_follows_service_time(service_time: float | None, prefetch: int,
                                       expected: int) -> None:
    settings = load_settings(concurrency=2, prefetch=prefetch)
    assert capacity(settings, service_time) == expected
