"""QSCALE_AMQP_QUEUE_TYPE=quorum on the real RabbitMQ: the delivery limit caps poison
messages that take the whole worker down, while our own give-backs cost nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from controller.sources import BrokerDepthSource
from tests import runtime_tasks as rt
from tests.integration.test_broker_support import api_get, claim_exactly, cleanup
from tests.runtime_harness import REPO, WorkerProcess, wait_until
from worker.brokers.amqp import AmqpBroker
from worker.envelope import Envelope, decode
from worker.errors import ConfigError

OVER_LIMIT = "redelivered 2 times: the worker died or disconnected each time"

pytestmark = pytest.mark.rabbitmq

API = "http://qscale:qscale@127.0.0.1:15672"


@pytest.fixture
def queue(amqp_url: str, queue_name: str) -> Iterator[str]:
    yield queue_name
    cleanup(amqp_url, queue_name)


def _queue_info(name: str) -> dict[str, object]:
    found = [q for q in api_get(API, "/api/queues/%2F?columns=name,type,arguments")
             if q["name"] == name]
    assert found, f"queue {name} does not exist"
    return found[0]


def _delivery_counts(amqp_url: str, queue: str, limit: int) -> dict[bytes, int]:
    """Body -> x-delivery-count of every ready message, read without spending any:
    each is republished and acked (a reject or a closed channel would count)."""
    peek = AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=limit)
    seen: dict[bytes, int] = {}
    try:
        ready = peek.stats(queue).ready
        with peek._op("peek") as channel:
            for _ in range(ready):  # republished copies go to the back: each seen once
                message = channel.basic_get(queue, no_ack=False)
                assert message is not None
                body = bytes(message.body)
                headers = message.properties.get("application_headers") or {}
                seen[body] = int(headers.get("x-delivery-count", 0))
                peek._session.send(queue, body)
                peek._session.wait_confirms()
                channel.basic_ack(message.delivery_tag)
    finally:
        peek.close()
    return seen


# -- the broker on its own --


def test_quorum_round_trip_declares_a_quorum_queue(amqp_url: str, queue: str) -> None:
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=3) as broker:
        broker.publish(queue, b"one")
        broker.publish_many(queue, [b"two", b"three"])
        got = claim_exactly(broker, [queue], 3)
        assert [d.body for d in got] == [b"one", b"two", b"three"]
        assert not any(d.redelivered for d in got)
        broker.retry_later(got[0], b"one again", 0.05)  # a classic TTL bucket feeds it back
        broker.dead_letter(got[1], "failure", "ValueError: boom")
        broker.ack(got[2:])
        again = claim_exactly(broker, [queue], 1)
        assert [d.body for d in again] == [b"one again"]
        broker.ack(again)
        dead = broker.dead_letters(queue)
        assert [(d.body, d.reason, d.detail) for d in dead] == [
            (b"two", "failure", "ValueError: boom")]
        stats = broker.stats(queue)
        assert (stats.dead, stats.ready) == (1, 0)
    info = _queue_info(queue)
    assert info["type"] == "quorum"
    assert info["arguments"] == {
        "x-queue-type": "quorum", "x-delivery-limit": 4, "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{queue}.dead",
        "x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    assert _queue_info(f"{queue}.dead")["type"] == "classic"


def test_consuming_a_queue_of_the_other_type_is_a_config_error_naming_the_variable(
        amqp_url: str, queue: str) -> None:
    """A consumer's layout must match the queue (RabbitMQ refuses the redeclaration); a
    producer publishes into whatever queue exists (a chain step may go to another
    team's queue), and a mismatch there costs no connection."""
    with AmqpBroker(amqp_url, queue_type="classic") as classic:
        classic.publish(queue, b"x")
        with AmqpBroker(amqp_url, queue_type="quorum") as quorum:
            quorum.publish(queue, b"y")  # into the existing classic queue
            with pytest.raises(ConfigError, match=r"^QSCALE_AMQP_QUEUE_TYPE: .*other arguments"):
                quorum.claim([queue], 1, 1.0)
            other = queue + "-q"
            try:
                quorum.publish(other, b"fine")  # the connection recovered; a quorum queue
                with pytest.raises(ConfigError, match=r"^QSCALE_AMQP_QUEUE_TYPE: "):
                    classic.claim([other], 1, 1.0)  # and the other way round
                with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=9) as limit, \
                        pytest.raises(ConfigError, match=r"^QSCALE_MAX_REDELIVERIES: "):
                    limit.claim([other], 1, 1.0)
                assert classic.stats(other).ready == 1  # reading needs no matching layout
            finally:
                cleanup(amqp_url, other)
        assert classic.stats(queue).ready == 2
    with pytest.raises(ConfigError, match=r"^QSCALE_AMQP_QUEUE_TYPE: quorum queues have no"):
        AmqpBroker(amqp_url, queue_type="quorum", max_priority=5)


