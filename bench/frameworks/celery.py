"""Celery: prefork pool of P processes, acks_late, default prefetch multiplier (4)."""

from __future__ import annotations

from celery import Celery  # type: ignore[import-untyped]

from bench.frameworks.base import Framework, chunks, python_bin


class CeleryFramework(Framework):
    name = "celery"
    note = "prefork -c P, acks_late=True, prefetch multiplier 4, no result backend"

    def preload(self, queue: str, workload: str, count: int) -> None:
        app = Celery("bench-producer", broker=self.target.url)
        app.conf.update(task_serializer="json", accept_content=["json"],
                        task_ignore_result=True, broker_connection_retry_on_startup=True)
        try:
            with app.producer_or_acquire() as producer:
                for block in chunks(count):
                    for seq in block:
                        app.send_task(f"bench.{workload}", args=[seq], queue=queue,
                                      producer=producer, ignore_result=True)
        finally:
            app.close()

    def worker_command(self, queue: str, processes: int, threads: int) -> list[str]:
        return [python_bin(), "-m", "celery", "-A", "bench.apps.celery_app", "worker",
                "-Q", queue, "-c", str(processes), "-P", "prefork", "-l", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--prefetch-multiplier", "4", "-n", f"{queue}@%h"]

    def unfinished_redis(self, queue: str) -> int:
        client = self.redis()
        # kombu keeps one list per priority step (queue, queue\x06\x163, ...) and parks
        # delivered-but-unacked messages in the `unacked` hash until the ack.
        total = int(client.hlen("unacked"))
        for key in client.scan_iter(match=f"{queue}*"):
            if client.type(key) == b"list":  # type: ignore[no-untyped-call]
                total += int(client.llen(key))
        return total
