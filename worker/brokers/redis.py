"""Redis broker: at-least-once delivery with atomic, leased claims (redis-py + Lua).

Why not kombu's Redis transport: it pops a message and records it as unacked in
a second step, so a crash in between loses it. Here every state change is one
Lua script, so a message is always in exactly one place.

Key layout for a queue `Q` (prefix `qscale:q:Q:`; results, checkpoints and chords
live under other prefixes, worker.results, so no queue name can reach them):

    qscale:q:Q:ready             list, priority 0 / None; the exact bytes published
    qscale:q:Q:ready:<1..9>      list per priority, checked 9 -> 1 before `ready`
                                 (producers LPUSH, claims RPOP: FIFO per list)
    qscale:q:Q:redelivered       list checked first: messages given back by requeue or
                                 reclaimed from dead owners; entry = priority digit + body
    qscale:q:Q:delayed           zset, score = due time (ms, server clock),
                                 member = 16-char unique token + priority digit + body
    qscale:q:Q:inflight:<owner>  hash tag -> body: claims held by one consumer
    qscale:q:Q:owners            set of owners that may hold claims on Q
    qscale:q:Q:redeliveries      hash SHA-1(body) -> times reclaimed from a dead owner
    qscale:q:Q:dead              list of JSON records {body, [body_encoding: "base64"],
                                 reason, detail, failed_at}, oldest first
    qscale:alive:<owner>         liveness key, TTL = lease; renewed by claim/heartbeat

A tag is `<seq>.<priority>`, unique within its owner. The owner is
`<consumer_id>/<random>`, so a restarted process never inherits a predecessor's
claims. A claim moves due delayed messages to ready and, at most once a second,
gives back every claim of owners whose liveness key expired (flagged
redelivered). `close()` keeps claims: they return after the lease. A message
reclaimed more than `max_redeliveries` times (each time its worker died with it,
e.g. an OOM kill of the whole pod) comes with `Delivery.dead_reason`: the worker
settles it dead without running it (recording FAILURE), so it cannot take down
every worker forever; its count is dropped once it is settled. A claim returns at
most MAX_CLAIM_BYTES of bodies (at least one message), so a queue of large
messages cannot blow up the worker's memory.

Errors: a refusal of one operation (WRONGTYPE: a key of another type, a bad
priority) raises MessageRefused, permanent for that message; a connection problem
marks the broker disconnected and raises BrokerUnavailable (a claim first waits
up to 1 s of its timeout, so a claim loop does not spin); the next call
reconnects (redis-py's pool) without internal retries, so the caller owns the
retry policy. A claim whose reply was lost is remembered and its possible claims
are given back on the next successful call.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from worker.brokers import _redis_scripts as scripts
from worker.brokers.base import (
    DETAIL_BYTES,
    REASON_BYTES,
    Broker,
    DeadLetter,
    Delivery,
    QueueStats,
    clip,
)
from worker.envelope import check_priority
from worker.errors import BadMessage, BrokerUnavailable, ConfigError, MessageRefused

log = logging.getLogger(__name__)

MAX_CLAIM = 1000          # per claim call; keeps one script's work bounded
MAX_CLAIM_BYTES = 16 << 20  # bodies per claim call (always at least one message)
DUE_PER_CLAIM = 1000      # delayed messages promoted per queue per claim
RECLAIM_INTERVAL = 1.0    # seconds between dead-owner sweeps from one consumer
POLL_MIN, POLL_MAX = 0.002, 0.02  # idle claim polling, growing to POLL_MAX
PUBLISH_CHUNK = 1000      # bodies per LPUSH in publish_many
OUTAGE_PAUSE = 1.0        # a failed claim waits this long (within its timeout) to raise
# Refusals that clear by themselves (a full memory, a script running, a restart, a
# failover, a lagging replica under min-replicas-to-write, a failed save): the broker is
# unavailable for now, not refusing this message.
_TRANSIENT = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "READONLY", "NOREPLICAS", "MISCONF",
              "TRYAGAIN", "CLUSTERDOWN", "NOTREADY")


def key_prefix(queue: str) -> str:
    """The prefix of every key of `queue` (see the module docstring)."""
    return f"qscale:q:{queue}:"


def ready_key(queue: str, priority: int | None = None) -> str:
    """The list a message of `priority` waits in; tests may LPUSH raw bytes here."""
    prio = _check_priority(priority)
    return f"{key_prefix(queue)}ready" + (f":{prio}" if prio else "")


def _check_priority(priority: int | None) -> int:
    try:
        return check_priority(priority) or 0
    except BadMessage as exc:
        raise MessageRefused(exc.reason) from None


def _token() -> bytes:
    return os.urandom(8).hex().encode()


def _encode_record(body: bytes, reason: str, detail: str, failed_at: float) -> bytes:
    record: dict[str, Any] = {"reason": reason, "detail": detail, "failed_at": failed_at}
    try:
        record["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        record["body"] = base64.b64encode(body).decode("ascii")
        record["body_encoding"] = "base64"
    return json.dumps(record, separators=(",", ":")).encode()


def _decode_record(queue: str, raw: bytes) -> DeadLetter:
    """Parse a DLQ record; a corrupt record is returned whole as the body."""
    try:
        record = json.loads(raw)
        text = record["body"]
        body = (base64.b64decode(text) if record.get("body_encoding") == "base64"
                else text.encode("utf-8"))
        return DeadLetter(queue=queue, body=body, reason=str(record.get("reason", "")),
                          detail=str(record.get("detail", "")),
                          failed_at=float(record.get("failed_at", 0.0)))
    except (ValueError, KeyError, TypeError, AttributeError):
        return DeadLetter(queue=queue, body=raw, reason="corrupt dead-letter record",
                          detail="", failed_at=0.0)


class RedisBroker(Broker):
    """A Redis connection for one worker (or producer, or the controller)."""

    def __init__(self, url: str, *, consumer_id: str | None = None,
                 lease_seconds: float = 10.0, max_redeliveries: int = 5,
                 max_body_bytes: int = 0) -> None:
        if lease_seconds <= 0:
            raise ValueError("lease_seconds must be positive")
        self.max_redeliveries = max(0, max_redeliveries)
        self.max_body_bytes = max(0, max_body_bytes)  # longer bodies come cut (0: any)
        self.url = url
        self.consumer_id = consumer_id or uuid.uuid4().hex[:12]
        self.owner = f"{self.consumer_id}/{uuid.uuid4().hex[:8]}"
        self.lease_ms = max(1, round(lease_seconds * 1000))
        self._redis = redis.Redis.from_url(
            url, socket_connect_timeout=3, socket_timeout=10, socket_keepalive=True,
            retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0)
        self._claim = self._redis.register_script(scripts.CLAIM)
        self._schedule = self._redis.register_script(scripts.SCHEDULE)
        self._retry_later = self._redis.register_script(scripts.RETRY_LATER)
        self._dead_letter = self._redis.register_script(scripts.DEAD_LETTER)
        self._requeue = self._redis.register_script(scripts.REQUEUE)
        self._release_range = self._redis.register_script(scripts.RELEASE_RANGE)
        self._stats = self._redis.register_script(scripts.STATS)
        self._purge_dead = self._redis.register_script(scripts.PURGE_DEAD)
        self._seq = 0
        self._last_reclaim = 0.0
        self._last_skip_log = -1e9
        self._uncertain: list[tuple[int, int, tuple[str, ...]]] = []
        self._rotation = 0
        self._connected = True

    # -- plumbing --

    @contextmanager
    def _op(self, what: str) -> Iterator[None]:
        """Turn connection trouble into BrokerUnavailable and track `connected()`."""
        try:
            yield
        except redis.AuthenticationError as exc:
            self._connected = False
            raise ConfigError(f"redis refused the credentials in the broker URL: {exc}") from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._connected = False
            raise BrokerUnavailable(f"redis {what} failed: {exc}") from exc
        except redis.ResponseError as exc:
            text = str(exc)
            if text.startswith(_TRANSIENT):
                self._connected = False
                raise BrokerUnavailable(f"redis {what} refused: {text}") from exc
            raise MessageRefused(f"redis refused {what}: {text}") from exc
        self._connected = True

    def _release_uncertain(self) -> None:
        """Give back claims a lost claim reply may have made for us."""
        while self._uncertain:
            first, last, prefixes = self._uncertain[0]
            moved = self._release_range(args=[self.owner, first, last, *prefixes])
            if moved:
                log.warning("gave back %d claims whose reply was lost", moved)
            self._uncertain.pop(0)

    # -- producing --

    def publish(self, queue: str, body: bytes, *, delay: float = 0.0,
                priority: int | None = None) -> None:
        prio = _check_priority(priority)
        with self._op("publish"):
            if delay > 0:
                self._schedule(args=[key_prefix(queue), _token(), str(prio), body,
                                     max(1, round(delay * 1000))])
            else:
                self._redis.lpush(ready_key(queue, prio), body)

    def publish_many(self, queue: str, bodies: Sequence[bytes], *, delay: float = 0.0,
                     priority: int | None = None) -> None:
        if not bodies:
            return
        key = ready_key(queue, priority)
        prio = str(_check_priority(priority))
        with self._op("publish_many"):
            pipe = self._redis.pipeline(transaction=False)
            if delay > 0:
                for body in bodies:
                    self._schedule(args=[key_prefix(queue), _token(), prio, body,
                                         max(1, round(delay * 1000))], client=pipe)
            else:
                for start in range(0, len(bodies), PUBLISH_CHUNK):
                    pipe.lpush(key, *bodies[start:start + PUBLISH_CHUNK])
            pipe.execute()

    # -- consuming --

    def claim(self, queues: Sequence[str], max_count: int, timeout: float) -> list[Delivery]:
        if not queues or max_count <= 0:
            return []
        count = min(max_count, MAX_CLAIM)
        deadline = time.monotonic() + max(0.0, timeout)
        pause = POLL_MIN
        while True:
            try:
                deliveries = self._claim_once(queues, count)
            except BrokerUnavailable:
                # Spend (part of) the timeout here so a caller's claim loop cannot spin.
                time.sleep(max(0.0, min(deadline - time.monotonic(), OUTAGE_PAUSE)))
                raise
            remaining = deadline - time.monotonic()
            if deliveries or remaining <= 0:
                return deliveries
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX)

    def _claim_once(self, queues: Sequence[str], count: int) -> list[Delivery]:
        # Rotate the starting queue so one busy queue cannot starve the others.
        start = self._rotation % len(queues)
        self._rotation += 1
        ordered = tuple(queues[start:]) + tuple(queues[:start])
        prefixes = tuple(key_prefix(q) for q in ordered)
        now = time.monotonic()
        reclaim = now - self._last_reclaim >= RECLAIM_INTERVAL
        first = self._seq
        self._seq += count
        with self._op("claim"):
            self._release_uncertain()
            try:
                reply = self._claim(args=[self.owner, self.lease_ms, count, first,
                                          int(reclaim), DUE_PER_CLAIM,
                                          self.max_redeliveries, MAX_CLAIM_BYTES,
                                          self.max_body_bytes, *prefixes])
            except (redis.ConnectionError, redis.TimeoutError):
                self._uncertain.append((first, first + count - 1, prefixes))
                raise
        if reclaim:
            self._last_reclaim = now
            if reply[0]:
                log.info("reclaimed %d messages from dead consumers", reply[0])
        if reply[1]:
            log.warning("%d claimed messages were redelivered more than %d times, each "
                        "time their worker died: they are settled dead, not run", reply[1],
                        self.max_redeliveries)
        if reply[2]:
            skipped = [ordered[int(i) - 1] for i in reply[2].decode().split(",")]
            if now - self._last_skip_log > 30:
                self._last_skip_log = now
                log.error("queue(s) %s not served: a key of another type holds their name "
                          "(another program's?); the other queues are", ",".join(skipped))
        return self._deliveries(ordered, reply)

    @staticmethod
    def _deliveries(queues: Sequence[str], reply: list[Any]) -> list[Delivery]:
        return [Delivery(queue=queues[reply[i + 3] - 1], body=reply[i + 1],
                         tag=reply[i].decode(), redelivered=bool(reply[i + 2]),
                         dead_reason=f"redelivered {reply[i + 4] - 1} times: the worker "
                         "died while running it" if reply[i + 4] else "",
                         size=int(reply[i + 5]))
                for i in range(3, len(reply), 6)]

    def held(self, queues: Sequence[str]) -> list[Delivery]:
        with self._op("held"):
            pipe = self._redis.pipeline(transaction=False)
            for queue in queues:
                pipe.hgetall(f"{key_prefix(queue)}inflight:{self.owner}")
            replies = pipe.execute()
        return [Delivery(queue=queue, body=body, tag=tag.decode())
                for queue, held in zip(queues, replies, strict=True)
                for tag, body in held.items()]

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        by_queue: dict[str, list[str]] = defaultdict(list)
        for d in deliveries:
            by_queue[d.queue].append(d.tag)
        with self._op("ack"):
            pipe = self._redis.pipeline(transaction=False)
            for queue, tags in by_queue.items():
                pipe.hdel(f"{key_prefix(queue)}inflight:{self.owner}", *tags)
            self._forget_redeliveries(deliveries, pipe)
            removed = sum(pipe.execute()[:len(by_queue)])
        if removed < len(deliveries):
            log.warning("%d acked claims had already been reclaimed (lease lost); "
                        "they run again", len(deliveries) - removed)

    def _forget_redeliveries(self, settled: Sequence[Delivery], pipe: Any = None) -> None:
        """Drop the redelivery counts of settled messages (only redelivered ones have one)."""
        digests: dict[str, list[str]] = defaultdict(list)
        for d in settled:
            if d.redelivered and self.max_redeliveries:
                digests[d.queue].append(hashlib.sha1(d.body).hexdigest())
        for queue, fields in digests.items():
            (pipe or self._redis).hdel(f"{key_prefix(queue)}redeliveries", *fields)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        by_queue: dict[str, list[str]] = defaultdict(list)
        for d in deliveries:
            by_queue[d.queue].append(d.tag)
        with self._op("requeue"):
            for queue, tags in by_queue.items():
                self._requeue(args=[key_prefix(queue), self.owner, *tags])

    def retry_later(self, delivery: Delivery, body: bytes, delay: float) -> None:
        with self._op("retry_later"):
            done = self._retry_later(args=[key_prefix(delivery.queue), self.owner,
                                           delivery.tag, _token(), body,
                                           max(0, round(delay * 1000))])
            self._forget_redeliveries([delivery])
        if not done:
            log.warning("retry of %s skipped: claim already reclaimed, it runs again",
                        delivery.tag)

    def dead_letter(self, delivery: Delivery, reason: str, detail: str = "",
                    body: bytes | None = None) -> None:
        record = _encode_record(delivery.body if body is None else body,
                                clip(reason, REASON_BYTES), clip(detail, DETAIL_BYTES),
                                time.time())
        with self._op("dead_letter"):
            done = self._dead_letter(args=[key_prefix(delivery.queue), self.owner,
                                           delivery.tag, record])
            self._forget_redeliveries([delivery])
        if not done:
            log.warning("dead-letter of %s skipped: claim already reclaimed, it runs again",
                        delivery.tag)

    def heartbeat(self) -> None:
        with self._op("heartbeat"):
            self._redis.set(f"qscale:alive:{self.owner}", b"1", px=self.lease_ms)

    def connected(self) -> bool:
        return self._connected

    def close(self) -> None:
        """Drop the connections. Claims stay leased and return after the lease."""
        self._redis.close()
        self._redis.connection_pool.disconnect()

    # -- inspection --

    def stats(self, queue: str) -> QueueStats:
        with self._op("stats"):
            ready, in_flight, delayed, dead = self._stats(args=[key_prefix(queue)])
        return QueueStats(queue=queue, ready=int(ready), in_flight=int(in_flight),
                          delayed=int(delayed), dead=int(dead))

    def dead_letters(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        if limit <= 0:
            return []
        with self._op("dead_letters"):
            raw = self._redis.lrange(f"{key_prefix(queue)}dead", 0, limit - 1)
        return [_decode_record(queue, item) for item in raw]

    def requeue_dead(self, queue: str, limit: int | None = None,
                     before: Callable[[bytes], None] | None = None) -> int:
        """Move the oldest dead letters back to the tail of `queue` (one transaction)."""
        dead = f"{key_prefix(queue)}dead"
        end = -1 if limit is None else limit - 1
        if limit is not None and limit <= 0:
            return 0
        with self._op("requeue_dead"), self._redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(dead)
                    records = cast("list[bytes]", pipe.lrange(dead, 0, end))  # immediate mode
                    if not records:
                        pipe.unwatch()
                        return 0
                    bodies = [_decode_record(queue, r).body for r in records]
                    if before is not None:
                        for body in bodies:
                            before(body)
                    pipe.multi()
                    pipe.ltrim(dead, len(records), -1)
                    for start in range(0, len(bodies), PUBLISH_CHUNK):
                        pipe.lpush(ready_key(queue), *bodies[start:start + PUBLISH_CHUNK])
                    pipe.execute()
                    return len(records)
                except redis.WatchError:
                    continue

    def purge_dead(self, queue: str) -> int:
        with self._op("purge_dead"):
            return int(self._purge_dead(args=[key_prefix(queue)]))

