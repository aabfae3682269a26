"""RQ: a worker pool of P processes running jobs in-process (no fork per job); no acks."""

from __future__ import annotations

from rq import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from bench.frameworks.base import Framework, chunks, python_bin


class RqFramework(Framework):
    name = "rq"
    brokers = ("redis",)
    note = ("rq worker-pool -n P with SimpleWorker (RQ's default forks per job, far slower); "
            "no acks; JSON serializer")

    def _queue(self, queue: str) -> Queue:
        return Queue(queue, connection=self.redis(), serializer=JSONSerializer)

    def preload(self, queue: str, workload: str, count: int) -> None:
        rq_queue = self._queue(queue)
        func = f"bench.apps.rq_jobs.{workload}"
        for block in chunks(count):
            with rq_queue.connection.pipeline() as pipe:
                rq_queue.enqueue_many(
                    [Queue.prepare_data(func, args=(seq,), result_ttl=0) for seq in block],
                    pipeline=pipe)
                pipe.execute()

    def worker_command(self, queue: str, processes: int, threads: int) -> list[str]:
        return [python_bin(), "-m", "rq.cli", "worker-pool", "-u", self.target.url,
                "-n", str(processes), "-w", "rq.worker.SimpleWorker", "-S", "json",
                "-l", "WARNING", queue]

    def unfinished_redis(self, queue: str) -> int:
        rq_queue = self._queue(queue)
        registry = StartedJobRegistry(queue, connection=rq_queue.connection,
                                      serializer=JSONSerializer)
        return int(rq_queue.count) + int(registry.count)
