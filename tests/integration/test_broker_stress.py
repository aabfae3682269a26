"""No loss under fire: consumers claim and ack 20k messages while some get SIGKILLed.

Each consumer appends a message's id to its own file *before* acking it. The
test ends when every id is in some file and the broker holds nothing (ready,
in flight, delayed and dead all 0), so every message was acked after it was
processed; an id missing from every file would be a lost message. Duplicates (a
consumer killed between recording and acking, or holding unacked claims) are
expected with at-least-once delivery and reported.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_broker_support import REPO_ROOT, cleanup
from worker.brokers import QueueStats, open_broker

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.rabbitmq]

TOTAL = 20_000
CONSUMERS = 4
KILLS_AT = (0.2, 0.4, 0.6, 0.8)  # fraction done when one consumer is SIGKILLed
LEASE = 2.0

CONSUMER = """
import json, os, sys, time
from worker.brokers import QueueStats, open_broker
url, queue, path, lease = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
broker = open_broker(url, lease_seconds=lease)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
last_beat = 0.0
while True:
    if time.monotonic() - last_beat > lease / 3:
        broker.heartbeat()
        last_beat = time.monotonic()
    batch = broker.claim([queue], 50, 0.5)
    if not batch:
        continue
    ids = [str(json.loads(d.body)["id"]) for d in batch]
    os.write(fd, ("\\n".join(ids) + "\\n").encode())
    time.sleep(0.02)  # pretend to work, so the kills land mid-stream
    broker.ack(batch)
"""


@pytest.fixture
def url(broker_url: str, queue_name: str) -> Iterator[str]:
    yield broker_url
    cleanup(broker_url, queue_name)


def _start(url: str, queue: str, path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", CONSUMER, url, queue, str(path), str(LEASE)],
                            cwd=REPO_ROOT)


def _recorded(paths: list[Path]) -> Counter[int]:
    seen: Counter[int] = Counter()
    for path in paths:
        if path.exists():
            seen.update(int(line) for line in path.read_text().split() if line)
    return seen


def test_no_message_lost_while_consumers_are_killed(url: str, queue_name: str,
                                                    tmp_path: Path) -> None:
    with open_broker(url, lease_seconds=LEASE) as producer:
        producer.publish_many(queue_name, [json.dumps({"id": i}).encode()
                                           for i in range(TOTAL)])
        paths = [tmp_path / f"consumer-{i}.ids" for i in range(CONSUMERS)]
        children = [_start(url, queue_name, p) for p in paths]
        kills = list(KILLS_AT)
        deadline = time.monotonic() + 240
        seen: Counter[int] = Counter()
        try:
            while True:
                seen = _recorded(paths)
                # Done when every id was seen and the broker holds nothing: all acked.
                if len(seen) == TOTAL and producer.stats(queue_name) == QueueStats(
                        queue_name, ready=0, in_flight=0, delayed=0, dead=0):
                    break
                assert time.monotonic() < deadline, f"only {len(seen)} of {TOTAL} processed"
                if kills and len(seen) >= kills[0] * TOTAL:
                    kills.pop(0)
                    victim = children.pop(0)
                    os.kill(victim.pid, signal.SIGKILL)
                    victim.wait()
                    path = tmp_path / f"consumer-{len(paths)}.ids"
                    paths.append(path)
                    children.append(_start(url, queue_name, path))
                time.sleep(0.05)
        finally:
            for child in children:
                child.kill()
                child.wait()
        assert not kills, "every planned kill happened"
        assert set(seen) == set(range(TOTAL)), "every published id was processed"
        duplicates = sum(n - 1 for n in seen.values())
        print(f"{TOTAL} ids processed, {duplicates} duplicates after {len(KILLS_AT)} kills")
