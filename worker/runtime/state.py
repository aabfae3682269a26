"""The pod state a worker publishes for the controller at `GET /state`.

The supervisor's loop thread updates a `RuntimeState` (plain attribute writes,
no locks on the per-task path); the HTTP thread reads `snapshot()`. The one
thing the HTTP thread writes is the cordon deadline (`cordon()`/`uncordon()`, a
single attribute assignment), which the loop reads each turn.

JSON schema of `/state` (all times are Unix seconds, durations seconds):

    {
      "pod": str,                      # QSCALE_POD_NAME
      "pid": int,                      # supervisor pid
      "started_at": float,
      "concurrency": int,              # configured child processes
      "children": [int, ...],          # live child pids
      "busy": int,                     # children executing a task now
      "in_flight": int,                # held, not yet settled (running + prefetched)
      "prefetched": int,               # held (claimed or pushed by RabbitMQ), not started
      "completed": int,                # tasks settled since start
      "last_task_finished_at": float | null,
      "service_time_seconds": float | null,         # EWMA over all tasks
      "service_time_by_task": {task: float},        # EWMA per task name
      "draining": bool,                # SIGTERM received: finishing, not claiming
      "broker_connected": bool,
      "ready": bool,                   # broker connected and not draining
      "cordoned": bool,                # the loop applied a cordon: claims nothing new,
                                       # unstarted messages went back; still ready
      "cordon_expires_in": float | null,  # a cordon is requested (POST /cordon) and
                                          # lapses by itself in this many seconds
      "child_restarts": {cause: int}   # crash, hard_time_limit, max_tasks, max_rss, ...
    }
"""

from __future__ import annotations

import os
import time
from typing import Any

EWMA_ALPHA = 0.1


class RuntimeState:
    """Counters and service-time EWMAs of one worker pod."""

    def __init__(self, pod: str, concurrency: int, started_at: float | None = None) -> None:
        self.pod = pod
        self.concurrency = concurrency
        self.started_at = time.time() if started_at is None else started_at
        self.children: tuple[int, ...] = ()
        self.busy = 0
        self.in_flight = 0
        self.prefetched = 0
        self.completed = 0
        self.last_task_finished_at: float | None = None
        self.service_time: float | None = None
        self.service_time_by_task: dict[str, float] = {}
        self.draining = False
        self.broker_connected = False
        self.child_restarts: dict[str, int] = {}
        self.loop_tick = time.monotonic()
        self.cordon_until: float | None = None  # monotonic; written by the HTTP thread
        self.cordoned = False                   # the loop's view, written by the loop

    def cordon(self, ttl_seconds: float) -> None:
        """Stop claiming for `ttl_seconds` (a controller refreshes it; a dead one cannot
        leave the pod cordoned for good)."""
        self.cordon_until = time.monotonic() + ttl_seconds

    def uncordon(self) -> None:
        self.cordon_until = None

    def cordon_left(self, now: float | None = None) -> float | None:
        """Seconds the cordon still holds, or None when the pod is not cordoned."""
        until = self.cordon_until  # one read: the HTTP thread may change it meanwhile
        left = None if until is None else until - (time.monotonic() if now is None else now)
        return left if left is not None and left > 0 else None

    @property
    def ready(self) -> bool:
        return self.broker_connected and not self.draining

    def task_finished(self, task: str, runtime_s: float, now: float) -> None:
        """Fold one finished task into the counters and EWMAs."""
        self.completed += 1
        self.last_task_finished_at = now
        overall = self.service_time
        self.service_time = runtime_s if overall is None else \
            overall + EWMA_ALPHA * (runtime_s - overall)
        per_task = self.service_time_by_task.get(task)
        self.service_time_by_task[task] = runtime_s if per_task is None else \
            per_task + EWMA_ALPHA * (runtime_s - per_task)

    def child_replaced(self, cause: str) -> None:
        self.child_restarts[cause] = self.child_restarts.get(cause, 0) + 1

    def alive(self, max_stall: float) -> bool:
        """Liveness: the supervisor loop ran within `max_stall` seconds."""
        return time.monotonic() - self.loop_tick < max_stall

    def snapshot(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "pid": os.getpid(),
            "started_at": self.started_at,
            "concurrency": self.concurrency,
            "children": list(self.children),
            "busy": self.busy,
            "in_flight": self.in_flight,
            "prefetched": self.prefetched,
            "completed": self.completed,
            "last_task_finished_at": self.last_task_finished_at,
            "service_time_seconds": self.service_time,
            "service_time_by_task": dict(self.service_time_by_task),
            "draining": self.draining,
            "broker_connected": self.broker_connected,
            "ready": self.ready,
            "cordoned": self.cordoned,
            "cordon_expires_in": None if (left := self.cordon_left()) is None
            else round(left, 3),
            "child_restarts": dict(self.child_restarts),
        }
