"""`bench.sleep`: the benchmark's task. It sleeps its service time and logs itself.

Every execution appends a start and a finish event (JSON) to the list
`bench:<run>:events` in the results Redis: task id, attempt, pod, the wall clock. A start
also says when this worker's supervisor process and this child process started (from
/proc, to about 10 ms), which splits burst-to-capacity into process start-up (imports,
settings, broker connection, forking the children) and the first claim.
Waits, redeliveries (a second start of one id) and interruptions (a start with no
finish) are counted from these, the same way for every scaler. The pod's clock is the
host's (kind nodes are containers), so the producer's publish times compare directly.
"""

from __future__ import annotations

import contextlib
import json
import os
import time

import redis

from worker.api.context import TaskContext
from worker.api.task import task
from worker.settings import load_settings

_client: redis.Redis[bytes] | None = None
_started: dict[str, float] = {}


def _redis() -> redis.Redis[bytes]:
    global _client  # noqa: PLW0603 -- one connection per child process
    if _client is None:
        url = load_settings().effective_result_url
        if url is None:
            raise RuntimeError("bench.sleep needs a results Redis (QSCALE_RESULT_URL)")
        _client = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=10)
    return _client


def events_key(run: str) -> str:
    return f"bench:{run}:events"


def _process_start(pid: int | str) -> float:
    """The wall-clock time a process started: now minus its age from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _starts() -> dict[str, float]:
    if not _started:
        _started["supervisor"] = _process_start(os.getppid())
        _started["child"] = _process_start("self")
    return _started


def _log(run: str, kind: str, ctx: TaskContext) -> None:
    event: dict[str, object] = {"e": kind, "id": ctx.id, "attempt": ctx.attempt,
                                "t": time.time(), "pod": os.environ.get("QSCALE_POD_NAME", "")}
    if kind == "start":
        with contextlib.suppress(OSError, ValueError, IndexError):
            event.update(_starts())
    for _ in range(30):  # a results Redis that hiccups must not lose an event
        try:
            _redis().rpush(events_key(run), json.dumps(event))
            return
        except redis.RedisError:
            time.sleep(1.0)


@task(name="bench.sleep", bind=True, max_retries=0)
def sleep(ctx: TaskContext, seconds: float, run: str) -> None:
    """Hold a worker process for `seconds` (an I/O-bound task) between two events."""
    _log(run, "start", ctx)
    time.sleep(max(0.0, float(seconds)))
    _log(run, "finish", ctx)
