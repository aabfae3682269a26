"""Adversarial review of issue #9 (Redis): what a hostile producer or an unlucky
operator can still do to a worker through the real broker."""

from __future__ import annotations

import pytest
import redis

from tests.runtime_harness import WorkerProcess, broker, wait_until
from worker.brokers.redis import key_prefix, ready_key

pytestmark = [pytest.mark.redis]


def _peak_rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        fields = dict(line.split(":", 1) for line in status)
    return int(fields["VmHWM"].split()[0]) // 1024


def test_an_oversized_body_does_not_multiply_in_the_supervisor(redis_url: str,
                                                               queue_name: str) -> None:
    """One 64 MiB body (QSCALE_MAX_MESSAGE_BYTES is 1 MiB) LPUSHed by a producer: the claim
    returns it whatever its size ("at least one message"), the supervisor pickles it
    to a child, gets the BadMessage back and builds a JSON dead-letter record holding
    the whole body again. Its peak RSS grows ~4x the body (~260 MiB here): under a pod
    memory limit the supervisor is OOM-killed, the message is reclaimed by the next
    pod, and the redelivery cap does not help (a capped message is dead-lettered by
    the same path)."""
    worker = WorkerProcess(redis_url, queue_name).start()
    r = redis.Redis.from_url(redis_url)
    size_mib = 64
    try:
        worker.wait_ready()
        before = _peak_rss_mib(worker.pid)
        r.lpush(ready_key(queue_name), b'{"v":1,"id":"big","task":"rt.record","args":["'
                + b"x" * (size_mib << 20) + b'"]}')
        with broker(redis_url) as b:
            wait_until(lambda: b.stats(queue_name).dead == 1, 60, "the dead letter", worker)
        grown = _peak_rss_mib(worker.pid) - before
        assert grown < size_mib, (f"supervisor peak RSS grew {grown} MiB for one "
                                  f"{size_mib} MiB body")
    finally:
        worker.stop()
        r.delete(key_prefix(queue_name) + "dead")


def test_a_transient_redis_write_refusal_is_not_a_permanent_failure(
        redis_url: str, queue_name: str) -> None:
    """`NOREPLICAS` (min-replicas-to-write while a replica lags) and `MISCONF` (a failed
    RDB save, e.g. a full disk) refuse every write for a while, then clear. RedisBroker
    treats only OOM/BUSY/LOADING/MASTERDOWN/READONLY as unavailable; these become
    MessageRefused, "permanent for that message": a retry is turned into FAILURE
    (RetryRefused), the dead-letter is refused too, so the message is *acked* - once
    the replica is back it is deleted, in no queue and no DLQ, with FAILURE recorded
    for a task that only had to wait."""
    import time
    import uuid

    from tests.checker.brokers import PrivateRedis
    from worker.brokers.redis import RedisBroker
    from worker.results import ResultStore
    from worker.runtime.link import BrokerLink
    from worker.runtime.outcome import FailurePlan, Outcome, Settle
    from worker.settings import load_settings

    node = PrivateRedis()
    node.start()
    try:
        admin = redis.Redis.from_url(node.url)
        link = BrokerLink(load_settings(broker_url=node.url, result_url=redis_url,
                                        lease_seconds=30, queues=queue_name), "att9", 0)
        link.maintain(time.monotonic())
        RedisBroker(node.url).publish(queue_name, b"attempt-1")
        [delivery] = link.claim([queue_name], 1, 1.0)
        plan = FailurePlan(task_id=f"att9-{uuid.uuid4().hex}", task="att9.flaky")

        admin.config_set("min-replicas-to-write", 1)      # the replica lags...
        link.settle(delivery, Outcome(Settle.RETRY, "retry", retry_body=b"attempt-2",
                                      retry_delay=0.0, plan=plan))
        link.flush(time.monotonic(), force=True)
        admin.config_set("min-replicas-to-write", 0)      # ...and catches up
        deadline = time.monotonic() + 10
        while link.unsettled and time.monotonic() < deadline:
            time.sleep(0.3)
            link.maintain(time.monotonic())
            link.flush(time.monotonic(), force=True)

        prefix = key_prefix(queue_name)
        keys = {k.decode(): admin.type(k).decode() for k in admin.keys(prefix + "*")}
        held = sum(admin.hlen(k) for k, t in keys.items() if t == "hash" and "inflight" in k)
        where = {"delayed": admin.zcard(prefix + "delayed"), "dead": admin.llen(prefix + "dead"),
                 "ready": admin.llen(ready_key(queue_name)), "held": held}
        record = ResultStore(redis_url).fetch(plan.task_id)
        failed = record is not None and record["status"] == "FAILURE"
        assert not failed and sum(where.values()) == 1, (
            f"message places {where}; FAILURE recorded: {failed} "
            f"({record and record['error']['message'][:90]!r})")
    finally:
        node.stop()