def test_what_counts_toward_the_delivery_limit(amqp_url: str, queue: str) -> None:
    """Measured on RabbitMQ 3.10: a closed connection holding the message counts, and so
    does a reject with requeue; our requeue() (republish + ack) does not. Past
    QSCALE_MAX_REDELIVERIES the next delivery comes marked dead (the worker settles it,
    recording FAILURE); RabbitMQ's own limit is one higher, a backstop."""
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1) as producer:
        producer.publish_many(queue, [b"held", b"given-back", b"rejected"])
    for _ in range(2):  # two returns each: one more than the limit allows
        broker = AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1, prefetch=3)
        got = {d.body: d for d in claim_exactly(broker, [queue], 3)}
        broker.requeue([got[b"given-back"]])  # cancels our consumer first
        with broker._op("test") as channel:  # what a plain reject-requeue costs
            tag = int(got[b"rejected"].tag.split(".")[1])
            channel.basic_reject(tag, requeue=True)
            broker._outstanding.pop(tag)
        broker.close()  # b"held" goes back by the connection close
    # Two returns each put "held" and "rejected" over the limit of 1; two give-backs
    # would have done the same to "given-back" had they counted.
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1, prefetch=3) as reader:
        got = {d.body: d for d in claim_exactly(reader, [queue], 3)}
        assert {body: d.dead_reason for body, d in got.items()} == {
            b"held": OVER_LIMIT, b"rejected": OVER_LIMIT, b"given-back": ""}
        for delivery in got.values():
            reader.dead_letter(delivery, delivery.dead_reason or "test")
        assert reader.stats(queue).ready == 0


def test_rabbitmq_dead_letters_past_its_backstop_limit(amqp_url: str, queue: str) -> None:
    """A worker that dies even holding the over-limit delivery: RabbitMQ's own limit (one
    higher than ours) dead-letters it, and `dlq list` reads the reason from x-death."""
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1) as producer:
        producer.publish(queue, b"doomed")
    for _ in range(3):
        broker = AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1, prefetch=1)
        claim_exactly(broker, [queue], 1)
        broker._session.drop()  # the connection dies holding it
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1) as reader:
        wait_until(lambda: reader.stats(queue).dead == 1, 10, "the dead letter")
        [letter] = reader.dead_letters(queue)
        assert letter.body == b"doomed"
        assert letter.reason == ("delivery limit: delivered 3 times "
                                 "(worker died or disconnected each time)"), letter
        assert "'delivery_limit'" in letter.detail
        assert abs(letter.failed_at - time.time()) < 60


def test_unclaimed_deliveries_go_back_at_close_without_cost(amqp_url: str, queue: str) -> None:
    bodies = [b"%d" % i for i in range(20)]
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1) as producer:
        producer.publish_many(queue, bodies)
    for _ in range(3):  # three closes with a limit of 1
        broker = AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1, prefetch=20)
        broker.ack(claim_exactly(broker, [queue], 1))
        left = len(bodies) - 1

        def all_pushed(b: AmqpBroker = broker, n: int = left) -> bool:
            b.heartbeat()  # reads what RabbitMQ pushed
            return sum(len(d) for d in b._buffers.values()) == n
        wait_until(all_pushed, 10, "the rest pushed to us, unclaimed")
        broker.close()
        bodies = bodies[1:]
    counts = _delivery_counts(amqp_url, queue, 1)
    assert sorted(counts) == sorted(bodies) and len(bodies) == 17
    assert set(counts.values()) == {0}, counts


def test_one_controller_reads_quorum_priority_and_missing_queues(
        amqp_url: str, queue: str) -> None:
    """The controller's depth source opens brokers without queue settings: its reads
    are passive, so one controller serves quorum and classic pools on one RabbitMQ,
    and it creates no queue that a pool's workers would later have to match."""
    priority, missing = queue + "-p", queue + "-missing"
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=2) as producer:
        producer.publish_many(queue, [b"a", b"b", b"c"])
    with AmqpBroker(amqp_url, max_priority=5) as producer:
        producer.publish(priority, b"p", priority=3)
    source = BrokerDepthSource(amqp_url, [queue, priority, missing])
    try:
        for _ in range(2):  # a missing queue costs its side channel, nothing else
            assert source.sample().ready == 4
        with pytest.raises(AssertionError, match="does not exist"):
            _queue_info(missing)
        assert _queue_info(queue)["type"] == "quorum"
    finally:
        source.close()
        cleanup(amqp_url, priority)


