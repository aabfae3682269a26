"""Counters of events that have not happened yet are exported at 0, not left out.

The Grafana dashboard and the alert rules rate() and increase() these series; a series
that does not exist shows "No data" and leaves an alert without its input (issue #11,
"monitoring that shows something": retries, dead letters, child restarts and the
controller's error counters were all missing in a healthy burst on kind).
"""

from __future__ import annotations

import subprocess
import sys

from controller.metrics import ControllerMetrics

WORKER_SNIPPET = """
from worker.runtime.metrics import setup_metrics
from worker.runtime.outcome import Outcome, Settle
metrics = setup_metrics()
metrics.record(Outcome(settle=Settle.ACK, status="success", runtime_s=0.1), "demo.add")
print(metrics.exposition()[0].decode())
metrics.cleanup()
"""


def _worker_exposition() -> str:
    return subprocess.run([sys.executable, "-c", WORKER_SNIPPET], capture_output=True,
                          text=True, check=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin"}).stdout


def test_worker_exports_no_retries_dead_letters_or_restarts_as_zero() -> None:
    text = _worker_exposition()
    assert 'qscale_task_retries_total{task="demo.add"} 0.0' in text
    for reason in ("bad_message", "unknown_task", "child_died", "time_limit", "other"):
        assert f'qscale_dead_lettered_total{{reason="{reason}"}} 0.0' in text, reason
    for cause in ("crash", "hard_time_limit", "max_rss", "max_tasks", "stuck"):
        assert f'qscale_child_restarts_total{{cause="{cause}"}} 0.0' in text, cause


def test_controller_exports_a_pools_error_counters_as_zero() -> None:
    metrics = ControllerMetrics()
    metrics.pool_seen("ns", "pool-a")
    from prometheus_client import generate_latest
    text = generate_latest(metrics.registry).decode()
    for name in ("qscale_controller_metric_read_errors_total",
                 "qscale_controller_api_errors_total", "qscale_controller_tick_errors_total",
                 "qscale_controller_cordon_errors_total"):
        assert f'{name}{{namespace="ns",pool="pool-a"}} 0.0' in text, name