def test_a_refused_claim_does_not_starve_the_settlements_of_finished_tasks(
        redis_url: str, queue_name: str) -> None:
    """A worker on two queues; while it runs two tasks from the first, a key of the
    second queue turns into another type (another program, an operator's SET). CLAIM
    checks every key first and refuses (WRONGTYPE -> MessageRefused); BrokerLink._call
    treats a refused claim as a lost connection. Each turn: maintain() reconnects
    (its heartbeat renews the lease), claim() fails and disconnects, flush() is then
    skipped - the finished tasks are never acked, their claims stay under a live
    owner for the pod's lifetime, and nothing else can take them."""
    from tests import runtime_tasks as rt
    from tests.runtime_harness import publish

    other = f"{queue_name}-b"
    key = f"rt:{queue_name}"
    r = redis.Redis.from_url(redis_url)
    worker = WorkerProcess(redis_url, f"{queue_name},{other}").start()
    try:
        worker.wait_ready()
        ids = publish(redis_url, queue_name, "rt.sleep_record", [[key, 2.0]] * 2)
        wait_until(lambda: len(rt.runs(f"{key}:started")) == 2, 15, "both started", worker)
        r.set(key_prefix(other) + "dead", b"another program's string")
        wait_until(lambda: set(ids) <= set(rt.runs(key)), 15, "both finished", worker)
        with broker(redis_url) as b:
            wait_until(lambda: b.stats(queue_name).in_flight == 0, 15,
                       "the finished tasks acked", worker)
    finally:
        worker.stop()
        r.delete(key_prefix(other) + "dead")


def test_a_result_store_that_hangs_does_not_turn_successes_into_raw_dead_letters(
        redis_url: str, queue_name: str) -> None:
    """The executor promises: "If the result store cannot be written, the message is
    not dead-lettered: it comes back later unchanged". That holds for a store that
    *errors*; one that *hangs* (a partition: the TCP peer stops answering) makes the
    write outlast the hard time limit. The child is killed after a *successful* run,
    which counts as a lost run (WorkerLost, retried); once retries are used up, the
    unrun settlement needs the store too, is killed twice more, and reaping.py
    dead-letters the message raw: no FAILURE, `.get()` waits for ever, a task that
    succeeded every time sits in the DLQ."""
    from tests import runtime_tasks as rt
    from tests.runtime_harness import publish
    from tests.toxiproxy import Toxiproxy
    from worker.results import ResultStore

    key = f"rt:{queue_name}"
    with Toxiproxy.start() as toxi:
        proxy = toxi.proxy(f"results-{queue_name}", "127.0.0.1:6379")
        worker = WorkerProcess(redis_url, queue_name,
                               result_url=f"redis://127.0.0.1:{proxy.port}/0",
                               hard_time_limit=2, retry_backoff_base=0.1,
                               default_max_retries=1).start()
        try:
            worker.wait_ready()
            proxy.half_open()                                   # the partition...
            [task_id] = publish(redis_url, queue_name, "rt.value", [[key, 42]])
            wait_until(lambda: rt.runs(key).get(task_id, 0) >= 2, 30, "two runs", worker)
            import time
            time.sleep(8)
            proxy.heal()                                        # ...heals
            store = ResultStore(redis_url)

            def final() -> bool:
                record = store.fetch(task_id)
                return record is not None and record["status"] in ("SUCCESS", "FAILURE")
            with broker(redis_url) as b:
                dead = b.dead_letters(queue_name)
            assert not dead, (f"ran {rt.runs(key)[task_id]} times, every run succeeded; "
                              f"dead-lettered: {dead[0].reason!r}; result: "
                              f"{store.fetch(task_id)}")
            wait_until(final, 30, "a final result once the store is back", worker)
        finally:
            worker.stop()
