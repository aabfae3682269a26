"""Children that hang past the hard limit or crash are replaced; their messages retry."""

from __future__ import annotations

import pytest

from tests import runtime_tasks as rt
from tests.runtime_harness import WorkerProcess, broker, publish, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def test_hard_time_limit_kills_replaces_retries_then_dead_letters(broker_url: str,
                                                                  queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, retry_backoff_base=0.2).start()
    try:
        worker.wait_ready()
        first_children = set(worker.children())
        [hang_id] = publish(broker_url, queue_name, "rt.hang", [[key]])
        ids = publish(broker_url, queue_name, "rt.record", [[key]] * 10)
        wait_until(lambda: len(rt.runs(key)) == 10, 30, "sibling tasks", worker)
        with broker(broker_url) as b:
            [dead] = wait_until(lambda: b.dead_letters(queue_name), 30, "hang in DLQ", worker)
        assert "hard time limit exceeded after 1s" in dead.reason
        assert rt.attempts(key) == {hang_id: 2}      # first run + one retry, both killed
        assert set(rt.runs(key)) == set(ids)
        state = worker.state()
        assert state["child_restarts"] == {"hard_time_limit": 2}
        assert len(state["children"]) == 2
        assert set(state["children"]) != first_children
        metrics = worker.get("/metrics")[1].decode()
        assert 'qscale_child_restarts_total{cause="hard_time_limit"} 2.0' in metrics
        assert 'qscale_dead_lettered_total{reason="time_limit"} 1.0' in metrics
    finally:
        worker.stop()


def test_crashed_children_are_replaced_and_their_messages_retried(broker_url: str,
                                                                   queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name, retry_backoff_base=0.2).start()
    try:
        worker.wait_ready()
        [exit_id] = publish(broker_url, queue_name, "rt.exit", [[key]])
        [segv_id] = publish(broker_url, queue_name, "rt.segv", [[key]])
        [once_id] = publish(broker_url, queue_name, "rt.crash_once", [[key]])
        ids = publish(broker_url, queue_name, "rt.record", [[key]] * 20)
        wait_until(lambda: len(rt.runs(key)) == 21, 30, "siblings and the retried task",
                   worker)
        with broker(broker_url) as b:
            dead = wait_until(lambda: len(d := b.dead_letters(queue_name)) == 2 and d, 30,
                              "two poison pills in the DLQ", worker)
        reasons = sorted(d.reason for d in dead)
        assert any("exited with code 3" in r for r in reasons), reasons
        assert any("SIGSEGV" in r for r in reasons), reasons
        assert rt.attempts(key) == {exit_id: 2, segv_id: 2, once_id: 2}
        assert set(rt.runs(key)) == {*ids, once_id}
        state = wait_until(lambda: (s := worker.state()).get("in_flight") == 0 and s, 10,
                           "idle worker", worker)
        assert state["child_restarts"] == {"crash": 5}
        assert len(state["children"]) == 2
    finally:
        worker.stop()
