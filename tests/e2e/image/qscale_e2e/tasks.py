"""`e2e.record`: sleep like a real I/O-bound task, and log each start and finish.
`e2e.identity`: what a task sees of its pod (an env var, the ServiceAccount of its token).

Every execution appends two JSON events (start, finish) to the list
`e2e:<run>:events` in the results Redis. Counting them per task id tells a test
whether a task ran at all, ran twice, or was interrupted (a start with no finish),
which a result record alone cannot show. Writes retry through broker outages, so
the log itself never drops an event while Redis restarts.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import redis

from worker.api.context import TaskContext
from worker.api.task import task
from worker.settings import load_settings

EVENT_WRITE_PATIENCE_SECONDS = 180.0

_client: redis.Redis[bytes] | None = None


def results_redis() -> redis.Redis[bytes]:
    """The results Redis of this process (reconnects by itself after an outage)."""
    global _client  # noqa: PLW0603 -- one connection per child process
    if _client is None:
        url = load_settings().effective_result_url
        if url is None:
            raise RuntimeError("e2e.record needs a results Redis (QSCALE_RESULT_URL)")
        _client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
    return _client


def events_key(run: str) -> str:
    return f"e2e:{run}:events"


def expected_key(run: str) -> str:
    return f"e2e:{run}:expected"


def log_event(run: str, event: dict[str, Any]) -> None:
    """RPUSH one event, retrying while Redis is away (a broker restart in the test)."""
    body = json.dumps(event)
    deadline = time.monotonic() + EVENT_WRITE_PATIENCE_SECONDS
    while True:
        try:
            results_redis().rpush(events_key(run), body)
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


@task(name="e2e.record", bind=True)
def record(ctx: TaskContext, run: str, seconds: float) -> str:
    """Log a start, sleep `seconds`, log a finish; returns the task id."""
    pod = os.environ.get("QSCALE_POD_NAME") or socket.gethostname()
    base = {"id": ctx.id, "pod": pod, "attempt": ctx.attempt}
    log_event(run, {**base, "ev": "start", "t": time.time()})
    time.sleep(float(seconds))
    log_event(run, {**base, "ev": "finish", "t": time.time()})
    return ctx.id


TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@task(name="e2e.identity")
def identity(env_name: str) -> dict[str, Any]:
    """The value of `env_name` and the subject of the mounted ServiceAccount token
    (system:serviceaccount:<namespace>:<name>, None without a token), as a task sees them."""
    subject = None
    if TOKEN.exists():
        payload = TOKEN.read_text().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        subject = claims.get("sub")
    return {"env": os.environ.get(env_name), "serviceaccount": subject,
            "pod": os.environ.get("QSCALE_POD_NAME")}
