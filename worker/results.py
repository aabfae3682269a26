"""The result store (Redis): task results, checkpoints and chord member results.

One JSON record per task id, with a TTL so forgotten results do not pile up:
{status, result | error{type, message, traceback}, finished_at, attempt, task}.
A missing record reads as PENDING.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from worker.errors import ConfigError

PENDING, STARTED, RETRY, SUCCESS, FAILURE = "PENDING", "STARTED", "RETRY", "SUCCESS", "FAILURE"
READY_STATES = frozenset({SUCCESS, FAILURE})

_PREFIX = "qscale:"

# Members are stored by index, so a redelivered member overwrites its own slot instead
# of being counted twice; the member that completes the set gets all results back.
_CHORD_MEMBER_DONE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return redis.call('HGETALL', KEYS[1])
end
return false
"""


class ResultsDisabled(ConfigError):  # noqa: N818
    """Results, checkpoints and chords need a Redis result store, and there is none."""

    def __init__(self, what: str = "results") -> None:
        super().__init__(
            f"{what} need a result store: set QSCALE_RESULT_URL=redis://... "
            "(results are disabled with an AMQP broker and no QSCALE_RESULT_URL)")


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


class ResultStore:
    """Thin, JSON-only access to the result keys of one Redis database."""

    def __init__(self, url: str, ttl: int = 86_400, *, socket_timeout: float = 10.0) -> None:
        self.url = url
        self.ttl = ttl
        self._redis = redis.Redis.from_url(url, socket_timeout=socket_timeout,
                                           socket_connect_timeout=5.0)
        self._chord_script = self._redis.register_script(_CHORD_MEMBER_DONE)

    # -- task results --

    def _put(self, task_id: str, record: dict[str, Any]) -> None:
        self._redis.set(f"{_PREFIX}result:{task_id}", dumps(record), ex=self.ttl)

    def mark_success(self, task_id: str, result: Any, *, task: str = "",
                     attempt: int = 1) -> None:
        self._put(task_id, {"status": SUCCESS, "result": result, "task": task,
                            "attempt": attempt, "finished_at": time.time()})

    def mark_error(self, task_id: str, status: str, error: dict[str, str], *,
                   task: str = "", attempt: int = 1) -> None:
        """Record FAILURE (final) or RETRY (another attempt is scheduled) with the error."""
        self._put(task_id, {"status": status, "error": error, "task": task,
                            "attempt": attempt, "finished_at": time.time()})

    def fetch(self, task_id: str) -> dict[str, Any] | None:
        raw = self._redis.get(f"{_PREFIX}result:{task_id}")
        if raw is None:
            return None
        record = json.loads(raw)
        return record if isinstance(record, dict) else None

    def forget(self, task_id: str) -> None:
        self._redis.delete(f"{_PREFIX}result:{task_id}")

    # -- checkpoints --

    def save_checkpoint(self, key: str, state: Any) -> None:
        self._redis.set(f"{_PREFIX}ckpt:{key}", dumps(state), ex=self.ttl)

    def load_checkpoint(self, key: str) -> Any:
        raw = self._redis.get(f"{_PREFIX}ckpt:{key}")
        return None if raw is None else json.loads(raw)

    def clear_checkpoint(self, key: str) -> None:
        self._redis.delete(f"{_PREFIX}ckpt:{key}")

    # -- chords --

    def chord_member_done(self, chord_id: str, index: int, size: int,
                          result: Any) -> list[Any] | None:
        """Record member `index`; returns all results in order once every member is in."""
        reply = self._chord_script(keys=[f"{_PREFIX}chord:{chord_id}"],
                                   args=[index, dumps(result), size, self.ttl])
        if not reply:
            return None
        pairs = dict(zip(reply[0::2], reply[1::2], strict=True))
        by_index = {int(k): json.loads(v) for k, v in pairs.items()}
        return [by_index[i] for i in range(size)]

    def ping(self) -> bool:
        return bool(self._redis.ping())

    def close(self) -> None:
        self._redis.close()


def error_record(type_name: str, message: str, traceback: str) -> dict[str, str]:
    return {"type": type_name, "message": message, "traceback": traceback}


def exception_type_name(exc: BaseException) -> str:
    """`ValueError` for builtins, `module.Qualname` otherwise."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