# -- real workers --


class GroupWorker(WorkerProcess):
    """A worker in its own process group, so the test can kill it whole (a lost pod)."""

    def start(self) -> GroupWorker:
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "run"], env=self.env,
                                     cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def kill_group(self) -> None:
        os.killpg(self.pid, signal.SIGKILL)
        self.wait(10)


def _publish(amqp_url: str, queue: str, task: str, args_list: list[list[object]],
             max_redeliveries: int) -> list[str]:
    envelopes = [Envelope.create(task, args, queue=queue) for args in args_list]
    with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=max_redeliveries) as b:
        b.publish_many(queue, [env.encode() for env in envelopes])
    return [env.id for env in envelopes]


def _cli(*args: str, queue: str, amqp_url: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QSCALE_")}
    env.update({"QSCALE_BROKER_URL": amqp_url, "QSCALE_QUEUES": queue,
                "QSCALE_AMQP_QUEUE_TYPE": "quorum", "QSCALE_MAX_REDELIVERIES": "2",
                "PYTHONPATH": REPO})
    done = subprocess.run([sys.executable, "-m", "worker", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.redis
def test_a_message_that_kills_its_worker_ends_in_the_dead_queue(
        amqp_url: str, redis_url: str, queue: str) -> None:
    key, poison_key = f"rt:{queue}", f"rt:{queue}:poison"
    settings = {"amqp_queue_type": "quorum", "max_redeliveries": 2, "concurrency": 2}
    [poison] = _publish(amqp_url, queue, "rt.sleep_record", [[poison_key, 3600]], 2)
    innocent: list[str] = []
    workers: list[GroupWorker] = []
    try:
        for attempt in (1, 2, 3):  # limit 2: the third death dead-letters it
            worker = GroupWorker(amqp_url, queue, **settings).start()
            workers.append(worker)

            def poison_running(run: int = attempt) -> bool:
                return rt.runs(f"{poison_key}:started").get(poison) == run
            wait_until(poison_running, 60, f"poison run {attempt}", worker)
            # Other work flows through the second child meanwhile. One at a time: a burst
            # would queue some behind the poison in its child, and they would die with it.
            for _ in range(5):
                [task_id] = _publish(amqp_url, queue, "rt.record", [[key]], 2)
                innocent.append(task_id)
                wait_until(lambda t=task_id: t in rt.runs(key), 30, "a task beside it", worker)
            wait_until(lambda w=worker: w.state().get("in_flight") == 1, 10,
                       "the worker holding nothing but the poison (all else acked)", worker)
            worker.kill_group()  # the whole worker dies with the poison (OOM-killed pod)
        worker = GroupWorker(amqp_url, queue, **settings).start()
        workers.append(worker)
        innocent += _publish(amqp_url, queue, "rt.record", [[key]] * 20, 2)
        wait_until(lambda: set(innocent) <= set(rt.runs(key)), 60, "the tasks after it",
                   worker)
        with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=2) as broker:
            wait_until(lambda: broker.stats(queue).dead == 1, 10, "the poison's dead letter",
                       worker)
            assert broker.stats(queue).ready == 0
            assert [decode(d.body).id for d in broker.dead_letters(queue)] == [poison]
        assert rt.runs(f"{poison_key}:started") == {poison: 3}  # never a fourth time
        listing = _cli("dlq", "list", queue=queue, amqp_url=amqp_url)
        assert poison in listing
        assert "redelivered 3 times: the worker died or disconnected each time" \
            in listing, listing
        worker.signal(signal.SIGTERM)
        assert worker.wait(30) == 0
        assert "requeued 1 messages" in _cli("dlq", "requeue", queue=queue, amqp_url=amqp_url)
        back = _delivery_counts(amqp_url, queue, 2)  # a fresh copy: a fresh delivery budget
        assert [(decode(body).id, count) for body, count in back.items()] == [
            (poison, 0)]
    finally:
        for worker in workers:
            worker.stop()
        rt.store().delete(key, f"{key}:pids", f"{poison_key}:started")


@pytest.mark.redis
def test_draining_workers_give_back_their_messages_for_free(
        amqp_url: str, redis_url: str, queue: str) -> None:
    """Three SIGTERMs with a delivery limit of 1: the running task (killed at the drain
    deadline) and the unstarted ones go back each time, and none spends a delivery."""
    key = f"rt:{queue}"
    settings = {"amqp_queue_type": "quorum", "max_redeliveries": 1, "concurrency": 1,
                "prefetch": 3, "drain_seconds": 0.5}
    ids = _publish(amqp_url, queue, "rt.sleep_record", [[key, 2.0]] * 5, 1)
    workers: list[GroupWorker] = []
    try:
        for cycle in (1, 2, 3):
            worker = GroupWorker(amqp_url, queue, **settings).start()
            workers.append(worker)

            def running_and_holding(done: int = cycle - 1, this: GroupWorker = worker) -> bool:
                started = sum(rt.runs(f"{key}:started").values())
                return started > done and this.state().get("in_flight", 0) >= 4
            wait_until(running_and_holding, 60, "a task running, three more held", worker)
            worker.signal(signal.SIGTERM)
            assert worker.wait(30) == 0
            assert "requeueing 3 unstarted" in worker.log(), worker.log()[-3000:]
        assert rt.runs(key) == {}, "every run was cut short by the drain deadline"
        counts = _delivery_counts(amqp_url, queue, 1)
        assert sorted(decode(body).id for body in counts) == sorted(ids)
        assert set(counts.values()) == {0}, counts
        worker = GroupWorker(amqp_url, queue, **{**settings, "concurrency": 5}).start()
        workers.append(worker)
        wait_until(lambda: set(rt.runs(key)) == set(ids), 60, "every task to finish", worker)
        with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=1) as broker:
            assert broker.stats(queue).dead == 0
    finally:
        for worker in workers:
            worker.stop()
        rt.store().delete(key, f"{key}:pids", f"{key}:started")


def test_a_bad_queue_type_stops_the_worker_at_start(amqp_url: str) -> None:
    for env, reason in (({"QSCALE_AMQP_QUEUE_TYPE": "stream"}, "Input should be"),
                        ({"QSCALE_AMQP_QUEUE_TYPE": "quorum", "QSCALE_MAX_PRIORITY": "3"},
                         "quorum queues have no message priorities")):
        full = {k: v for k, v in os.environ.items() if not k.startswith("QSCALE_")}
        full.update({"QSCALE_BROKER_URL": amqp_url, "PYTHONPATH": REPO, **env})
        done = subprocess.run([sys.executable, "-m", "worker", "run"], env=full, cwd=REPO,
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().count("\n") == 0, done.stderr
        assert f"QSCALE_AMQP_QUEUE_TYPE: {reason}" in done.stderr


@pytest.mark.slow
@pytest.mark.redis
def test_no_task_lost_under_sigkill_chaos_on_quorum_queues(
        amqp_url: str, redis_url: str, queue: str) -> None:
    """A small R1 on quorum queues: 2 child and 2 whole-worker kills cost held messages
    at most 2 deliveries, below the default limit of 5: nothing lost, nothing dead."""
    key = f"rt:{queue}"
    settings = {"amqp_queue_type": "quorum", "max_redeliveries": 5, "retry_backoff_base": 0.2}
    ids = _publish(amqp_url, queue, "rt.sleep_record", [[key, 0.004]] * 3000, 5)
    worker = GroupWorker(amqp_url, queue, **settings).start()
    workers = [worker]
    try:
        worker.wait_ready()
        for action in ("child", "worker", "child", "worker"):
            time.sleep(0.7)
            assert len(rt.runs(key)) < len(ids), "the kills must land mid-stream"
            if action == "child":
                children = wait_until(worker.children, 10, "children", worker)
                os.kill(children[0], signal.SIGKILL)
            else:
                worker.kill_group()
                worker = GroupWorker(amqp_url, queue, **settings).start()
                workers.append(worker)
                worker.wait_http()
        wait_until(lambda: set(rt.runs(key)) >= set(ids), 240, "every task to complete",
                   worker, interval=0.5)
        with AmqpBroker(amqp_url, queue_type="quorum", max_redeliveries=5) as broker:
            dead = broker.dead_letters(queue)
        assert not dead, [d.reason for d in dead]
        assert set(rt.runs(key)) == set(ids)
    finally:
        for w in workers:
            w.stop()
        rt.store().delete(key, f"{key}:pids", f"{key}:started")
