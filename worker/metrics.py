"""Prometheus metrics of a worker pod (prefix `qscale_`), in multiprocess mode.

prometheus-client picks its value storage when it is first imported, so
`setup_metrics()` points PROMETHEUS_MULTIPROC_DIR at a fresh directory *before*
importing it; children forked later write their own files there and `/metrics`
aggregates them. Task metrics are recorded by the supervisor from each Outcome,
with labelled children cached so the per-task cost is a few dict lookups.
"""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

from worker.outcome import Outcome, Settle

_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                 900.0, 3600.0, float("inf"))


def reason_class(reason: str) -> str:
    """A low-cardinality label for a dead-letter reason (the first words, not the detail)."""
    text = reason.lower()
    for marker, label in (("time limit", "time_limit"), ("malformed", "bad_message"),
                          ("missing field", "bad_message"), ("must be", "bad_message"),
                          ("exceeds", "too_large"), ("unknown task", "unknown_task"),
                          ("not registered", "unknown_task"), ("died", "child_died"),
                          ("crash", "child_died"), ("killed", "child_died"),
                          ("expired", "expired"), ("deadline", "expired"),
                          ("retries", "retries_exhausted")):
        if marker in text:
            return label
    return "other"


class WorkerMetrics:
    """The worker's metric families; create once per supervisor via `setup_metrics()`."""

    def __init__(self, multiproc_dir: str) -> None:
        from prometheus_client import (  # noqa: PLC0415 - must follow the env setup
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            multiprocess,
        )

        self.multiproc_dir = multiproc_dir
        self._multiprocess = multiprocess
        self.tasks = Counter("qscale_tasks_total", "Tasks finished, by task and outcome status",
                             ["task", "status"])
        self.duration = Histogram("qscale_task_duration_seconds", "Task execution time",
                                  ["task"], buckets=_DURATION_BUCKETS)
        self.queue_wait = Histogram("qscale_task_queue_wait_seconds",
                                    "Time from enqueue to execution start", ["task"],
                                    buckets=_WAIT_BUCKETS)
        self.retries = Counter("qscale_task_retries_total", "Tasks scheduled for retry",
                               ["task"])
        self.dead = Counter("qscale_dead_lettered_total", "Messages moved to the DLQ",
                            ["reason"])
        self.restarts = Counter("qscale_child_restarts_total", "Child processes replaced",
                                ["cause"])
        self.in_flight = Gauge("qscale_in_flight", "Claimed messages not yet settled",
                               multiprocess_mode="livesum")
        self.busy = Gauge("qscale_busy_processes", "Children executing a task",
                          multiprocess_mode="livesum")
        self.processes = Gauge("qscale_processes", "Configured child processes",
                               multiprocess_mode="livesum")
        self.connected = Gauge("qscale_broker_connected", "1 when the broker is reachable",
                               multiprocess_mode="livesum")
        self.draining = Gauge("qscale_draining", "1 while shutting down",
                              multiprocess_mode="livesum")
        self._registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            self._registry, path=multiproc_dir)
        self._per_task: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def record(self, outcome: Outcome) -> None:
        """Count one settled outcome (called once per task in the supervisor)."""
        key = (outcome.task, outcome.status)
        cached = self._per_task.get(key)
        if cached is None:
            cached = (self.tasks.labels(outcome.task, outcome.status),
                      self.duration.labels(outcome.task),
                      self.queue_wait.labels(outcome.task))
            self._per_task[key] = cached
        counter, duration, wait = cached
        counter.inc()
        duration.observe(outcome.runtime_s)
        if outcome.queue_wait_s is not None:
            wait.observe(max(0.0, outcome.queue_wait_s))
        if outcome.settle is Settle.RETRY:
            self.retries.labels(outcome.task).inc()
        elif outcome.settle is Settle.DEAD:
            self.dead.labels(reason_class(outcome.reason)).inc()

    def child_replaced(self, cause: str) -> None:
        self.restarts.labels(cause).inc()

    def child_exited(self, pid: int) -> None:
        """Drop a dead child's live gauges (its counters stay in the totals)."""
        self._multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
            pid, self.multiproc_dir)

    def set_gauges(self, *, in_flight: int, busy: int, processes: int, connected: bool,
                   draining: bool) -> None:
        self.in_flight.set(in_flight)
        self.busy.set(busy)
        self.processes.set(processes)
        self.connected.set(1 if connected else 0)
        self.draining.set(1 if draining else 0)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type, aggregated over all processes."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

        return generate_latest(self._registry), CONTENT_TYPE_LATEST


def setup_metrics(multiproc_dir: str | None = None) -> WorkerMetrics:
    """Create the metrics, first pointing prometheus-client at a multiprocess directory.

    Without an explicit directory (or PROMETHEUS_MULTIPROC_DIR) a fresh temporary one
    is made, so files of a previous run never leak into this one's totals.
    """
    path = multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR") \
        or tempfile.mkdtemp(prefix="qscale-metrics-")
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("prometheus_client was imported before setup_metrics(); "
                           "multiprocess metrics would be wrong")
    return WorkerMetrics(path)
