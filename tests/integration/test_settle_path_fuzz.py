"""The settle path, fuzzed: hypothesis drives a real BrokerLink on the real Redis through
random claims, outcomes (ack, retry, dead letter, give back, follow-ups the broker
takes or refuses), lost connections and reconciles, and checks after every step that
every message is in exactly one place: ready, claimed, delayed, dead or done.

A refused follow-up must record FAILURE for the task it would have started; nothing
may be settled twice or vanish (a failure here is kept by hypothesis's shrinking as
a minimal sequence, and goes into this file as a regression test).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from tests.conftest import _TEST_QUEUES, REDIS_URL
from worker.brokers.base import Delivery
from worker.brokers.redis import RedisBroker, key_prefix, ready_key
from worker.results import FAILURE, ResultStore
from worker.runtime.link import BrokerLink
from worker.runtime.outcome import FailurePlan, FollowUp, Outcome, Settle
from worker.settings import load_settings

pytestmark = [pytest.mark.redis]


class SettlePath(RuleBasedStateMachine):
    claimed = Bundle("claimed")

    def __init__(self) -> None:
        super().__init__()
        self.queue = f"t-{uuid.uuid4().hex[:12]}"
        self.target = f"t-{uuid.uuid4().hex[:12]}"
        self.refusing = f"t-{uuid.uuid4().hex[:12]}"  # its ready key holds a string
        _TEST_QUEUES.update({self.queue, self.target, self.refusing})
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.link = BrokerLink(load_settings(broker_url=REDIS_URL, lease_seconds=30,
                                             queues=self.queue), "fuzz", 0)
        self.link.maintain(time.monotonic())
        self.producer = RedisBroker(REDIS_URL)
        self.store = ResultStore(REDIS_URL)
        self.redis.set(ready_key(self.refusing), b"not a list")
        self.counter = 0
        # body -> where the model says it is
        self.where: dict[bytes, str] = {}
        self.follow_ups: set[bytes] = set()
        self.refused_ids: list[str] = []

    def _body(self, prefix: str) -> bytes:
        self.counter += 1
        return f"{prefix}-{self.counter}".encode()

    def _settle_all(self) -> None:
        deadline = time.monotonic() + 20
        while self.link.unsettled and time.monotonic() < deadline:
            self.link.maintain(time.monotonic())
            self.link.flush(time.monotonic(), force=True)
            if self.link.unsettled:
                time.sleep(0.05)
        assert self.link.unsettled == 0, "settlements stuck"

    @rule(n=st.integers(1, 4), priority=st.one_of(st.none(), st.integers(0, 9)))
    def publish(self, n: int, priority: int | None) -> None:
        for _ in range(n):
            body = self._body("m")
            self.producer.publish(self.queue, body, priority=priority)
            self.where[body] = "ready"

    @rule(target=claimed, count=st.integers(1, 3))
    def claim(self, count: int) -> Any:
        self.link.maintain(time.monotonic())
        got = self.link.claim([self.queue], count, 0.0)
        for delivery in got:
            assert self.where.get(delivery.body) in ("ready", "delayed"), delivery
            self.where[delivery.body] = "held"
        return got[0] if got else None

    @rule(delivery=consumes(claimed), kind=st.sampled_from(
        ["ack", "retry", "dead", "requeue", "follow", "follow_refused", "retry_refused"]))
    def settle(self, delivery: Delivery | None, kind: str) -> None:
        if delivery is None or self.where.get(delivery.body) != "held":
            return
        plan = FailurePlan(task_id=f"fuzz-{uuid.uuid4().hex}", task="fuzz.next")
        if kind == "ack":
            outcome, place = Outcome(Settle.ACK, "success"), "done"
        elif kind == "retry":
            new = self._body("r")
            outcome, place = Outcome(Settle.RETRY, "retry", retry_body=new,
                                     retry_delay=0.0), "done"
            self.where[new] = "delayed"
        elif kind == "retry_refused" and "delayed" not in self.where.values():
            # The delayed set is a key of another type (made so only while it is empty).
            self.redis.set(f"{key_prefix(self.queue)}delayed", b"x")
            outcome = Outcome(Settle.RETRY, "retry", retry_body=self._body("x"),
                              retry_delay=0.0, plan=plan)
            place = "dead"
            self.refused_ids.append(plan.task_id)
        elif kind == "retry_refused":
            outcome, place = Outcome(Settle.ACK, "success"), "done"
        elif kind == "dead":
            outcome, place = Outcome(Settle.DEAD, "failure", reason="fuzzed"), "dead"
        elif kind == "requeue":
            outcome, place = Outcome(Settle.REQUEUE, "requeue"), "ready"
        else:
            follow = self._body("f")
            refused = kind == "follow_refused"
            if refused:
                self.refused_ids.append(plan.task_id)
            else:
                self.follow_ups.add(follow)
            outcome = Outcome(Settle.ACK, "success", follow_ups=(
                FollowUp(queue=self.refusing if refused else self.target, body=follow,
                         plan=plan),))
            place = "done"
        self.link.settle(delivery, outcome)
        self._settle_all()
        if self.redis.type(f"{key_prefix(self.queue)}delayed") == b"string":
            self.redis.delete(f"{key_prefix(self.queue)}delayed")
        self.where[delivery.body] = place

    @rule()
    def lose_the_connection(self) -> None:
        broker = self.link.broker
        assert broker is not None
        broker._redis.connection_pool.disconnect()  # type: ignore[attr-defined]

    @rule()
    def reconcile(self) -> None:
        """What the supervisor does: hand back held deliveries it no longer knows (here:
        every claim the test did not settle is still known, so nothing moves)."""
        known = {b for b, place in self.where.items() if place == "held"}
        held = self.link.held([self.queue])
        assert {d.body for d in held} == known

    @invariant()
    def every_message_is_in_exactly_one_place(self) -> None:
        self._settle_all()
        base = key_prefix(self.queue)
        ready = set(self.redis.lrange(f"{base}redelivered", 0, -1))
        ready = {entry[1:] for entry in ready}  # priority digit + body
        for p in range(10):
            ready |= set(self.redis.lrange(ready_key(self.queue, p), 0, -1))
        delayed = {member[17:] for member in self.redis.zrange(f"{base}delayed", 0, -1)}
        held = {d.body for d in self.link.held([self.queue])}
        dead_records = self.redis.lrange(f"{base}dead", 0, -1)
        for body, place in self.where.items():
            found = [name for name, bodies in (("ready", ready), ("delayed", delayed),
                                               ("held", held)) if body in bodies]
            if place == "dead":
                found += ["dead"] if any(body in r for r in dead_records) else []
            expected = [] if place == "done" else [place]
            if place in ("ready", "delayed"):  # a due retry is ready once promoted
                assert found in (["ready"], ["delayed"]), (body, place, found)
            else:
                assert found == expected, (body, place, found)
        assert self.follow_ups == set(self.redis.lrange(ready_key(self.target), 0, -1))
        for task_id in self.refused_ids:
            record = self.store.fetch(task_id)
            assert record is not None and record["status"] == FAILURE, (task_id, record)

    def teardown(self) -> None:
        self.link.close()
        self.producer.close()
        self.store.close()


TestSettlePath = SettlePath.TestCase
TestSettlePath.settings = settings(max_examples=60, stateful_step_count=30, deadline=None,
                                   suppress_health_check=list(HealthCheck))
