"""Start-up and wiring of a worker process: tasks, metrics, HTTP, broker link, supervisor.

Configuration problems found here (a task module that does not import, a port
that cannot be bound) raise ConfigError with a one-line reason (the CLI exits 2);
a broker that is down is not one of them: the worker starts, reports not-ready
and keeps reconnecting. A supervisor loop that broke raises LoopFailed (exit 70).
"""

from __future__ import annotations

import errno
import logging
import os
import socket

from worker.api import registry
from worker.errors import ConfigError
from worker.runtime import executor
from worker.runtime.http import WorkerHTTPServer
from worker.runtime.link import BrokerLink
from worker.runtime.metrics import WorkerMetrics, setup_metrics
from worker.runtime.state import RuntimeState
from worker.runtime.supervisor import Supervisor
from worker.settings import WorkerSettings

log = logging.getLogger(__name__)


def run_worker(settings: WorkerSettings) -> int:
    """Run until SIGTERM/SIGINT and a finished drain; returns the process exit code."""
    # Order matters: metrics first (points prometheus-client at the multiprocess
    # directory before a task module may import it), and task modules before the
    # first fork so every child has the same registry.
    metrics = setup_metrics()
    try:
        return _run(settings, metrics)
    finally:
        metrics.cleanup()


def _run(settings: WorkerSettings, metrics: WorkerMetrics) -> int:
    registry.import_task_modules(settings.imports)
    state = RuntimeState(settings.pod_name, settings.concurrency)
    try:
        http = WorkerHTTPServer(settings.http_host, settings.http_port, state, metrics,
                                max_stall=max(60.0, 3 * settings.lease_seconds),
                                control_token=settings.control_token.get_secret_value())
    except OSError as exc:
        # The host part failed (no such name, no such local address) or the port did.
        variable = "QSCALE_HTTP_HOST" if isinstance(exc, socket.gaierror) or \
            exc.errno == errno.EADDRNOTAVAIL else "QSCALE_HTTP_PORT"
        raise ConfigError(f"{variable}: cannot listen on {settings.http_host}:"
                          f"{settings.http_port}: {exc.strerror or exc}") from None
    # RabbitMQ's unacked window: with QSCALE_PREFETCH=0 the broker sizes it to what
    # claims ask for (which follows service time); a fixed one matches our capacity.
    prefetch = settings.concurrency + settings.prefetch if settings.prefetch else 0
    link = BrokerLink(settings, consumer_id=f"{settings.pod_name}-{os.getpid()}",
                      prefetch=prefetch)
    supervisor = Supervisor(settings, executor.Executor, link, state, metrics)
    supervisor.install_signals()
    http.start()
    try:
        return supervisor.run()
    finally:
        http.stop()
