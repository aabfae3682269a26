"""The `@task` decorator: register a function and give it `.delay()` and friends.

    @task(queue="images", max_retries=5, retry_for=(IOError,))
    def resize(path: str, width: int) -> str: ...

    resize.delay("a.png", 200).get(timeout=30)   # run on a worker, wait for the result
    resize("a.png", 200)                         # still a plain local call
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from worker.api import registry
from worker.api.client import Client, get_client
from worker.api.context import TaskContext
from worker.api.handles import AsyncResult
from worker.api.registry import TaskSpec
from worker.api.workflow import TaskSignature
from worker.envelope import Envelope

P = ParamSpec("P")
R = TypeVar("R")


class _LocalContext(TaskContext):
    """The context for a direct local call of a bound task: checkpoints stay in memory."""

    def __init__(self, name: str) -> None:
        super().__init__(Envelope.create(name, queue="local"))
        self._state: Any = None

    @property
    def last_checkpoint(self) -> Any:
        return self._state

    def checkpoint(self, state: Any) -> None:
        self._state = state


class Task(Generic[P, R]):
    """A registered task. Calling it runs the function here; `.delay()` sends it."""

    def __init__(self, fn: Callable[P, R], spec: TaskSpec) -> None:
        self.fn = fn
        self.spec = spec
        self.name = spec.name
        functools.update_wrapper(self, fn)

    def __repr__(self) -> str:
        return f"<task {self.name}>"

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        if self.spec.bind:
            return self.fn(_LocalContext(self.name), *args, **kwargs)  # type: ignore[arg-type]
        return self.fn(*args, **kwargs)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult:
        """Send with default options; returns the result handle."""
        return self.apply_async(args, kwargs)

    def apply_async(self, args: tuple[Any, ...] | list[Any] = (),
                    kwargs: dict[str, Any] | None = None, *, queue: str | None = None,
                    priority: int | None = None, countdown: float | None = None,
                    task_id: str | None = None,
                    deadline: float | dt.datetime | None = None,
                    expires: float | None = None, ignore_result: bool | None = None,
                    checkpoint_key: str | None = None,
                    client: Client | None = None) -> AsyncResult:
        """Send with options: `countdown` s delay, `deadline` (epoch s or datetime) or
        `expires` (s from now) after which the worker dead-letters it unrun, and
        `checkpoint_key` to share checkpoints across task ids (default: the task id)."""
        env = self.envelope(args, kwargs, queue=queue, priority=priority, task_id=task_id,
                            deadline=deadline, expires=expires, ignore_result=ignore_result,
                            checkpoint_key=checkpoint_key)
        return (client or get_client()).send(env, countdown=countdown or 0.0)

    def envelope(self, args: tuple[Any, ...] | list[Any] = (),
                 kwargs: dict[str, Any] | None = None, *, queue: str | None = None,
                 priority: int | None = None, task_id: str | None = None,
                 deadline: float | dt.datetime | None = None, expires: float | None = None,
                 ignore_result: bool | None = None,
                 checkpoint_key: str | None = None) -> Envelope:
        """The message `apply_async` would send (bulk senders use it directly)."""
        env = Envelope.create(self.name, args, kwargs, queue=queue or self.spec.queue,
                              task_id=task_id, priority=priority, checkpoint_key=checkpoint_key,
                              ignore_result=self.spec.ignore_result if ignore_result is None
                              else ignore_result)
        limit = _deadline(deadline, expires, env.enqueued_at)
        return env if limit is None else dataclasses.replace(env, deadline=limit)

    def s(self, *args: Any, **kwargs: Any) -> TaskSignature:
        """A signature; in a chain the previous result is prepended to `args`."""
        return TaskSignature(self.name, args, kwargs, queue=self.spec.queue)

    def si(self, *args: Any, **kwargs: Any) -> TaskSignature:
        """An immutable signature: a chain does not pass it the previous result."""
        return TaskSignature(self.name, args, kwargs, queue=self.spec.queue, immutable=True)


def _deadline(deadline: float | dt.datetime | None, expires: float | None,
              now: float) -> float | None:
    if isinstance(deadline, dt.datetime):
        return deadline.timestamp()
    if deadline is not None:
        return float(deadline)
    return None if expires is None else now + expires


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(*, name: str | None = None, queue: str = "default", max_retries: int | None = None,
         retry_for: tuple[type[BaseException], ...] = (Exception,), backoff: bool = True,
         soft_time_limit: float | None = None, hard_time_limit: float | None = None,
         ignore_result: bool = False, bind: bool = False, track_started: bool = False,
         ) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(fn: Callable[P, R] | None = None, /, *, name: str | None = None,
         queue: str = "default", max_retries: int | None = None,
         retry_for: tuple[type[BaseException], ...] = (Exception,), backoff: bool = True,
         soft_time_limit: float | None = None, hard_time_limit: float | None = None,
         ignore_result: bool = False, bind: bool = False, track_started: bool = False,
         ) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a function as a task, by `name` (default `module.qualname`).

    `max_retries` defaults to QSCALE_DEFAULT_MAX_RETRIES; only `retry_for` exceptions
    retry (never NonRetryable/permanent ones), after jittered exponential `backoff`.
    With `bind=True` the first argument is a TaskContext (`ctx.id`, `ctx.attempt`,
    `ctx.checkpoint(state)`, `ctx.last_checkpoint`, `ctx.retry()`). `track_started=True`
    records STARTED when a run begins (one more Redis write per task).
    """

    def decorate(func: Callable[P, R]) -> Task[P, R]:
        spec = TaskSpec(name=name or f"{func.__module__}.{func.__qualname__}", fn=func,
                        queue=queue, max_retries=max_retries, retry_for=tuple(retry_for),
                        backoff=backoff, soft_time_limit=soft_time_limit,
                        hard_time_limit=hard_time_limit, ignore_result=ignore_result,
                        bind=bind, track_started=track_started)
        registry.register(spec)
        return Task(func, spec)

    return decorate(fn) if fn is not None else decorate
