"""One checker run: publish a plan while injecting its faults, wait for the dust to
settle, then hand the whole history to the invariant checks.

What the run records: every publish (the producer's ledger: task ids, what each is
expected to end as, the exact bodies of hostile and duplicated messages), every
execution start and finish (written by the tasks themselves), every fault, and at
the end every result as `AsyncResult` reads it, the dead-letter queue and the
broker's counts.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from tests.checker.plan import ALWAYS, Op, Plan
from tests.checker.tasks import reduce, work
from tests.checker.world import World
from worker.api.client import Client
from worker.api.workflow import chain
from worker.envelope import ChordRef, Envelope
from worker.errors import QscaleError
from worker.results import READY_STATES

SUCCESS_EXPECTED, FAILURE_EXPECTED = "SUCCESS", "FAILURE"


@dataclass
class Ledger:
    """What the producer sent: task id -> expectation, and the structures over them."""

    expected: dict[str, str] = field(default_factory=dict)
    chains: list[list[str]] = field(default_factory=list)
    chords: list[tuple[list[str], str]] = field(default_factory=list)   # members, callback
    hostile: list[bytes] = field(default_factory=list)
    bodies: list[list[tuple[bytes, int | None]]] = field(default_factory=list)  # per op
    copies: dict[str, int] = field(default_factory=dict)  # task id -> extra copies sent
    messages: int = 0
    duplicates_sent: int = 0

    def runs_expected(self, task_id: str) -> int:
        """Executions a task may have without a fault: one per copy the producer sent, of
        it or of the head of its chain, or of any member of its chord."""
        extra = self.copies.get(task_id, 0)
        for steps in self.chains:
            if task_id in steps[1:]:
                extra += self.copies.get(steps[0], 0)
        for members, callback in self.chords:
            if task_id == callback:
                extra += sum(self.copies.get(m, 0) for m in members)
        return 1 + extra


def _fails(spec: dict[str, Any]) -> bool:
    return any(spec.get(k, 0) >= ALWAYS for k in ("fail", "crash", "hang"))


class Producer:
    """Publishes plan operations, retrying through broker outages (at-least-once)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.client: Client = world.client()
        self.ledger = Ledger()

    def _send(self, bodies: list[tuple[bytes, int | None]], delay: float = 0.0) -> None:
        deadline = time.monotonic() + 90
        for body, priority in bodies:
            while True:
                try:
                    self.client.broker.publish(self.world.queue, body, delay=delay,
                                               priority=priority)
                    break
                except (QscaleError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    self.client.close()
                    self.client = self.world.client()
                    time.sleep(0.2)
        self.ledger.messages += len(bodies)

    def _expect(self, env: Envelope, fails: bool) -> None:
        self.ledger.expected[env.id] = FAILURE_EXPECTED if fails else SUCCESS_EXPECTED

    def publish(self, op: Op) -> None:
        queue = self.world.queue
        sent: list[tuple[bytes, int | None]] = []
        if op.kind in ("task", "countdown", "group"):
            for spec in op.specs:
                env = work.envelope([spec], queue=queue, priority=op.priority)
                self._expect(env, _fails(spec))
                sent.append((env.encode(), op.priority))
            self._send(sent, delay=op.delay)
        elif op.kind == "chain":
            first, _ = chain(*(work.s(spec).set(queue=queue) for spec in op.specs)
                             ).first_envelope()
            ids = [first.id, *(s.task_id or "" for s in first.link)]
            failed = False
            for task_id, spec in zip(ids, op.specs, strict=True):
                failed = failed or _fails(spec)
                self.ledger.expected[task_id] = FAILURE_EXPECTED if failed else SUCCESS_EXPECTED
            self.ledger.chains.append(ids)
            sent.append((first.encode(), None))
            self._send(sent)
        elif op.kind == "chord":
            *members, callback_spec = op.specs
            chord_id = Envelope.new_id()
            callback = reduce.s(callback_spec).set(queue=queue).wire(task_id=chord_id)
            envs = [Envelope.create(work.name, [spec], queue=queue, chord=ChordRef(
                id=chord_id, size=len(members), index=i, callback=callback))
                for i, spec in enumerate(members)]
            for env, spec in zip(envs, members, strict=True):
                self._expect(env, _fails(spec))
            any_fails = any(_fails(s) for s in members) or _fails(callback_spec)
            self.ledger.expected[chord_id] = FAILURE_EXPECTED if any_fails else SUCCESS_EXPECTED
            self.ledger.chords.append(([e.id for e in envs], chord_id))
            sent = [(env.encode(), None) for env in envs]
            self._send(sent)
        elif op.kind == "hostile":
            self.ledger.hostile.append(op.body)
            sent = [(op.body, None)]
            self._send(sent)
        elif op.kind == "duplicate":
            earlier = [b for b in self.ledger.bodies if b]
            if earlier:
                sent = earlier[op.of % len(earlier)]
                hostile = [b for b, _ in sent if b in self.ledger.hostile]
                self.ledger.hostile.extend(hostile)  # each copy must reach the DLQ too
                for body, _ in sent:
                    if body not in self.ledger.hostile:
                        task_id = json.loads(body)["id"]
                        self.ledger.copies[task_id] = self.ledger.copies.get(task_id, 0) + 1
                self._send(sent)
                self.ledger.duplicates_sent += len(sent)
        self.ledger.bodies.append(sent)


@dataclass
class Outcome:
    """Everything the checks look at, collected after the run settled."""

    results: dict[str, dict[str, Any] | None]
    events: list[dict[str, Any]]
    dead: list[tuple[bytes, str]]
    stats: dict[str, int | None]
    settled_after: float
    settled: bool
    diagnosis: str = ""


def run(world: World, plan: Plan, *, settle_timeout: float = 150.0) -> tuple[Ledger, Outcome]:
    """Publish the plan with its faults, then wait until every task has a final result,
    every hostile body is dead-lettered and the broker holds nothing in flight."""
    producer = Producer(world)
    rng = random.Random(plan.seed)
    events = sorted([(op.at, 0, i) for i, op in enumerate(plan.ops)]
                    + [(f.at, 1, i) for i, f in enumerate(plan.faults)])
    for at, kind, index in events:
        while world.now() < at:
            world.tick()
            time.sleep(min(0.05, max(0.0, at - world.now())))
        if kind == 0:
            producer.publish(plan.ops[index])
        else:
            fault = plan.faults[index]
            world.inject(fault.kind, fault.seconds, rng)
        world.tick()
        if world.now() > 10 and not world.rss:
            world.sample_rss()
    world.heal()
    published = time.monotonic()
    outcome = _settle(world, producer, settle_timeout)
    outcome.settled_after = time.monotonic() - published
    world.sample_rss()
    producer.client.close()
    return producer.ledger, outcome


def _settle(world: World, producer: Producer, timeout: float) -> Outcome:
    ledger = producer.ledger
    store = producer.client.results
    assert store is not None
    deadline = time.monotonic() + timeout
    quiet_needed = 8.0 if world.kind == "amqp" else 2.0  # RabbitMQ's API samples every ~5 s
    quiet_since: float | None = None
    with world.inspect() as inspector:
        while True:
            world.tick()
            results = {tid: store.fetch(tid) for tid in ledger.expected}
            final = all(r is not None and r.get("status") in READY_STATES
                        for r in results.values())
            try:
                stats = inspector.stats(world.queue)
                dead = inspector.dead_letters(world.queue, limit=100_000)
            except QscaleError:
                final = False
                stats, dead = None, []
            idle = stats is not None and stats.ready == 0 and stats.delayed == 0 \
                and stats.in_flight == 0 and len(dead) >= len(ledger.hostile)
            now = time.monotonic()
            if final and idle:
                quiet_since = quiet_since or now
                if now - quiet_since >= quiet_needed:
                    break
            else:
                quiet_since = None
            if now > deadline:
                break
            time.sleep(0.5)
    with open(world.history, encoding="utf-8") as history:
        events = [json.loads(line) for line in history if line.strip()]
    return Outcome(
        results=results, events=events, dead=[(d.body, d.reason) for d in dead],
        stats={"ready": stats.ready if stats else None,
               "in_flight": stats.in_flight if stats else None,
               "delayed": stats.delayed if stats else None,
               "dead": stats.dead if stats else None},
        settled_after=0.0, settled=quiet_since is not None and final and idle,
        diagnosis="" if quiet_since is not None and final and idle else world.diagnose())
