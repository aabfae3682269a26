"""The worker process end to end: config errors, HTTP endpoints, bad messages -> DLQ."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests import runtime_tasks as rt
from tests.runtime_harness import REPO, WorkerProcess, broker, publish, wait_until


def _run_with_env(**env: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("QSCALE_")}
    full.update(env, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "worker", "run"], env=full, cwd=REPO, check=False,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("env", "variable"), [
    ({"QSCALE_CONCURRENCY": "many"}, "QSCALE_CONCURRENCY"),
    ({"QSCALE_BROKER_URL": "http://x"}, "QSCALE_BROKER_URL"),
    ({"QSCALE_LEASE_SECONDS": "0"}, "QSCALE_LEASE_SECONDS"),
    ({"QSCALE_IMPORTS": "no_such_module_xyz"}, "QSCALE_IMPORTS"),
])
def test_bad_config_exits_2_with_one_line_naming_the_variable(env: dict[str, str],
                                                              variable: str) -> None:
    result = _run_with_env(QSCALE_HTTP_PORT="0", **env)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"qscale-worker: {variable}: "), lines[0]


@pytest.mark.redis
@pytest.mark.rabbitmq
def test_endpoints_state_and_metrics(broker_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    worker = WorkerProcess(broker_url, queue_name).start()
    try:
        worker.wait_ready()
        assert worker.get("/healthz")[0] == 200
        assert worker.get("/nope")[0] == 404
        ids = publish(broker_url, queue_name, "rt.record", [[key]] * 20)
        wait_until(lambda: len(rt.runs(key)) == 20, 30, "20 tasks", worker)
        state = wait_until(lambda: (s := worker.state()).get("completed", 0) >= 20 and s,
                           10, "state.completed", worker)
        assert state["pod"] == f"test-{queue_name}"
        assert state["concurrency"] == 2 and len(state["children"]) == 2
        assert state["ready"] and state["broker_connected"] and not state["draining"]
        assert state["service_time_seconds"] > 0
        assert "rt.record" in state["service_time_by_task"]
        assert set(rt.runs(key)) == set(ids)
        code, body = worker.get("/metrics")
        text = body.decode()
        assert code == 200
        assert 'qscale_tasks_total{status="success",task="rt.record"} 20.0' in text, text
        assert "qscale_task_duration_seconds_bucket" in text
        assert "qscale_task_queue_wait_seconds_count" in text
        assert "qscale_broker_connected 1.0" in text
        worker.signal()
        assert worker.wait(30) == 0
    finally:
        worker.stop()


@pytest.mark.redis
@pytest.mark.rabbitmq
def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_going(
        broker_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    bad = [b"not json at all", b"[1, 2]", b'{"id": 7, "task": "x"}',
           b'{"id": "a1", "task": "rt.no_such_task", "args": []}', b"\xff\xfe\x00"]
    with broker(broker_url) as b:
        for body in bad:
            b.publish(queue_name, body)
    worker = WorkerProcess(broker_url, queue_name).start()
    try:
        worker.wait_ready()
        ids = publish(broker_url, queue_name, "rt.record", [[key]] * 5)
        wait_until(lambda: len(rt.runs(key)) == 5, 30, "good tasks after bad ones", worker)
        with broker(broker_url) as b:
            dead = wait_until(lambda: len(got := b.dead_letters(queue_name)) == len(bad) and got,
                              30, "5 dead letters", worker)
        assert sorted(d.body for d in dead) == sorted(bad)
        assert all(d.reason for d in dead), [d.reason for d in dead]
        reasons = " | ".join(d.reason for d in dead)
        assert "malformed JSON" in reasons and "rt.no_such_task" in reasons, reasons
        assert set(rt.runs(key)) == set(ids)
        assert worker.state()["child_restarts"] == {}
    finally:
        worker.stop()


def test_http_port_in_use_exits_2_naming_the_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = _run_with_env(QSCALE_HTTP_HOST="127.0.0.1", QSCALE_HTTP_PORT=str(port))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qscale-worker: QSCALE_HTTP_PORT: "), lines
