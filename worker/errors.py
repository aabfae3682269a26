"""A small error taxonomy shared by the worker and the controller.

Temporary errors are worth retrying (network blips, a broker restarting);
permanent ones are not (bad configuration, a malformed message).
"""

from __future__ import annotations

from typing import Any


class QscaleError(Exception):
    """Base of every error qscale raises on purpose."""


class TemporaryError(QscaleError):
    """Retrying later may succeed (connection refused, broker failover)."""


class PermanentError(QscaleError):
    """Retrying will not help; the caller must change something."""


class ConfigError(PermanentError):
    """Invalid configuration; `str(err)` is a one-line reason naming the setting."""


class BadMessage(PermanentError):
    """A message that cannot be executed: it goes to the dead-letter queue with `reason`.

    Decode fills in what it could salvage from the body, so the dead letter still
    records FAILURE for whoever waits: the task id and name, `dependents` ((result
    id, task) of the chain steps after it) and `chord` (a worker.envelope.ChordRef
    whose callback cannot run now).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.task_id: str | None = None
        self.task: str | None = None
        self.dependents: tuple[tuple[str, str], ...] = ()
        self.chord: Any = None


class MessageRefused(PermanentError):
    """The broker refused one message (a queue it cannot hold, a permission, a key of
    another type): permanent for that message, not a lost connection."""


class BrokerUnavailable(TemporaryError):
    """The broker could not be reached; the operation may be retried."""
