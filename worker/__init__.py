"""qscale worker: tasks, the broker-backed runtime, and the producer API.

    from worker import task, chain, group, chord

The names are imported eagerly: `worker.task` must be the decorator, not the
submodule of the same name (a lazy export would lose to the submodule).
"""

from __future__ import annotations

from worker.client import Client, configure, get_client
from worker.context import Retry, SoftTimeLimitExceeded, TaskContext
from worker.handles import AsyncResult, GroupResult, RemoteError, ResultTimeout
from worker.registry import NonRetryable, import_task_modules
from worker.results import ResultsDisabled
from worker.task import Task, task
from worker.workflow import TaskSignature, chain, chord, group

__all__ = [
    "AsyncResult", "Client", "GroupResult", "NonRetryable", "RemoteError", "ResultTimeout",
    "ResultsDisabled", "Retry", "SoftTimeLimitExceeded", "Task", "TaskContext",
    "TaskSignature", "chain", "chord", "configure", "get_client", "group",
    "import_task_modules", "task",
]
