"""The producer's view of results: handles to wait on, and remote errors re-raised.

`AsyncResult.get()` waits for a final record in the result store (worker.results);
a failed task re-raises as a RemoteError subclass named after the remote type,
never unpickled and never imported.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Iterator
from typing import Any

from worker.results import FAILURE, PENDING, READY_STATES, SUCCESS, ResultsDisabled, ResultStore


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
        """PENDING (no record yet: not run, unknown id or expired), STARTED (with
        `track_started`), RETRY, SUCCESS or FAILURE."""
        record = self._record()
        return str(record["status"]) if record else PENDING

    state = status

    def ready(self) -> bool:
        """True once the task is final: SUCCESS or FAILURE."""
        return self.status in READY_STATES

    def successful(self) -> bool:
        return self.status == SUCCESS

    def failed(self) -> bool:
        return self.status == FAILURE

    @property
    def traceback(self) -> str | None:
        """The remote traceback of a failed (or retrying) task, else None."""
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
        """True once the task is final: SUCCESS or FAILURE."""
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
