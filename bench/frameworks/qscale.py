"""qscale: `python -m worker run` with QSCALE_CONCURRENCY=P; acks after execution."""

from __future__ import annotations

import subprocess
from pathlib import Path

from bench.frameworks.base import Framework, python_bin
from worker.brokers import open_broker

PRELOAD_TIMEOUT = 300.0
REPO_ROOT = Path(__file__).resolve().parents[2]


class QscaleFramework(Framework):
    name = "qscale"
    note = "python -m worker run, QSCALE_CONCURRENCY=P, ignore_result, acks after execution"

    def preload(self, queue: str, workload: str, count: int) -> None:
        # In a fresh process: see bench.apps.qscale_publish.
        subprocess.run([python_bin(), "-m", "bench.apps.qscale_publish", self.target.url,
                        queue, workload, str(count)], check=True, timeout=PRELOAD_TIMEOUT,
                       cwd=REPO_ROOT)

    def worker_command(self, queue: str, processes: int, threads: int) -> list[str]:
        return [python_bin(), "-m", "worker", "run"]

    def worker_env(self, queue: str, processes: int) -> dict[str, str]:
        return {
            "QSCALE_BROKER_URL": self.target.url,
            "QSCALE_QUEUES": queue,
            "QSCALE_CONCURRENCY": str(processes),
            "QSCALE_IMPORTS": "bench.apps.qscale_tasks",
            "QSCALE_HTTP_PORT": "0",
            "QSCALE_LOG_LEVEL": "WARNING",
            "QSCALE_DRAIN_SECONDS": "5",
        }

    def unfinished_redis(self, queue: str) -> int:
        with open_broker(self.target.url) as broker:
            stats = broker.stats(queue)
        return stats.ready + (stats.in_flight or 0) + stats.delayed

