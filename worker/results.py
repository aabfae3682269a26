"""The result store (Redis): task results, checkpoints and chord member results.

One JSON record per task id, with a TTL so forgotten results do not pile up:
{status, result | error{type, message, traceback}, finished_at, attempt, task}.
A missing record reads as PENDING.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Iterator
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


class ResultsDisabled(ConfigError):
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

    def mark_started(self, task_id: str, *, task: str = "", attempt: int = 1) -> None:
        self._put(task_id, {"status": STARTED, "task": task, "attempt": attempt,
                            "started_at": time.time()})

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


# -- the producer's view: handles on results, and remote errors re-raised --


class ResultTimeout(TimeoutError):
    """`.get(timeout=...)` ran out of time before the task finished."""


class RemoteError(Exception):
    """A task failed in a worker. Subclassed per remote type name, never unpickled.

    When the remote type is a builtin exception (ValueError, KeyError, ...) the
    subclass also derives from it, so `except ValueError` works on the producer.
    """

    remote_type = "Exception"

    def __init__(self, message: str, remote_traceback: str = "") -> None:
        super().__init__(message)
        self.remote_message = message
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = f"{self.remote_type}: {self.remote_message}"
        if self.remote_traceback:
            text += f"\n\nRemote traceback:\n{self.remote_traceback.rstrip()}"
        return text


_remote_classes: dict[str, type[RemoteError]] = {}


def remote_error_class(type_name: str) -> type[RemoteError]:
    """A RemoteError subclass named after the remote type (mixing in safe builtins only)."""
    cls = _remote_classes.get(type_name)
    if cls is not None:
        return cls
    short = type_name.rsplit(".", 1)[-1]
    if not short.isidentifier():
        short = "RemoteError"
    builtin = getattr(builtins, type_name, None) if type_name.isidentifier() else None
    attrs = {"remote_type": type_name, "__module__": "worker.remote", "__qualname__": short}
    bases: tuple[type, ...] = (RemoteError,)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        bases = (RemoteError, builtin)
    try:
        cls = type(short, bases, attrs)
    except TypeError:  # incompatible builtin layout
        cls = type(short, (RemoteError,), attrs)
    _remote_classes[type_name] = cls
    return cls


def remote_error(error: dict[str, Any]) -> RemoteError:
    type_name = str(error.get("type") or "Exception")
    message, trace = str(error.get("message", "")), str(error.get("traceback", ""))
    try:
        return remote_error_class(type_name)(message, trace)
    except Exception:  # a builtin whose constructor wants other arguments
        fallback: type[RemoteError] = type(
            type_name.rsplit(".", 1)[-1] or "RemoteError", (RemoteError,),
            {"remote_type": type_name, "__module__": "worker.remote"})
        return fallback(message, trace)


class AsyncResult:
    """A handle on one task's result: status, readiness and a blocking `get`."""

    def __init__(self, task_id: str, store: ResultStore | None) -> None:
        self.id = task_id
        self._store = store

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def _record(self) -> dict[str, Any] | None:
        if self._store is None:
            raise ResultsDisabled("results")
        return self._store.fetch(self.id)

    @property
    def status(self) -> str:
        record = self._record()
        return str(record["status"]) if record else PENDING

    state = status

    def ready(self) -> bool:
        return self.status in READY_STATES

    def successful(self) -> bool:
        return self.status == SUCCESS

    def failed(self) -> bool:
        return self.status == FAILURE

    @property
    def traceback(self) -> str | None:
        record = self._record()
        error = record.get("error") if record else None
        return str(error.get("traceback", "")) if isinstance(error, dict) else None

    def get(self, timeout: float | None = None, *, interval: float = 0.1,
            propagate: bool = True) -> Any:
        """Wait for the result; a failed task re-raises as its RemoteError subclass."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            record = self._record()
            if record is not None and record.get("status") in READY_STATES:
                if record["status"] == SUCCESS:
                    return record.get("result")
                error = remote_error(record.get("error") or {})
                if propagate:
                    raise error
                return error
            if deadline is not None and time.monotonic() >= deadline:
                status = record.get("status") if record else PENDING
                raise ResultTimeout(f"task {self.id} not finished after {timeout}s "
                                    f"(status {status})")
            left = interval if deadline is None else max(0.0, deadline - time.monotonic())
            time.sleep(min(pause, interval, left))
            pause *= 2

    def forget(self) -> None:
        if self._store is not None:
            self._store.forget(self.id)


class GroupResult:
    """Results of a group, in the order the members were given."""

    def __init__(self, group_id: str, results: list[AsyncResult]) -> None:
        self.id = group_id
        self.results = results

    def __len__(self) -> int:
        return len(self.results)

    def __iter__(self) -> Iterator[AsyncResult]:
        return iter(self.results)

    def completed_count(self) -> int:
        return sum(1 for r in self.results if r.successful())

    def ready(self) -> bool:
        return all(r.ready() for r in self.results)

    def successful(self) -> bool:
        return all(r.successful() for r in self.results)

    def get(self, timeout: float | None = None, *, interval: float = 0.1) -> list[Any]:
        """All results in order; the first failure (in order) is re-raised."""
        deadline = None if timeout is None else time.monotonic() + timeout
        values = []
        for result in self.results:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            values.append(result.get(timeout=left, interval=interval))
        return values
