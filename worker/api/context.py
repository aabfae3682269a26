"""What a running task sees: its context (`bind=True`) and the exceptions it may raise.

The context gives a task its identity, attempt number, explicit retry, and
checkpoints, so a long task killed half-way can resume from its last saved state
when it is redelivered or retried.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

from worker.envelope import Envelope
from worker.results import ResultsDisabled, ResultStore

_UNSET: Any = object()


class SoftTimeLimitExceeded(Exception):
    """Raised inside a task when its soft time limit expires; the task may clean up."""


class Retry(Exception):
    """Raised by `ctx.retry()`: ask for another attempt, after `countdown` s if given."""

    def __init__(self, countdown: float | None = None, exc: BaseException | None = None) -> None:
        super().__init__(f"retry requested{f': {exc}' if exc else ''}")
        self.countdown = countdown
        self.exc = exc


class TaskContext:
    """Passed as the first argument to tasks declared with `bind=True`."""

    def __init__(self, envelope: Envelope,
                 store: Callable[[], ResultStore | None] = lambda: None) -> None:
        self.envelope = envelope
        self._store = store
        self._last_checkpoint: Any = _UNSET
        self.checkpoint_used = False

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def attempt(self) -> int:
        return self.envelope.attempt

    @property
    def task(self) -> str:
        return self.envelope.task

    @property
    def queue(self) -> str:
        return self.envelope.queue

    @property
    def checkpoint_key(self) -> str:
        return self.envelope.checkpoint_key or self.envelope.id

    def _require_store(self) -> ResultStore:
        store = self._store()
        if store is None:
            raise ResultsDisabled("checkpoints")
        return store

    @property
    def last_checkpoint(self) -> Any:
        """The state saved by the latest `checkpoint()` of this task id, or None."""
        if self._last_checkpoint is _UNSET:
            self._last_checkpoint = self._require_store().load_checkpoint(self.checkpoint_key)
            if self._last_checkpoint is not None:
                self.checkpoint_used = True
        return self._last_checkpoint

    def checkpoint(self, state: Any) -> None:
        """Save JSON `state`; a later attempt of this task reads it as `last_checkpoint`."""
        self._require_store().save_checkpoint(self.checkpoint_key, state)
        self._last_checkpoint = state
        self.checkpoint_used = True

    def retry(self, countdown: float | None = None, exc: BaseException | None = None) -> NoReturn:
        """Stop this attempt and schedule another (counts against max_retries)."""
        raise Retry(countdown=countdown, exc=exc)
