"""Built-in demo tasks, registered as `qscale.demo.*` when this module is imported.

The Helm chart imports it in every worker by default (`worker.demoTasks`), so a
fresh install can be exercised without building an image of your own: `helm test`
round-trips `qscale.demo.add`, and NOTES.txt enqueues `qscale.demo.sleep` bursts
to watch the pool scale.
"""

from __future__ import annotations

import hashlib
import time

from worker.api.task import task

_MAX_SLEEP_SECONDS = 3600.0
_MAX_CPU_ROUNDS = 10_000_000


@task(name="qscale.demo.sleep")
def sleep(seconds: float) -> float:
    """Hold a worker process for `seconds` (an I/O-bound job); returns the time slept."""
    wanted = min(max(float(seconds), 0.0), _MAX_SLEEP_SECONDS)
    started = time.monotonic()
    time.sleep(wanted)
    return round(time.monotonic() - started, 3)


@task(name="qscale.demo.add")
def add(a: float, b: float) -> float:
    """Return a + b: the smallest end-to-end round trip."""
    return a + b


@task(name="qscale.demo.cpu")
def cpu(rounds: int) -> str:
    """Burn CPU for `rounds` SHA-256 iterations (a CPU-bound job); returns the digest."""
    count = min(max(int(rounds), 0), _MAX_CPU_ROUNDS)
    digest = b"qscale"
    for _ in range(count):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()
