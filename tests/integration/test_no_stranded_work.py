"""Nothing is stranded: work that is due runs, work a worker no longer knows is given back.

These are the ways a message used to sit somewhere no worker would ever run it:
a due retry waiting for an unrelated claim, an ack lost with the broker that the
live owner never re-sends, unstarted RabbitMQ messages bouncing back into a
draining pod, a result write landing on a queue's key, a fork failure killing the
supervisor, and a hard-killed task's own processes running on.
"""

from __future__ import annotations

import os
import resource
import signal
import time

import pytest
import redis

from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until
from worker import Client
from worker.brokers import open_broker
from worker.brokers.redis import RedisBroker, key_prefix
from worker.envelope import Envelope
from worker.results import SUCCESS, ResultStore

pytestmark = [pytest.mark.redis]


def test_due_delayed_messages_count_as_ready_without_a_consumer(
        broker_url: str, queue_name: str) -> None:
    """The controller sees a due retry or countdown as demand (minReplicas 0 scales up)."""
    with open_broker(broker_url) as b:
        b.publish(queue_name, Envelope.create("rt.noop", queue=queue_name).encode(), delay=0.3)
        assert b.stats(queue_name).ready == 0
        stats = wait_until(lambda: (s := b.stats(queue_name)).ready == 1 and s, 15,
                           "the due message to count as ready")
        assert stats.delayed == 0


def test_a_claim_the_broker_holds_but_the_worker_forgot_is_given_back(
        redis_url: str, queue_name: str) -> None:
    """A lost ack (Redis restarted from an AOF without the last second, a failover)
    leaves a claim under a live, heart-beating owner: it must run again."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(redis_url, queue_name).start()
    try:
        worker.wait_ready()
        [first] = publish(redis_url, queue_name, "rt.record", [[key]])
        wait_until(lambda: first in rt.runs(key), 15, "the task", worker)
        r = redis.Redis.from_url(redis_url)
        [owner] = [o.decode() for o in r.smembers(f"{key_prefix(queue_name)}owners")]
        ghost = Envelope.create("rt.record", [key], queue=queue_name)
        r.hset(f"{key_prefix(queue_name)}inflight:{owner}", "999999.0",   # the lost ack
               ghost.encode())
        wait_until(lambda: ghost.id in rt.runs(key), 30, "the forgotten claim to run again",
                   worker)
        with broker(redis_url) as b:
            wait_until(lambda: b.stats(queue_name).in_flight == 0, 10, "nothing held")
    finally:
        worker.stop()


@pytest.mark.rabbitmq
def test_drain_hands_unstarted_messages_to_other_workers_at_once(
        amqp_url: str, queue_name: str) -> None:
    """SIGTERM: consumers are cancelled before the give-back, so the messages go to the
    other worker now instead of bouncing back into the draining one until it exits."""
    key = f"rt:{queue_name}"
    draining = WorkerProcess(amqp_url, queue_name, concurrency=1, prefetch=6,
                             drain_seconds=20).start()
    other: WorkerProcess | None = None
    try:
        draining.wait_ready()
        [long_id] = publish(amqp_url, queue_name, "rt.sleep_record", [[key, 8.0]])
        wait_until(lambda: draining.state().get("busy") == 1, 10, "the long task", draining)
        ids = publish(amqp_url, queue_name, "rt.record", [[key]] * 5)
        wait_until(lambda: draining.state().get("in_flight") == 6, 10, "prefetched", draining)
        other = WorkerProcess(amqp_url, queue_name, concurrency=1).start()
        other.wait_ready()
        draining.signal(signal.SIGTERM)
        started = time.monotonic()
        wait_until(lambda: set(ids) <= set(rt.runs(key)), 30, "the unstarted tasks", other)
        took = time.monotonic() - started
        assert took < 4.0, f"unstarted tasks waited {took:.1f}s for the draining worker"
        assert draining.wait(30) == 0
        assert rt.runs(key).get(long_id) == 1
    finally:
        draining.stop()
        if other is not None:
            other.stop()


@pytest.mark.rabbitmq
def test_messages_rabbitmq_pushed_but_not_claimed_count_as_held(
        amqp_url: str, queue_name: str) -> None:
    """Claims wait for half the room (batching), so messages RabbitMQ pushed after a
    claim sit in our buffer until then: /state must count them as held. Before, a claim
    that caught part of a publish left the rest there, unseen by /state, until the long
    task ended (CI flaked on this with in_flight stuck at 4 of 6)."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(amqp_url, queue_name, concurrency=1, prefetch=6).start()
    try:
        worker.wait_ready()
        publish(amqp_url, queue_name, "rt.sleep_record", [[key, 30.0]])
        wait_until(lambda: worker.state().get("busy") == 1, 10, "the long task", worker)
        publish(amqp_url, queue_name, "rt.record", [[key]] * 3)
        wait_until(lambda: worker.state().get("in_flight") == 4, 10, "the first three", worker)
        publish(amqp_url, queue_name, "rt.record", [[key]] * 2)
        wait_until(lambda: worker.state().get("in_flight") == 6, 10,
                   "the pushed two counted as held", worker)
    finally:
        worker.stop()


