"""Helpers shared by the broker tests (no tests here): cleanup, polling, a dying child."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

import redis

from tests.rabbitmq_api import api_get, api_request
from worker.brokers import Broker, Delivery, QueueStats
from worker.brokers.redis import key_prefix

REPO_ROOT = Path(__file__).resolve().parents[2]

# A child that claims `count` messages, prints their bodies as JSON, then hangs
# until it is SIGKILLed: a worker dying while it holds claims.
HOLDER = """
import json, sys, time
from worker.brokers import open_broker
url, queue, count, lease = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
broker = open_broker(url, lease_seconds=lease)
got = []
deadline = time.monotonic() + 30
while len(got) < count and time.monotonic() < deadline:
    got += broker.claim([queue], count - len(got), 1.0)
print(json.dumps([d.body.decode() for d in got]), flush=True)
time.sleep(3600)
"""


def is_amqp(url: str) -> bool:
    return url.startswith(("amqp", "pyamqp"))


def cleanup(url: str, queue: str) -> None:
    """Remove everything a test left behind for `queue`."""
    if is_amqp(url):
        api = "http://qscale:qscale@127.0.0.1:15672"
        names = [queue, f"{queue}.dead"] + [
            q["name"] for q in api_get(api, "/api/queues/%2F?columns=name")
            if q["name"].startswith(f"qscale.delay.{queue}.")]
        for name in names:
            api_request(api, f"/api/queues/%2F/{quote(name, safe='')}", method="DELETE",
                        ok_missing=True)
    else:
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{key_prefix(queue)}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def wait_for_stats(broker: Broker, queue: str, expected: QueueStats,
                   timeout: float = 20.0) -> None:
    """RabbitMQ's management API samples every ~5 s, so its numbers converge later."""
    last: list[QueueStats] = []

    def matches() -> bool:
        last[:] = [broker.stats(queue)]
        return last[0] == expected

    try:
        wait_until(matches, timeout, f"stats {expected}")
    except AssertionError as exc:
        raise AssertionError(f"stats stayed {last[0]}, expected {expected}") from exc


def claim_exactly(broker: Broker, queues: Sequence[str], count: int,
                  timeout: float = 20.0) -> list[Delivery]:
    """Claim until `count` deliveries arrived (a claim may return fewer)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} arrived"
        got += broker.claim(queues, count - len(got), 1.0)
    return got


def start_holder(url: str, queue: str, count: int, lease: float) -> tuple[
        subprocess.Popen[str], list[str]]:
    """Start a child that claims `count` messages and then hangs; returns its bodies."""
    child = subprocess.Popen([sys.executable, "-c", HOLDER, url, queue, str(count), str(lease)],
                             stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line, f"holder exited early with {child.wait()}"
    return child, json.loads(line)

