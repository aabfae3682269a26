"""Tasks for the worker-runtime tests: they record what ran, crash, hang or hog memory.

Each task writes to Redis (QSCALE_TEST_REDIS_URL) under keys the test passes in,
so a test can see exactly which ids ran, how often, and in which child pid.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import redis

from worker import TaskContext, task

_REDIS_URL = os.environ.get("QSCALE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_client: redis.Redis[bytes] | None = None
_client_pid = 0
_hoard: list[bytes] = []


def store() -> redis.Redis[bytes]:
    """A Redis client per process (never shared across fork)."""
    global _client, _client_pid  # noqa: PLW0603 - one lazily created client per process
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(_REDIS_URL)
        _client_pid = os.getpid()
    return _client


def _record(key: str, ctx: TaskContext) -> None:
    pipe = store().pipeline(transaction=False)
    pipe.hincrby(key, ctx.id, 1)              # runs per task id (duplicates show as > 1)
    pipe.hincrby(f"{key}:pids", str(os.getpid()), 1)  # tasks run per child pid
    pipe.execute()


@task(name="rt.noop", ignore_result=True)
def noop() -> None:
    return None


@task(name="rt.record", bind=True, ignore_result=True)
def record(ctx: TaskContext, key: str) -> None:
    _record(key, ctx)


@task(name="rt.sleep_record", bind=True, ignore_result=True)
def sleep_record(ctx: TaskContext, key: str, seconds: float) -> None:
    store().hincrby(f"{key}:started", ctx.id, 1)
    time.sleep(seconds)
    _record(key, ctx)


@task(name="rt.hang", bind=True, hard_time_limit=1.0, max_retries=1, backoff=False)
def hang(ctx: TaskContext, key: str) -> None:
    store().hincrby(f"{key}:attempts", ctx.id, 1)
    time.sleep(3600)


@task(name="rt.exit", bind=True, max_retries=1, backoff=False)
def hard_exit(ctx: TaskContext, key: str) -> None:
    store().hincrby(f"{key}:attempts", ctx.id, 1)
    os._exit(3)


@task(name="rt.segv", bind=True, max_retries=1, backoff=False)
def segfault(ctx: TaskContext, key: str) -> None:
    store().hincrby(f"{key}:attempts", ctx.id, 1)
    os.kill(os.getpid(), signal.SIGSEGV)


@task(name="rt.crash_once", bind=True, max_retries=3, backoff=False)
def crash_once(ctx: TaskContext, key: str) -> None:
    """Dies on its first attempt, succeeds on the retry."""
    store().hincrby(f"{key}:attempts", ctx.id, 1)
    if ctx.attempt == 1:
        os._exit(4)
    _record(key, ctx)


@task(name="rt.hog", bind=True, ignore_result=True)
def hog(ctx: TaskContext, key: str, megabytes: int) -> None:
    """Keeps `megabytes` alive in this child (touching every page) to trip max RSS."""
    _hoard.append(os.urandom(1024) * (megabytes * 1024))
    _record(key, ctx)


@task(name="rt.first_wins", bind=True, max_retries=0)
def first_wins(ctx: TaskContext, key: str) -> str:
    """Succeeds the first time its id runs; any later run of that id fails (a task that
    is not idempotent, run twice by at-least-once delivery)."""
    if store().hincrby(f"{key}:attempts", ctx.id, 1) > 1:
        raise RuntimeError("ran again")
    _record(key, ctx)
    return "first"


@task(name="rt.value", bind=True)
def value(ctx: TaskContext, key: str, result: Any) -> Any:
    """Records the run and returns `result` (a chain or chord member)."""
    _record(key, ctx)
    return result


@task(name="rt.collect", bind=True)
def collect(ctx: TaskContext, results: list[Any], key: str) -> list[Any]:
    """A chord callback that records each run."""
    _record(key, ctx)
    return results


@task(name="rt.big", bind=True)
def big(ctx: TaskContext, key: str, size: int) -> str:
    """Returns a string of `size` bytes (a chain step whose result is too large to pass on)."""
    _record(key, ctx)
    return "x" * size


@task(name="rt.fail_retry", bind=True, max_retries=2, backoff=False)
def fail_retry(ctx: TaskContext, key: str) -> None:
    store().hincrby(f"{key}:attempts", ctx.id, 1)
    raise ConnectionError("always")


@task(name="rt.spawn_and_hang", bind=True, hard_time_limit=1.0, max_retries=0)
def spawn_and_hang(ctx: TaskContext, key: str) -> None:
    """Starts a helper process, records its pid, then hangs past the hard limit."""
    helper = subprocess.Popen(["sleep", "300"])
    store().rpush(f"{key}:helpers", helper.pid)
    time.sleep(3600)


@task(name="rt.slow_noop", ignore_result=True)
def slow_noop(seconds: float) -> None:
    time.sleep(seconds)


def runs(key: str) -> dict[str, int]:
    """task id -> how many times it ran to completion."""
    raw: dict[Any, Any] = store().hgetall(key)
    return {k.decode(): int(v) for k, v in raw.items()}


def tasks_per_pid(key: str) -> dict[int, int]:
    raw: dict[Any, Any] = store().hgetall(f"{key}:pids")
    return {int(k): int(v) for k, v in raw.items()}


def attempts(key: str) -> dict[str, int]:
    """task id -> attempts started (for the tasks that count them)."""
    return runs(f"{key}:attempts")