def test_results_cannot_land_on_a_queue_key(queue_name: str) -> None:
    """Queue `result` and task id `ready` once shared the key `qscale:result:ready`."""
    url = "redis://127.0.0.1:6379/14"
    r = redis.Redis.from_url(url)
    r.flushdb()
    try:
        with open_broker(url) as b:
            b.publish_many("result", [Envelope.create("rt.noop", queue="result").encode()
                                      for _ in range(3)])
            ResultStore(url).mark_success("ready", 1, task="t")
            ResultStore(url).forget("ready")
            assert b.stats("result").ready == 3
            assert len(b.claim(["result"], 10, 1.0)) == 3
    finally:
        r.flushdb()


def test_a_failing_fork_does_not_kill_the_supervisor(redis_url: str, queue_name: str) -> None:
    """No descriptor left for a new child's pipe (EMFILE): the supervisor keeps running,
    retries the slot, and runs tasks again once descriptors are back."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(redis_url, queue_name, concurrency=1).start()
    try:
        worker.wait_ready()
        [child] = worker.children()
        used = len(os.listdir(f"/proc/{worker.pid}/fd"))
        soft, hard = resource.prlimit(worker.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(worker.pid, resource.RLIMIT_NOFILE, (used, hard))
        os.kill(child, signal.SIGKILL)
        time.sleep(2.0)
        worker.check_alive()
        assert worker.get("/healthz")[0] in (200, 0)  # the HTTP thread may lack a socket
        resource.prlimit(worker.pid, resource.RLIMIT_NOFILE, (soft, hard))
        [task_id] = publish(redis_url, queue_name, "rt.record", [[key]])
        wait_until(lambda: task_id in rt.runs(key), 30, "a task after the fork failure",
                   worker)
        assert "could not start a child process" in worker.log()
        assert worker.state()["child_restarts"].get("spawn_failed", 0) >= 1
    finally:
        worker.stop()


def test_the_hard_time_limit_kills_the_tasks_own_processes(redis_url: str,
                                                           queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(redis_url, queue_name).start()
    try:
        worker.wait_ready()
        env = Envelope.create("rt.spawn_and_hang", [key], queue=queue_name)
        with open_broker(redis_url) as b:
            b.publish(queue_name, env.encode())
        store = rt.store()
        [helper] = wait_until(lambda: store.lrange(f"{key}:helpers", 0, -1), 15,
                              "the helper process", worker)
        with Client(redis_url) as client:
            record = wait_until(lambda: client.async_result(env.id).ready(), 20,
                                "the hard limit", worker)
        assert record
        helper_pid = int(helper)

        def gone() -> bool:
            try:
                with open(f"/proc/{helper_pid}/stat") as stat:
                    return stat.read().split()[2] == "Z"   # a zombie awaiting its reaper
            except FileNotFoundError:
                return True

        wait_until(gone, 10, "the task's helper process to be killed", worker)
        assert ResultStore(redis_url).fetch(env.id)["status"] != SUCCESS
    finally:
        worker.stop()


def test_claims_that_lapsed_are_not_started_here(redis_url: str, queue_name: str) -> None:
    """A partition longer than the lease: another worker reclaimed this one's claims. The
    unstarted ones are not run here too (the reconcile after the next heartbeats drops
    them); only the task already running finishes twice."""
    key = f"rt:{queue_name}"
    worker = WorkerProcess(redis_url, queue_name, concurrency=1, prefetch=4).start()
    try:
        worker.wait_ready()
        [running] = publish(redis_url, queue_name, "rt.sleep_record", [[key, 8.0]])
        wait_until(lambda: worker.state().get("busy") == 1, 10, "the long task", worker)
        queued = publish(redis_url, queue_name, "rt.record", [[key]] * 4)
        wait_until(lambda: worker.state().get("in_flight") == 5, 10, "prefetched", worker)
        r = redis.Redis.from_url(redis_url)
        [owner] = [o.decode() for o in r.smembers(f"{key_prefix(queue_name)}owners")]
        other = RedisBroker(redis_url, lease_seconds=60)
        r.delete(f"qscale:alive:{owner}")  # the lease lapsed (a partition)
        taken = other.claim([queue_name], 10, 1.0)
        assert len(taken) == 5  # everything it held, the running task included
        wait_until(lambda: running in rt.runs(key), 20, "the running task", worker)
        time.sleep(1.0)
        assert not set(queued) & set(rt.runs(key)), "lapsed claims ran here as well"
        assert "no longer this worker's" in worker.log()
        other.ack(taken)
        other.close()
    finally:
        worker.stop()
