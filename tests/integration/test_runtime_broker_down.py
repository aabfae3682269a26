"""Broker outages: the worker stays alive (/healthz 200), reports not-ready, and resumes.

A loopback TCP proxy stands between the worker and the real broker, so the test
can cut the worker off without disturbing the shared broker servers.
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests import runtime_tasks as rt
from tests.runtime_harness import TcpProxy, WorkerProcess, publish, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.rabbitmq]


def _via(proxy: TcpProxy, url: str) -> str:
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@127.0.0.1:{proxy.port}" if userinfo else f"127.0.0.1:{proxy.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def test_worker_survives_broker_outage_and_resumes(broker_url: str, queue_name: str) -> None:
    key = f"rt:{queue_name}"
    parts = urlsplit(broker_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 0)
    worker = WorkerProcess(_via(proxy, broker_url), queue_name).start()
    try:
        # Broker down from the start: alive but not ready.
        worker.wait_http()
        time.sleep(1.0)
        assert worker.get("/healthz")[0] == 200
        assert worker.get("/readyz")[0] == 503
        assert worker.state()["broker_connected"] is False
        proxy.up()
        worker.wait_ready()
        first = publish(broker_url, queue_name, "rt.record", [[key]] * 10)
        wait_until(lambda: len(rt.runs(key)) == 10, 30, "tasks before the outage", worker)

        proxy.down()
        wait_until(lambda: worker.get("/readyz")[0] == 503, 20, "/readyz 503 in the outage",
                   worker)
        assert worker.get("/healthz")[0] == 200
        second = publish(broker_url, queue_name, "rt.record", [[key]] * 10)
        time.sleep(2.0)
        assert worker.get("/healthz")[0] == 200
        worker.check_alive()

        proxy.up()
        wait_until(lambda: worker.get("/readyz")[0] == 200, 30, "/readyz 200 after", worker)
        wait_until(lambda: len(rt.runs(key)) == 20, 30, "tasks after the outage", worker)
        assert set(rt.runs(key)) == set(first + second)
        metrics = worker.get("/metrics")[1].decode()
        assert "qscale_broker_connected 1.0" in metrics
    finally:
        worker.stop()
        proxy.down()
