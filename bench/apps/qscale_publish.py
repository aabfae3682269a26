"""Pre-loads a qscale queue: `python -m bench.apps.qscale_publish URL QUEUE WORKLOAD COUNT`.

Runs as its own process so it imports qscale's code as it is now, exactly like the
worker it feeds (the code may change while a long benchmark runs).
"""

from __future__ import annotations

import sys

from worker.brokers import open_broker
from worker.envelope import Envelope

CHUNK = 1000


def publish(url: str, queue: str, workload: str, count: int) -> None:
    """Bulk-enqueue tasks 0..count-1 with qscale's own producer API."""
    with open_broker(url) as broker:
        for start in range(0, count, CHUNK):
            bodies = [Envelope.create(f"bench.{workload}", [seq], queue=queue,
                                      ignore_result=True).encode()
                      for seq in range(start, min(start + CHUNK, count))]
            broker.publish_many(queue, bodies)


if __name__ == "__main__":
    publish(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
