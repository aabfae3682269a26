"""The supervisor's single broker connection: claims, heartbeats and settlements.

Broker trouble never raises out of here. Errors come in two kinds (worker.errors):
* temporary (BrokerUnavailable: the connection is gone or the broker is busy): the
  link marks itself disconnected, keeps unsettled work for later, and probes the
  broker with back-off;
* permanent for one message (MessageRefused: the broker will never take it, e.g. a
  key of another type, a queue this user may not create): that message's
  settlement changes, the connection stays. A refused follow-up (chain step, chord
  callback) records FAILURE for the task it would have started and what depends
  on it; a refused retry records FAILURE and dead-letters the message; a refused
  dead-letter acks it (its FAILURE is recorded already).

Acks are batched (one broker call per batch); follow-ups of an outcome are
published before it is settled, and never twice for the same outcome.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import selectors
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from worker.brokers import Broker, Delivery, open_broker, redact_url
from worker.envelope import SIZE_HEADROOM
from worker.errors import MessageRefused
from worker.results import ResultStore, error_record
from worker.runtime.outcome import FailurePlan, FollowUp, Outcome, Settle
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)

ACK_BATCH = 64           # flush acks once this many are waiting...
ACK_MAX_AGE = 0.01       # ...or the oldest has waited this long (seconds)
MAX_SETTLE_TRIES = 20    # unexpected errors settling one message: then hand it back
BREAKS_ALLOWED = 3       # a message whose settlement broke the connection this often...
SAFE_HEAD = 512          # ...is dead-lettered plainly: this much body, a short reason
BREAKERS_KEPT = 1024
BACKOFF_MIN, BACKOFF_MAX = 0.25, 10.0

Opener = Callable[..., Broker]


@dataclass
class _Pending:
    delivery: Delivery
    outcome: Outcome
    follow_ups_sent: int = 0
    tries: int = 0


def _digest(body: bytes) -> bytes:
    return hashlib.sha1(body, usedforsecurity=False).digest()


class BrokerLink:
    """Owns the Broker object; every method is safe to call while the broker is down."""

    def __init__(self, settings: WorkerSettings, consumer_id: str, prefetch: int,
                 opener: Opener = open_broker) -> None:
        self.settings = settings
        self.consumer_id = consumer_id
        self.prefetch = prefetch
        self._opener = opener
        self.broker: Broker | None = None
        self.connected = False
        self._retry_at = 0.0
        self._backoff = BACKOFF_MIN
        self._failures = 0
        self.epoch = 0  # counts failures: a descriptor from before one may be reused
        self._watch: tuple[int, int] | None = None  # (fd, epoch) registered by watch()
        self._heartbeat_every = settings.lease_seconds / 3
        self._next_heartbeat = 0.0
        self._acks: list[Delivery] = []
        self._acks_since = 0.0
        self._requeues: list[Delivery] = []
        self._settles: list[_Pending] = []
        self._store: ResultStore | None = None
        self.refused = 0  # settlements the broker refused for good (for tests and logs)
        # SHA-1 of a body -> settlements of it that broke the connection. RabbitMQ hands a
        # message back when its connection dies, so one whose settlement breaks the
        # connection (a header the broker rejects with the whole connection) would come
        # back into the same settlement for ever; after BREAKS_ALLOWED it goes plain.
        self._breakers: dict[bytes, int] = {}

    @property
    def unsettled(self) -> int:
        return len(self._acks) + len(self._requeues) + len(self._settles)

    def unsettled_tags(self) -> set[str]:
        """Tags of deliveries whose settlement is queued here (the reconciler's view)."""
        tags = {d.tag for d in self._acks} | {d.tag for d in self._requeues}
        return tags | {p.delivery.tag for p in self._settles}

    # -- connection --

    def _failed(self, what: str, exc: BaseException) -> None:
        if self.connected or self._failures % 20 == 0:
            log.warning("broker %s failed (%d in a row), retrying in %.2fs: %s: %s", what,
                        self._failures + 1, self._backoff, type(exc).__name__, exc)
        self._failures += 1
        self.epoch += 1
        self.connected = False
        now = time.monotonic()
        self._retry_at = now + self._backoff
        self._backoff = min(BACKOFF_MAX, self._backoff * 2)

    def maintain(self, now: float) -> None:
        """Connect or probe when due; heartbeat every lease/3 while connected."""
        if not self.connected:
            if now < self._retry_at:
                return
            try:
                if self.broker is None:
                    self.broker = self._opener(
                        self.settings.broker_url, consumer_id=self.consumer_id,
                        lease_seconds=self.settings.lease_seconds, prefetch=self.prefetch,
                        max_priority=self.settings.max_priority,
                        max_redeliveries=self.settings.max_redeliveries,
                        amqp_queue_type=self.settings.amqp_queue_type,
                        max_body_bytes=self.settings.max_message_bytes + SIZE_HEADROOM)
                self.broker.heartbeat()
            except Exception as exc:
                self._failed("connect", exc)
                return
            log.info("broker connected url=%s", redact_url(self.settings.broker_url))
            self.connected = True
            self._failures = 0
            self._backoff = BACKOFF_MIN
            self._next_heartbeat = now + self._heartbeat_every
            return
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._heartbeat_every
            self._call("heartbeat", lambda b: b.heartbeat())

    def _call(self, what: str, op: Callable[[Broker], object], *,
              refusable: bool = False) -> bool:
        """Run `op`; False when the broker is down. MessageRefused reaches the caller only
        where a refusal means something (`refusable`); elsewhere any error is treated
        as a lost connection."""
        if not self.connected or self.broker is None:
            return False
        try:
            op(self.broker)
        except MessageRefused as refusal:
            if refusable:
                raise
            # Refused, not disconnected: the connection stays, settlements go on.
            log.warning("broker refused %s: %s", what, refusal)
            return False
        except Exception as exc:
            self._failed(what, exc)
            return False
        return True

    def seconds_to_heartbeat(self, now: float) -> float:
        return max(0.0, self._next_heartbeat - now) if self.connected else \
            max(0.0, self._retry_at - now)

    # -- claiming --

    def claim(self, queues: Sequence[str], count: int, timeout: float) -> list[Delivery]:
        got: list[Delivery] = []

        def op(broker: Broker) -> None:
            got.extend(broker.claim(queues, count, timeout))

        self._call("claim", op)
        return got

    def held(self, queues: Sequence[str]) -> list[Delivery] | None:
        """What the broker says this worker holds; None when it cannot tell now (unknown
        is not "nothing": the caller must not act on it)."""
        got: list[Delivery] | None = None

        def op(broker: Broker) -> None:
            nonlocal got
            got = broker.held(queues)

        return got if self._call("held", op) else None

    def watch(self, selector: selectors.BaseSelector, data: object) -> None:
        """Keep the broker's descriptor (RabbitMQ's socket) in `selector`, so messages it
        pushes wake the caller; re-registered after any failure (a new connection may
        reuse the number). Brokers without one (Redis) are polled instead."""
        fd = self.broker.wakeup_fd() if self.connected and self.broker is not None else None
        watch = None if fd is None else (fd, self.epoch)
        if watch == self._watch:
            return
        if self._watch is not None:
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(self._watch[0])
        self._watch = None
        if watch is not None:
            selector.register(watch[0], selectors.EVENT_READ, data)
            self._watch = watch

    @property
    def watched(self) -> bool:
        """Whether the broker's descriptor is in the selector (no need to poll claims)."""
        return self._watch is not None

    def read_ahead(self, count: int) -> None:
        """How many messages the broker may push beyond those claimed (RabbitMQ)."""
        if self.broker is not None:
            self.broker.read_ahead(count)

    def buffered(self) -> bool:
        """A claim would return messages already received, without waiting."""
        return self.connected and self.broker is not None and self.broker.buffered()

    def received(self) -> int:
        """Messages the broker pushed that no claim has taken yet (0 when disconnected:
        the broker has taken them back)."""
        return self.broker.received() if self.connected and self.broker is not None else 0

    def pause_consuming(self) -> None:
        """Receive nothing until the next claim; give back what was received unclaimed."""
        self._call("pause", lambda b: b.pause_consuming())

    def receive(self) -> None:
        """Read what the broker pushed (its descriptor was readable) without claiming."""
        self._call("receive", lambda b: b.heartbeat())

    # -- settling --

    def settle(self, delivery: Delivery, outcome: Outcome) -> None:
        """Queue the outcome's broker work; `flush()` performs it."""
        if self._breakers and self._breakers.get(_digest(delivery.body), 0) >= BREAKS_ALLOWED:
            outcome = self._plain(delivery, outcome)
        if outcome.settle is Settle.ACK and not outcome.follow_ups:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(delivery)
        elif outcome.settle is Settle.REQUEUE:
            self._requeues.append(delivery)
        else:
            self._settles.append(_Pending(delivery, outcome))

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        self._requeues.extend(deliveries)

    def flush(self, now: float, force: bool = False) -> None:
        """Send settlements: all non-acks now, acks when the batch is full or old."""
        if not self.connected:
            return
        while self._settles:
            item = self._settles[0]
            try:
                done = self._settle_one(item)
            except Exception as exc:  # a bug, not the broker: bounded, then hand it back
                log.exception("settling task %s failed", item.outcome.task_id)
                done = False
                item.tries += 1
                if item.tries >= MAX_SETTLE_TRIES:
                    log.error("giving up settling task %s (%s); handing it back",
                              item.outcome.task_id, exc)
                    self._requeues.append(item.delivery)
                    done = True
            if not done:
                if not self.connected:  # this settlement broke the connection
                    self._broke(item.delivery)
                return
            self._settles.pop(0)
        if self._requeues:
            batch = self._requeues
            if self._call("requeue", lambda b: b.requeue(batch)):
                self._requeues = []
        if self._acks and (force or len(self._acks) >= ACK_BATCH
                           or now - self._acks_since >= ACK_MAX_AGE):
            acks = self._acks
            if self._call("ack", lambda b: b.ack(acks)):
                self._acks = []

    def _settle_one(self, item: _Pending) -> bool:
        """Follow-ups first (each once), then the settlement; False: try again later."""
        outcome, delivery = item.outcome, item.delivery
        while item.follow_ups_sent < len(outcome.follow_ups):
            follow = outcome.follow_ups[item.follow_ups_sent]
            def publish(broker: Broker, follow: FollowUp = follow) -> None:
                broker.publish(follow.queue, follow.body, delay=follow.delay,
                               priority=follow.priority)

            try:
                if not self._call("publish follow-up", publish, refusable=True):
                    return False
            except MessageRefused as refusal:
                if not self._record(follow.plan, "ChainError",
                                    f"could not be sent: the broker refused it: {refusal}"):
                    return False
                log.error("follow-up of task %s refused by the broker: %s", outcome.task_id,
                          refusal)
                self.refused += 1
            item.follow_ups_sent += 1
        if outcome.settle is Settle.ACK:
            if not self._acks:
                self._acks_since = time.monotonic()
            self._acks.append(delivery)
            return True
        if outcome.settle is Settle.RETRY and outcome.retry_body is not None:
            body = outcome.retry_body
            try:
                return self._call("retry", lambda b: b.retry_later(
                    delivery, body, outcome.retry_delay), refusable=True)
            except MessageRefused as refusal:
                reason = f"the broker refused the retry: {refusal}"
                if not self._record(outcome.plan, "RetryRefused", reason):
                    return False
                self.refused += 1
                item.outcome = Outcome(settle=Settle.DEAD, status="dead", task=outcome.task,
                                       task_id=outcome.task_id, reason=reason)
                return self._settle_one(item)
        if outcome.settle is Settle.RETRY:  # no new body: give it back unchanged
            return self._call("requeue", lambda b: b.requeue([delivery]))
        try:
            return self._call("dead-letter", lambda b: b.dead_letter(
                delivery, outcome.reason or outcome.status, outcome.detail,
                body=outcome.dead_body), refusable=True)
        except MessageRefused as refusal:
            # FAILURE is recorded already; keeping it would loop forever.
            log.error("the broker refused to dead-letter task %s (%s): %s; acking it, its "
                      "body was %r", outcome.task_id, outcome.reason, refusal,
                      delivery.body[:200])
            self.refused += 1
            self._acks.append(delivery)
            return True

    def _broke(self, delivery: Delivery) -> None:
        key = _digest(delivery.body)
        self._breakers[key] = self._breakers.get(key, 0) + 1
        while len(self._breakers) > BREAKERS_KEPT:
            del self._breakers[next(iter(self._breakers))]

    def _plain(self, delivery: Delivery, outcome: Outcome) -> Outcome:
        """The settlement that keeps breaking the connection, reduced to what cannot: a
        dead letter with the body's head and a short reason (FAILURE recorded)."""
        reason = (f"settling it broke the broker connection {BREAKS_ALLOWED} times "
                  f"({outcome.settle.value}: {outcome.reason[:200]})")
        log.error("task %s: %s; dead-lettering its first %d bytes", outcome.task_id, reason,
                  SAFE_HEAD)
        self._record(outcome.plan, "SettleFailed", reason)
        return Outcome(settle=Settle.DEAD, status="dead", task=outcome.task,
                       task_id=outcome.task_id, reason=reason,
                       dead_body=delivery.body[:SAFE_HEAD])

    def _record(self, plan: FailurePlan | None, kind: str, message: str) -> bool:
        """FAILURE for `plan` (best effort, short timeouts); False: try again later."""
        url = self.settings.effective_result_url
        if plan is None or url is None:
            return True
        try:
            if self._store is None:
                self._store = ResultStore(url, self.settings.result_ttl, socket_timeout=2.0)
            self._store.record_failure(plan.task_id, plan.task, plan.attempt,
                                       error_record(kind, message, ""), chain=plan.chain,
                                       chord=plan.chord)
        except Exception as exc:
            log.warning("could not record FAILURE for task %s: %s", plan.task_id, exc)
            return False
        return True

    def close(self) -> None:
        if self.broker is not None:
            try:
                self.broker.close()
            except Exception as exc:
                log.warning("broker close failed: %s", exc)
            self.broker = None
        self.connected = False
        if self._store is not None:
            with contextlib.suppress(Exception):
                self._store.close()
