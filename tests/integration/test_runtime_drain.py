"""SIGTERM: stop claiming, finish running tasks, give back the rest, exit 0."""

from __future__ import annotations

import signal
import time

import pytest

from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def _ready_count(broker_url: str, queue: str) -> int:
    with broker(broker_url) as b:
        return b.stats(queue).ready


def test_sigterm_finishes_in_flight_and_requeues_unstarted(broker_url: str,
                                                           queue_name: str) -> None:
    key = f"rt:{queue_name}"
    slow = publish(broker_url, queue_name, "rt.sleep_record", [[key, 3.0]] * 2)
    rest = publish(broker_url, queue_name, "rt.record", [[key]] * 10)
    worker = WorkerProcess(broker_url, queue_name).start()
    try:
        worker.wait_http()
        wait_until(lambda: len(rt.runs(f"{key}:started")) == 2, 30, "both slow tasks running",
                   worker)
        wait_until(lambda: worker.state().get("prefetched", 0) >= 1, 5,
                   "a claimed but unstarted message", worker)
        signalled = time.monotonic()
        worker.signal(signal.SIGTERM)
        wait_until(lambda: worker.get("/readyz")[0] == 503, 5, "/readyz 503 while draining")
        assert worker.get("/healthz")[0] == 200
        assert worker.state()["draining"] is True
        assert worker.wait(20) == 0
        elapsed = time.monotonic() - signalled
        assert elapsed < 15, f"drain took {elapsed:.1f}s"
        assert set(rt.runs(key)) == set(slow)        # in-flight tasks finished
        assert _ready_count(broker_url, queue_name) == len(rest)  # the rest is back, ready
    finally:
        worker.stop()
    successor = WorkerProcess(broker_url, queue_name).start()
    try:
        wait_until(lambda: len(rt.runs(key)) == 12, 30, "successor finishes the rest",
                   successor)
        assert rt.runs(key) == dict.fromkeys(slow + rest, 1)  # each ran exactly once
    finally:
        successor.stop()


def test_drain_deadline_kills_running_task_and_requeues_it(broker_url: str,
                                                           queue_name: str) -> None:
    key = f"rt:{queue_name}"
    publish(broker_url, queue_name, "rt.sleep_record", [[key, 60.0]])
    worker = WorkerProcess(broker_url, queue_name, drain_seconds=1).start()
    try:
        worker.wait_http()
        wait_until(lambda: rt.runs(f"{key}:started"), 30, "long task running", worker)
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        assert rt.runs(key) == {}
        wait_until(lambda: _ready_count(broker_url, queue_name) == 1, 10,
                   "killed task back in the queue")
    finally:
        worker.stop()


def test_second_sigterm_takes_the_fast_path(broker_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    publish(broker_url, queue_name, "rt.sleep_record", [[key, 60.0]] * 2)
    worker = WorkerProcess(broker_url, queue_name, drain_seconds=120).start()
    try:
        worker.wait_http()
        wait_until(lambda: len(rt.runs(f"{key}:started")) == 2, 30, "tasks running", worker)
        worker.signal(signal.SIGTERM)
        time.sleep(0.5)
        worker.signal(signal.SIGTERM)
        assert worker.wait(15) == 0
        wait_until(lambda: _ready_count(broker_url, queue_name) == 2, 10,
                   "both tasks back in the queue")
    finally:
        worker.stop()
