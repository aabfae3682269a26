"""The task registry: name → function plus the options the executor and supervisor need.

Workers find tasks by the name in the envelope, so a task must be registered (its
module imported, see QSCALE_IMPORTS) in the worker before the first message arrives.
"""

from __future__ import annotations

import importlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from worker.errors import ConfigError, PermanentError

log = logging.getLogger(__name__)


class NonRetryable(PermanentError):
    """Raise (or subclass) in a task to fail at once: no retry, straight to the DLQ."""


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: the function and its execution options.

    `max_retries` None and the time limits None mean "use the worker settings".
    """

    name: str
    fn: Callable[..., Any]
    queue: str = "default"
    max_retries: int | None = None
    retry_for: tuple[type[BaseException], ...] = (Exception,)
    backoff: bool = True
    soft_time_limit: float | None = None
    hard_time_limit: float | None = None
    ignore_result: bool = False
    bind: bool = False
    track_started: bool = False

    def is_retryable(self, exc: BaseException) -> bool:
        """Only `retry_for` exceptions retry, never permanent ones."""
        return isinstance(exc, self.retry_for) and not isinstance(exc, PermanentError)

    def retries_allowed(self, default: int) -> int:
        return default if self.max_retries is None else self.max_retries


def backoff_delay(attempt: int, base: float, cap: float,
                  rng: Callable[[], float] = random.random) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**(attempt-1))].

    Full jitter spreads a burst of failing tasks over the whole window instead of
    retrying them in lockstep against the dependency that just failed.
    """
    exponent = min(max(0, attempt - 1), 64)  # beyond that the cap wins anyway; no overflow
    ceiling = min(cap, base * 2.0 ** exponent)
    return ceiling * rng()


_TASKS: dict[str, TaskSpec] = {}


def register(spec: TaskSpec) -> TaskSpec:
    """Add a task; re-registering the same function (module reload) replaces it."""
    existing = _TASKS.get(spec.name)
    if existing is not None and _origin(existing.fn) != _origin(spec.fn):
        raise ConfigError(f"task name {spec.name!r} is already registered by "
                          f"{_origin(existing.fn)}")
    _TASKS[spec.name] = spec
    return spec


def _origin(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def lookup(name: str) -> TaskSpec | None:
    return _TASKS.get(name)


def registered_names() -> list[str]:
    return sorted(_TASKS)


def unregister(name: str) -> None:
    """Forget a task (tests)."""
    _TASKS.pop(name, None)


def hard_time_limit(name: str, default: float) -> float | None:
    """The per-task hard limit, else `default`; None when neither is set (0 = none)."""
    spec = _TASKS.get(name)
    limit = spec.hard_time_limit if spec and spec.hard_time_limit is not None else default
    return limit if limit and limit > 0 else None


def soft_time_limit(name: str, default: float) -> float | None:
    spec = _TASKS.get(name)
    limit = spec.soft_time_limit if spec and spec.soft_time_limit is not None else default
    return limit if limit and limit > 0 else None


def import_task_modules(names: Iterable[str]) -> None:
    """Import the QSCALE_IMPORTS modules so their @task functions register."""
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            first_line = (str(exc).splitlines() or [""])[0]
            raise ConfigError(f"QSCALE_IMPORTS: cannot import {name!r}: "
                              f"{type(exc).__name__}: {first_line}") from None
        log.debug("imported task module %s", name)
