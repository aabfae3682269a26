"""qscale worker: the task API, the broker-backed runtime, and the CLI.

    from worker import task, chain, group, chord

The package is laid out by role, each layer importing only the ones below it:

    worker.errors, worker.envelope, worker.settings, worker.results   the wire format,
                      configuration and the result store that every part shares
    worker.brokers    one Broker per broker (Redis, RabbitMQ)
    worker.api        what applications import: @task, canvas, Client, result handles
    worker.runtime    the worker process: supervisor, children, executor, broker link
    worker.cli        `python -m worker run | enqueue | dlq | status`

This module re-exports the task API, imported on first use (PEP 562): importing any
part of the package (the controller's `worker.brokers`, a producer's `worker.errors`)
runs this file first, and eager imports here made each of them pay for the result
store's redis-py and the settings' pydantic even when it needed neither.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.api.client import Client, configure, get_client
    from worker.api.context import Retry, SoftTimeLimitExceeded, TaskContext
    from worker.api.handles import AsyncResult, GroupResult, RemoteError, ResultTimeout
    from worker.api.registry import NonRetryable, import_task_modules
    from worker.api.task import Task, task
    from worker.api.workflow import TaskSignature, chain, chord, group
    from worker.results import ResultsDisabled

_EXPORTS = {
    "Client": "worker.api.client", "configure": "worker.api.client",
    "get_client": "worker.api.client",
    "Retry": "worker.api.context", "SoftTimeLimitExceeded": "worker.api.context",
    "TaskContext": "worker.api.context",
    "AsyncResult": "worker.api.handles", "GroupResult": "worker.api.handles",
    "RemoteError": "worker.api.handles", "ResultTimeout": "worker.api.handles",
    "NonRetryable": "worker.api.registry", "import_task_modules": "worker.api.registry",
    "Task": "worker.api.task", "task": "worker.api.task",
    "TaskSignature": "worker.api.workflow", "chain": "worker.api.workflow",
    "chord": "worker.api.workflow", "group": "worker.api.workflow",
    "ResultsDisabled": "worker.results",
}

__all__ = [
    "AsyncResult", "Client", "GroupResult", "NonRetryable", "RemoteError", "ResultTimeout",
    "ResultsDisabled", "Retry", "SoftTimeLimitExceeded", "Task", "TaskContext",
    "TaskSignature", "chain", "chord", "configure", "get_client", "group",
    "import_task_modules", "task",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'worker' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value   # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
