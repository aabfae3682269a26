"""Prometheus metrics of a worker pod (prefix `qscale_`), in multiprocess mode.

prometheus-client picks its value storage when it is first imported, so
`setup_metrics()` points PROMETHEUS_MULTIPROC_DIR at a fresh directory *before*
importing it; children forked later write their own files there and `/metrics`
aggregates them. Per-task metrics (counts, histograms) are different: every
outcome passes through the supervisor, so they are kept in its memory and
rendered at scrape time, which keeps the per-task cost to a few integer updates.
"""

from __future__ import annotations

import bisect
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

from worker.runtime.outcome import Outcome, Settle

_DURATION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, float("inf"))
_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
                 900.0, 3600.0, float("inf"))


_REASON_MARKERS = (("time limit", "time_limit"), ("malformed", "bad_message"),
                   ("missing field", "bad_message"), ("must be", "bad_message"),
                   ("exceeds", "too_large"), ("unknown task", "unknown_task"),
                   ("not registered", "unknown_task"), ("died", "child_died"),
                   ("crash", "child_died"), ("killed", "child_died"),
                   ("expired", "expired"), ("deadline", "expired"),
                   ("retries", "retries_exhausted"))
# Every label reason_class can return, and every cause a child is replaced for: exported
# at 0 from the start, so "none yet" reads as 0 on a dashboard or in an alert's
# increase(), not as a series that does not exist.
DEAD_LETTER_REASONS = tuple(dict.fromkeys([label for _, label in _REASON_MARKERS] + ["other"]))
CHILD_RESTART_CAUSES = ("crash", "hard_time_limit", "stuck", "max_rss", "max_tasks")


def reason_class(reason: str) -> str:
    """A low-cardinality label for a dead-letter reason (the first words, not the detail)."""
    text = reason.lower()
    for marker, label in _REASON_MARKERS:
        if marker in text:
            return label
    return "other"


class _TaskStats:
    """Per-task counters and histograms kept in the supervisor's memory.

    Every task outcome passes through the supervisor, so these need no
    multiprocess files: recording is a few integer updates under a lock, and
    the HTTP thread turns them into metric families at scrape time.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tasks: dict[tuple[str, str], int] = {}
        self.duration: dict[str, _Hist] = {}
        self.wait: dict[str, _Hist] = {}
        self.retries: dict[str, int] = {}
        self.dead: dict[str, int] = dict.fromkeys(DEAD_LETTER_REASONS, 0)

    def record(self, outcome: Outcome, task: str) -> None:
        with self.lock:
            key = (task, outcome.status)
            self.tasks[key] = self.tasks.get(key, 0) + 1
            hist = self.duration.get(task)
            if hist is None:
                hist = self.duration[task] = _Hist(_DURATION_BUCKETS)
            hist.observe(outcome.runtime_s)
            if outcome.queue_wait_s is not None:
                hist = self.wait.get(task)
                if hist is None:
                    hist = self.wait[task] = _Hist(_WAIT_BUCKETS)
                hist.observe(max(0.0, outcome.queue_wait_s))
            self.retries.setdefault(task, 0)  # a task that ran has a retry count, 0 or more
            if outcome.settle is Settle.RETRY:
                self.retries[task] += 1
            elif outcome.settle is Settle.DEAD:
                label = reason_class(outcome.reason)
                self.dead[label] = self.dead.get(label, 0) + 1

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            HistogramMetricFamily,
        )

        with self.lock:
            tasks, retries, dead = dict(self.tasks), dict(self.retries), dict(self.dead)
            duration = {t: h.snapshot() for t, h in self.duration.items()}
            wait = {t: h.snapshot() for t, h in self.wait.items()}
        family = CounterMetricFamily("qscale_tasks", "Tasks finished, by task and outcome "
                                     "status", labels=["task", "status"])
        for (task, status), count in sorted(tasks.items()):
            family.add_metric([task, status], count)
        yield family
        for name, doc, hists in (
                ("qscale_task_duration_seconds", "Task execution time", duration),
                ("qscale_task_queue_wait_seconds", "Time from enqueue to execution start",
                 wait)):
            hfamily = HistogramMetricFamily(name, doc, labels=["task"])
            for task, (buckets, total) in sorted(hists.items()):
                hfamily.add_metric([task], buckets, total)
            yield hfamily
        family = CounterMetricFamily("qscale_task_retries", "Tasks scheduled for retry",
                                     labels=["task"])
        for task, count in sorted(retries.items()):
            family.add_metric([task], count)
        yield family
        family = CounterMetricFamily("qscale_dead_lettered", "Messages moved to the DLQ",
                                     labels=["reason"])
        for label, count in sorted(dead.items()):
            family.add_metric([label], count)
        yield family


class _Hist:
    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * len(bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[min(bisect.bisect_left(self.bounds, value), len(self.bounds) - 1)] += 1
        self.total += value

    def snapshot(self) -> tuple[list[tuple[str, float]], float]:
        cumulative, running = [], 0
        for bound, count in zip(self.bounds, self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound),
                               float(running)))
        return cumulative, self.total


class WorkerMetrics:
    """The worker's metrics; create once per supervisor via `setup_metrics()`."""

    def __init__(self, multiproc_dir: str) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            multiprocess,
        )

        self.multiproc_dir = multiproc_dir
        self.owns_dir = False  # setup_metrics made the directory: remove it at exit
        self._multiprocess = multiprocess
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
        for cause in CHILD_RESTART_CAUSES:
            self.restarts.labels(cause)
        self._stats = _TaskStats()
        self._registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            self._registry, path=multiproc_dir)
        self._registry.register(self._stats)

    def record(self, outcome: Outcome, task: str) -> None:
        """Count one settled outcome under `task` (a registered name or "unregistered":
        labels stay bounded whatever names messages carry)."""
        self._stats.record(outcome, task)

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

    def cleanup(self) -> None:
        """Remove the multiprocess directory if this process created it."""
        if self.owns_dir:
            shutil.rmtree(self.multiproc_dir, ignore_errors=True)

    def exposition(self) -> tuple[bytes, str]:
        """The text format body and its content type, aggregated over all processes."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self._registry), CONTENT_TYPE_LATEST


def setup_metrics(multiproc_dir: str | None = None) -> WorkerMetrics:
    """Create the metrics, first pointing prometheus-client at a multiprocess directory.

    Without an explicit directory (or PROMETHEUS_MULTIPROC_DIR) a fresh temporary one
    is made, so files of a previous run never leak into this one's totals.
    """
    path = multiproc_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    owned = not path
    if not path:
        path = tempfile.mkdtemp(prefix="qscale-metrics-")
    os.makedirs(path, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    values = sys.modules.get("prometheus_client.values")
    if values is not None and not getattr(values.ValueClass, "_multiprocess", False):
        raise RuntimeError("prometheus_client was imported before setup_metrics(); "
                           "multiprocess metrics would be wrong")
    metrics = WorkerMetrics(path)
    metrics.owns_dir = owned
    return metrics
