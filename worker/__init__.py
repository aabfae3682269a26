"""qscale worker: the task API, the broker-backed runtime, and the CLI.

    from worker import task, chain, group, chord

The package is laid out by role, each layer importing only the ones below it:

    worker.errors, worker.envelope, worker.settings, worker.results   the wire format,
                      configuration and the result store that every part shares
    worker.brokers    one Broker per broker (Redis, RabbitMQ)
    worker.api        what applications import: @task, canvas, Client, result handles
    worker.runtime    the worker process: supervisor, children, executor, broker link
    worker.cli        `python -m worker run | enqueue | dlq | status`

This module re-exports the task API.
"""

from __future__ import annotations

from worker.api.client import Client, configure, get_client
from worker.api.context import Retry, SoftTimeLimitExceeded, TaskContext
from worker.api.handles import AsyncResult, GroupResult, RemoteError, ResultTimeout
from worker.api.registry import NonRetryable, import_task_modules
from worker.api.task import Task, task
from worker.api.workflow import TaskSignature, chain, chord, group
from worker.results import ResultsDisabled

__all__ = [
    "AsyncResult", "Client", "GroupResult", "NonRetryable", "RemoteError", "ResultTimeout",
    "ResultsDisabled", "Retry", "SoftTimeLimitExceeded", "Task", "TaskContext",
    "TaskSignature", "chain", "chord", "configure", "get_client", "group",
    "import_task_modules", "task",
]
